"""tf.data streams: per-process data, resumable training batches, exact evaluation.

What an example is depends on the task, whose example source the caller passes (the run's,
``usvjax.core.run``; the task registry names it): segmentation clips or whole videos
(``clips``), classification sequences (``sequences``), contrastive view pairs
(``view_pairs``). Every batch has exactly the keys, shapes and dtypes of
``source.fields(config, train, features)`` (``input_pipeline.spec``); the one
preprocessing is ``preprocess.Preprocessor``.

Training streams are infinite, shuffled with the run seed, and augmented with stateless
randomness keyed by the example's position in the stream. Every process walks the same
stream of still-encoded items and decodes only its own slots of each global batch, so the
global batches do not depend on the number of processes; resuming at step s skips
s * global_batch encoded (not yet decoded) items, so a resumed run sees exactly the data of
an uninterrupted one. Evaluation streams are exact: every clip or video once, the last
batch padded with examples whose ``valid`` is all False, and every process yields the same
number of batches. With several processes, time axes of variable length are padded to the
longest over the processes (``valid`` False), so the local batches form one global array.
"""
from __future__ import annotations

import glob
import hashlib
import math
import os
import re
import shutil
from collections.abc import Iterator
from typing import NamedTuple

import jax
import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from absl import logging
from jax.experimental import multihost_utils

from input_pipeline import tf_setup  # (configures TensorFlow on import)
from input_pipeline import builders  # pylint: disable=unused-import  (registers builders)
from input_pipeline import fingerprint
from input_pipeline import folds as folds_lib
from input_pipeline import preprocess
from input_pipeline import spec as spec_lib
from input_pipeline.builders import common
from usvjax.errors import ConfigError

Batch = dict[str, np.ndarray]
_ENCODED = ('frames', 'masks')


