"""k-fold cross-validation folds: by video (never by frame), stratified by label, seeded."""
from __future__ import annotations

import tensorflow as tf
import tensorflow_datasets as tfds

from input_pipeline.builders import splits as splits_lib

_ENCODED = ('frames', 'masks')
_CACHE: dict[tuple, dict[str, int]] = {}


def fold_assignment(builder, split: str, num_folds: int, seed: int) -> dict[str, int]:
  """{video_id: fold} for k-fold cross-validation: folds by video (never by frame),
  stratified by label when the dataset has labels, fixed by ``seed``.

  Computed once per (dataset, split, folds, seed) and process: every training stream,
  count and evaluation of a fold needs it, and it reads the whole split.
  """
  key = (str(builder.data_path), split, num_folds, seed)
  if key not in _CACHE:
    _CACHE[key] = _assign_folds(builder, split, num_folds, seed)
  return _CACHE[key]


def _assign_folds(builder, split: str, num_folds: int, seed: int) -> dict[str, int]:
  decoders = {k: tfds.decode.SkipDecoding() for k in _ENCODED if k in builder.info.features}
  has_label = 'label' in builder.info.features
  ids, labels = [], []
  for video in builder.as_dataset(split=split, decoders=decoders).as_numpy_iterator():
    ids.append(video['video_id'].decode())
    labels.append(int(video['label']) if has_label else 0)
  if len(ids) < num_folds:
    raise ValueError(f'{len(ids)} videos in {split!r} cannot make {num_folds} folds.')
  folds = splits_lib.split_videos(ids, [(str(k), 1.0) for k in range(num_folds)], seed,
                                  labels=labels)
  return {video: int(fold) for video, fold in folds.items()}


def fold_table(builder, split: str, num_folds: int, seed: int) -> tf.lookup.StaticHashTable:
  """A table video_id -> fold (-1 for an id outside ``split``)."""
  folds = fold_assignment(builder, split, num_folds, seed)
  return tf.lookup.StaticHashTable(
      tf.lookup.KeyValueTensorInitializer(list(folds), list(folds.values()),
                                          key_dtype=tf.string, value_dtype=tf.int64), -1)
