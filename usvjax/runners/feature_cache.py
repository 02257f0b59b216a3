"""The feature cache of Cui et al. (Sec. 3.2.2): a trained frame CNN's features, on disk.

The stage-1 frame CNN runs once, in eval mode, over the frames of every video; stage 2
(the LSTM) then trains on the stored features and never recomputes them.

Format: a TFDS dataset named ``usv_features`` (version 1.0.0) in ``<directory>``, with the
source dataset's split names, one example per video, videos in the source's order:

* ``features``: float32 [n, D], the CNN's pooled backbone features (D = 512 for
  ResNet-18) of the video's n frames in time order: all of them, or ``max_frames``
  sampled uniformly from a longer video (the frame config's ``input.max_frames``);
* ``label``: the video's class (ClassLabel, the source's class names);
* ``video_id``: text.

A video's length is ``features.shape[0]``. ``<directory>/cache.json`` records where the
features come from (dataset, CNN run directory and checkpoint step, D, lengths per
split). Read it like any dataset: ``tfds.builder('usv_features', data_dir=directory)``, or
in a config ``dataset.name='usv_features'``, ``dataset.data_dir=directory``; numpy users can
iterate ``tfds.as_numpy(builder.as_dataset(split))``. The cache is written to
``<directory>.tmp`` and renamed, so a killed extraction never leaves a half cache behind.
"""
from __future__ import annotations

import json
import os
import shutil

import jax
import ml_collections
import numpy as np
import tensorflow_datasets as tfds
from jax.experimental import multihost_utils

from usvjax.core import evaluate
from usvjax.core import run as run_lib
from usvjax.tasks.video_keys import decode_key

NAME = 'usv_features'
VERSION = '1.0.0'
INFO_FILE = 'cache.json'


class _FeatureTask:
  """Evaluation "task" whose outputs are each video's features (see ``evaluate_split``)."""

  def eval_outputs(self, outputs: dict, batch: dict) -> dict:
    return {'features': outputs['features'], 'valid': batch['valid'],
            'label': batch['label'], 'video_key': batch['video_key']}

  def evaluator(self) -> '_FeatureRows':
    return _FeatureRows()


class _FeatureRows:
  """Collects (video_id, example) pairs of the real videos and frames of every batch."""

  def __init__(self):
    self.examples: list[tuple[str, dict]] = []

  def update(self, outputs: dict) -> None:
    for i in np.flatnonzero(outputs['valid'].any(axis=1)):
      length = int(outputs['valid'][i].sum())  # Real frames are a prefix.
      video_id = decode_key(outputs['video_key'][i])
      self.examples.append((video_id, {
          'features': np.asarray(outputs['features'][i, :length], np.float32),
          'label': int(outputs['label'][i]), 'video_id': video_id}))

  def result(self) -> dict:
    return {'num_videos': len(self.examples)}


def read_info(directory: str) -> dict | None:
  """The ``cache.json`` of a complete cache in ``directory``, or None if there is none."""
  path = os.path.join(directory, INFO_FILE)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def resolve(config: ml_collections.ConfigDict) -> run_lib.Run:
  """The frame CNN's run as the cache reads it: every video of each split, whatever fold is
  trained, each with up to ``input.max_frames`` frames, scored by the feature rows."""
  config = config.copy_and_resolve_references()
  config.dataset.folds.num = 0
  config.input.sampling = 'up_to'
  return run_lib.resolve(config, task=_FeatureTask())


def extract(run: run_lib.Run, workdir: str, which: str, directory: str,
            splits: list[str]) -> dict:
  """Writes the features of checkpoint ``which`` of the frame-CNN run in ``workdir``.

  Args:
    run: the frame CNN's run as ``resolve`` makes it (its model must return ``features``).
    workdir: the frame CNN's run directory.
    which: 'best', 'latest' or a step.
    directory: the cache directory (replaced; kept if it already holds exactly this).
    splits: source split names (no slices) to extract.

  Returns:
    The cache's info (what ``cache.json`` holds).
  """
  config = run.config
  variables, step = run.restore(workdir, which)
  source = {'dataset': config.dataset.to_dict(), 'frame_cnn': os.path.abspath(workdir),
            'step': step, 'max_frames': config.input.max_frames, 'splits': sorted(splits)}
  existing = read_info(directory)
  if existing and existing['source'] == source:
    return existing
  examples = {}
  for split in splits:
    _, rows = evaluate.evaluate_split(run, split, variables)
    examples[split] = rows.examples
  info = {'source': source, 'dim': int(examples[splits[0]][0][1]['features'].shape[-1]),
          'lengths': {split: [int(e['features'].shape[0]) for _, e in rows]
                      for split, rows in examples.items()}}
  if jax.process_index() == 0:
    _write(directory, examples, info, run.class_names())
  multihost_utils.sync_global_devices(f'feature cache {directory}')
  return info


def _write(directory: str, examples: dict, info: dict, class_names: list[str]) -> None:
  staging = directory.rstrip('/') + '.tmp'
  shutil.rmtree(staging, ignore_errors=True)
  features = tfds.features.FeaturesDict({
      'features': tfds.features.Tensor(shape=(None, info['dim']), dtype=np.float32),
      'label': tfds.features.ClassLabel(names=list(class_names)),
      'video_id': tfds.features.Text()})
  tfds.dataset_builders.store_as_tfds_dataset(
      name=NAME, version=VERSION, features=features, split_datasets=examples,
      data_dir=staging, description=__doc__.split('\n', 1)[0], disable_shuffling=True)
  shutil.rmtree(os.path.join(staging, 'downloads'), ignore_errors=True)
  with open(os.path.join(staging, INFO_FILE), 'w') as f:
    json.dump(info, f, indent=2)
  shutil.rmtree(directory, ignore_errors=True)
  os.replace(staging, directory)
