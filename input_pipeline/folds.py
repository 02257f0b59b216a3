"""k-fold cross-validation folds: by patient (or video; never by frame), stratified by
label, seeded."""
from __future__ import annotations

import tensorflow as tf
import tensorflow_datasets as tfds

from input_pipeline import tf_setup  # pylint: disable=unused-import  (configures TensorFlow)
from input_pipeline.builders import splits as splits_lib
from usvjax.errors import ConfigError

_ENCODED = ('frames', 'masks')
_CACHE: dict[tuple, dict[str, int]] = {}


def fold_assignment(builder: tfds.core.DatasetBuilder, split: str, num_folds: int,
                    seed: int) -> dict[str, int]:
  """{video_id: fold} for k-fold cross-validation: folds by patient when the dataset has a
  ``group`` feature (a patient's videos are never in two folds), else by video; never by
  frame; stratified by label when the dataset has labels; fixed by ``seed``
  (``builders.splits.split_videos``).

  Computed once per (dataset, split, folds, seed) and process: every training stream,
  count and evaluation of a fold needs it, and it reads the whole split.
  """
  key = (str(builder.data_path), split, num_folds, seed)
  if key not in _CACHE:
    _CACHE[key] = _assign_folds(builder, split, num_folds, seed)
  return _CACHE[key]


def _assign_folds(builder: tfds.core.DatasetBuilder, split: str, num_folds: int,
                  seed: int) -> dict[str, int]:
  decoders = {k: tfds.decode.SkipDecoding() for k in _ENCODED if k in builder.info.features}
  has_label = 'label' in builder.info.features
  has_group = 'group' in builder.info.features
  ids, labels, groups = [], [], []
  for video in builder.as_dataset(split=split, decoders=decoders).as_numpy_iterator():
    ids.append(video['video_id'].decode())
    labels.append(int(video['label']) if has_label else 0)
    groups.append(video['group'].decode() if has_group else ids[-1])
  if len(set(groups)) < num_folds:
    raise ConfigError(f'{len(set(groups))} patients (groups of videos) in {split!r} cannot '
                      f'make {num_folds} folds: use fewer --folds.')
  folds = splits_lib.split_videos(ids, [(str(k), 1.0) for k in range(num_folds)], seed,
                                  labels=labels, groups=groups)
  return {video: int(fold) for video, fold in folds.items()}


def fold_table(builder: tfds.core.DatasetBuilder, split: str, num_folds: int,
               seed: int) -> tf.lookup.StaticHashTable:
  """A table video_id -> fold (-1 for an id outside ``split``)."""
  folds = fold_assignment(builder, split, num_folds, seed)
  return tf.lookup.StaticHashTable(
      tf.lookup.KeyValueTensorInitializer(list(folds), list(folds.values()),
                                          key_dtype=tf.string, value_dtype=tf.int64), -1)