def get_builder(dataset: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
  """The prepared TFDS builder named by ``config.dataset``; prepares it on first use.

  ``dataset.name`` is a registered builder (``usv_synthetic``, ``usv_frames_table``, ...),
  ``dataset.config`` its config name, ``dataset.manual_dir`` the folder of a local layout.
  A folder is converted again when its files changed since its conversion
  (``input_pipeline.fingerprint``), into a data directory of its own (``source_data_dir``).
  Folders a killed conversion left (TFDS's ``incomplete.*``) are removed first.
  """
  builder = _builder(dataset)
  source = hashes = known = None
  if dataset.manual_dir:
    common.require_dir(dataset.manual_dir, 'config.dataset.manual_dir',
                       'Point config.dataset.manual_dir at the dataset folder.')
    known = fingerprint.stored_hashes(builder.data_dir)
    hashes = fingerprint.file_hashes(dataset.manual_dir, known)
    source = fingerprint.folder_fingerprint(dataset.manual_dir, hashes)
    if _stale(builder, source):
      builder = _builder(dataset)
  download_config = tfds.download.DownloadConfig(manual_dir=dataset.manual_dir or None)
  _remove_incomplete(builder)
  builder.download_and_prepare(download_config=download_config)
  if source and jax.process_index() == 0:
    if not fingerprint.stored(builder.data_dir):
      fingerprint.store(builder.data_dir, source)
    if hashes != known:  # A converted-again folder has changed files, so new hashes.
      fingerprint.store_hashes(builder.data_dir, hashes)
  return builder


def source_data_dir(dataset: ml_collections.ConfigDict) -> str | None:
  """The TFDS data directory of ``dataset``'s conversion: ``dataset.data_dir`` (None: TFDS's
  default) for generated data; for a local folder (``manual_dir``) a directory of its own
  in it, ``<folder name>-<first 10 hex digits of the sha256 of its resolved path>``, so two
  folders of one layout never share (or overwrite) a converted copy."""
  if not dataset.manual_dir:
    return dataset.data_dir or None
  folder = os.path.realpath(dataset.manual_dir)
  name = re.sub(r'[^A-Za-z0-9._-]', '_', common.text_id(os.path.basename(folder))) or 'root'
  key = hashlib.sha256(os.fsencode(folder)).hexdigest()[:10]
  return os.path.join(dataset.data_dir or tfds.core.constants.DATA_DIR, f'{name}-{key}')


def _remove_incomplete(builder: tfds.core.DatasetBuilder) -> None:
  """Removes the ``incomplete.*`` folders a killed conversion of ``builder``'s dataset left
  (process 0), with a log line."""
  if jax.process_index() != 0:
    return
  parent = os.path.dirname(builder.data_dir)
  for path in sorted(glob.glob(os.path.join(glob.escape(parent), 'incomplete.*'))):
    shutil.rmtree(path, ignore_errors=True)
    logging.warning('removed %s, the unfinished conversion of an interrupted run', path)


def _builder(dataset: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
  kwargs = {'data_dir': source_data_dir(dataset)}
  if dataset.config:
    kwargs['config'] = dataset.config
  try:
    return tfds.builder(dataset.name, **kwargs)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise ConfigError(f'config.dataset.name={dataset.name!r} is not a known dataset: '
                      f'use one of usv_synthetic, usv_davis, usv_flanet, usv_frames_table, '
                      f'usv_video_table.') from e


def _stale(builder: tfds.core.DatasetBuilder, source: dict) -> bool:
  """Deletes ``builder``'s conversion if it was made from other files than ``source``
  describes (then True: build the builder again)."""
  old = fingerprint.stored(builder.data_dir) if builder.is_prepared() else None
  if old is None or old.get('content_sha256') == source['content_sha256']:
    return False
  if 'content_sha256' in old:
    what = (f'the folder {source["folder"]} changed since its conversion in '
            f'{builder.data_dir} ({old["files"]} files, {old["bytes"]} bytes then; '
            f'{source["files"]} files, {source["bytes"]} bytes now)')
  else:
    what = (f'the conversion in {builder.data_dir} was made before usvjax fingerprinted '
            'file contents, so it cannot tell whether the folder changed')
  if jax.process_count() > 1:
    raise ConfigError(f'{what}: delete {builder.data_dir} and start again (or convert it '
                      'once with a single process).')
  logging.warning('%s: converting it again.', what)
  shutil.rmtree(builder.data_dir)
  return True


def _encoded_videos(builder, split: str, shard: bool) -> tf.data.Dataset:
  """The split's videos (this process's share if ``shard``), frames still PNG-encoded."""
  decoders = {k: tfds.decode.SkipDecoding() for k in _ENCODED if k in builder.info.features}
  unknown = [part for part in split.split('+')
             if part.split('[')[0].strip() not in builder.info.splits]
  if unknown:
    raise ConfigError(f'split {unknown[0]!r} not in dataset {builder.info.full_name}: it has '
                      f'{sorted(builder.info.splits)} (combine them with +).')
  if shard:
    split = tfds.even_splits(split, n=jax.process_count(), drop_remainder=False)[
        jax.process_index()]
  return builder.as_dataset(split=split, decoders=decoders, shuffle_files=False)


def _items(builder, config, source: spec_lib.ExampleSource, split: str, train: bool
           ) -> tf.data.Dataset:
  """Encoded examples of the task's example ``source``.

  Training streams hold every video of the split (each process then keeps its slots of
  every global batch); evaluation streams hold this process's share of the videos. With
  ``config.dataset.folds.num`` = k > 0 (k-fold cross-validation) both come from
  ``train_split``: training uses the videos outside fold ``folds.index``, evaluation the
  videos inside it, whatever split is asked for.
  """
  features = builder.info.features
  missing = [k for k in source.required_features(features) if k not in features]
  if missing:
    raise ConfigError(f'dataset {builder.info.full_name} has no {missing}: config.input.task='
                      f'{config.input.task!r} needs {list(source.required_features(features))}.')
  folds = config.dataset.folds
  if folds.num:
    split = config.dataset.train_split
  videos = _encoded_videos(builder, split, shard=not train)
  if folds.num:
    table = folds_lib.fold_table(builder, split, folds.num, folds.seed)
    in_fold = lambda v: tf.equal(table.lookup(v['video_id']), folds.index)  # pylint: disable=unnecessary-lambda-assignment
    videos = videos.filter(tf_setup.as_written(
        lambda v: tf.logical_not(in_fold(v)) if train else in_fold(v)))
  if train:
    videos = videos.repeat().shuffle(config.input.video_shuffle_buffer, seed=config.seed)
  return source.items(videos, config, train)


def _decoded(items: tf.data.Dataset, config, builder, source: spec_lib.ExampleSource,
             train: bool, batch_size: int, drop_remainder: bool
             ) -> tuple[tf.data.Dataset, spec_lib.Spec]:
  """Preprocessed, batched examples from enumerated encoded items, and their fields."""
  fields = source.fields(config, train, builder.info.features)
  preprocessor = preprocess.Preprocessor(config, builder, train, source, fields)
  ds = items.map(tf_setup.as_written(preprocessor), num_parallel_calls=tf.data.AUTOTUNE,
                 deterministic=True)
  ds = source.batch(ds, config, fields, batch_size, drop_remainder, train)
  return ds.prefetch(2), fields


def local_batch_size(global_batch_size: int) -> int:
  if global_batch_size % jax.process_count():
    raise ConfigError(f'batch size {global_batch_size} is not divisible by the number of '
                      f'processes {jax.process_count()}.')
  return global_batch_size // jax.process_count()


def align_across_processes(batch: Batch, fields: spec_lib.Spec) -> Batch:
  """Pads the time fields to the longest time axis over all processes (``valid`` False);
  a collective: every process calls it for every batch. A no-op on one process."""
  if jax.process_count() == 1 or not spec_lib.time_keys(fields):
    return batch
  length = batch['valid'].shape[1]
  longest = int(np.max(multihost_utils.process_allgather(np.int64(length))))
  return spec_lib.pad_time(batch, fields, longest)


def train_batches(config: ml_collections.ConfigDict, builder,
                  source: spec_lib.ExampleSource, start_step: int = 0) -> Iterator[Batch]:
  """Infinite iterator of this process's training batches, starting at ``start_step``.

  Every process walks the same shuffled stream of encoded items; item i belongs to global
  batch i // B at slot i % B, and process p decodes only the slots
  [p * B_local, (p + 1) * B_local). The global batches, and so training, are therefore
  identical for any number of processes and devices.
  """
  global_size = config.input.batch_size
  batch_size = local_batch_size(global_size)
  process = jax.process_index()
  items = _items(builder, config, source, config.dataset.train_split, train=True)
  items = items.shuffle(config.input.shuffle_buffer, seed=config.seed + 1)
  items = items.enumerate().skip(start_step * global_size)
  items = items.filter(tf_setup.as_written(
      lambda i, _: (i % global_size) // batch_size == process))
  ds, fields = _decoded(items, config, builder, source, True, batch_size,
                        drop_remainder=True)
  return (align_across_processes(batch, fields) for batch in ds.as_numpy_iterator())


def count_items(config: ml_collections.ConfigDict, builder, source: spec_lib.ExampleSource,
                split: str) -> int:
  """Clips or sequences of ``split`` on this process (cheap: frames are not decoded)."""
  items = _items(builder, config, source, split, train=False)
  return int(items.reduce(np.int64(0), tf_setup.as_written(lambda n, _: n + 1)).numpy())


class EvalDataset(NamedTuple):
  """A split's evaluation batches of this process as a tf.data pipeline (built once, read
  again by every evaluation of a run: tracing its functions costs more than reading)."""
  ds: tf.data.Dataset  # Unpadded batches of ``local_batch_size(eval_batch_size)``.
  fields: spec_lib.Spec
  count: int  # The split's items on this process (``count_items``).


def eval_dataset(config: ml_collections.ConfigDict, builder, source: spec_lib.ExampleSource,
                 split: str, count: int | None = None) -> EvalDataset:
  """The evaluation pipeline of ``split`` (``count``: its items on this process, when
  already known)."""
  batch_size = local_batch_size(config.input.eval_batch_size)
  if count is None:
    count = count_items(config, builder, source, split)
  items = _items(builder, config, source, split, train=False).enumerate()
  ds, fields = _decoded(items, config, builder, source, False, batch_size,
                        drop_remainder=False)
  return EvalDataset(ds, fields, count)


def eval_batches(config: ml_collections.ConfigDict, builder, source: spec_lib.ExampleSource,
                 split: str, dataset: EvalDataset | None = None
                 ) -> tuple[Iterator[Batch], int]:
  """Exact evaluation batches of this process and how many there are (of ``dataset``, the
  split's ``eval_dataset``, where already built).

  Every clip/video of the split appears exactly once over all processes; padding examples
  (and whole padding batches, so that every process runs the same number of steps) have
  ``valid`` all False.
  """
  batch_size = local_batch_size(config.input.eval_batch_size)
  ds, fields, count = dataset or eval_dataset(config, builder, source, split)
  local_batches = math.ceil(count / batch_size)
  num_batches = local_batches
  if jax.process_count() > 1:
    num_batches = int(np.max(multihost_utils.process_allgather(np.int64(local_batches))))

  def generate():
    for batch in ds.as_numpy_iterator():
      yield align_across_processes(pad_batch(batch, batch_size), fields)
    for _ in range(num_batches - local_batches):
      yield align_across_processes(spec_lib.zeros(fields, batch_size), fields)
  return generate(), num_batches


def pad_batch(batch: Batch, batch_size: int) -> Batch:
  """Pads the leading axis to ``batch_size`` with zeros (``valid`` False, ids empty)."""
  have = len(batch['valid'])
  if have == batch_size:
    return batch
  return {k: np.concatenate([v, np.zeros((batch_size - have,) + v.shape[1:], v.dtype)])
          for k, v in batch.items()}
