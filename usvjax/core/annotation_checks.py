"""Start-up checks of a sparsely annotated training split (``input_pipeline/clips.py``).

A segmentation dataset converted with the builder option ``sparse_masks=True`` stores
which frames are traced (``annotated``, docs/data.md); training targets are annotated
frames only. Before anything trains, ``annotation_problems`` (called by
``run_checks.check_run``) reads the training split's flags (frames left encoded) and:

* refuses a training split with no annotated frame (nothing to learn from);
* logs the training videos without an annotated frame, by name: they give no supervised
  target (their frames feed nothing but the mean teacher's consistency term, if on);
* with ``input.train_clips='distinct_frames'`` (STM's clips: first frame and target
  annotated, at least ``clip_length`` - 1 apart), refuses a split where no video has such
  a pair, which would leave the training stream empty.

Datasets without the flags (fully traced) pass unchecked.
"""
from __future__ import annotations

import ml_collections
import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from input_pipeline import clips


def annotated_flags(builder: tfds.core.DatasetBuilder, split: str) -> dict[str, np.ndarray]:
  """{video id: bool [T] annotated flags} of ``split`` ({} for a dataset without them)."""
  if 'annotated' not in builder.info.features:
    return {}
  decoders = {k: tfds.decode.SkipDecoding() for k in ('frames', 'masks')
              if k in builder.info.features}
  ds = builder.as_dataset(split=split, decoders=decoders, shuffle_files=False)
  ds = ds.map(lambda v: (v['video_id'], v['annotated']))
  return {key.decode(): np.asarray(flags, bool) for key, flags in ds.as_numpy_iterator()}


def _has_distinct_clip(flags: np.ndarray, clip_length: int) -> bool:
  traced = np.flatnonzero(flags)
  return traced.size > 0 and traced[-1] - traced[0] >= clip_length - 1


def annotation_problems(config: ml_collections.ConfigDict,
                        builder: tfds.core.DatasetBuilder) -> list[str]:
  """The problems of the module docstring for ``config.dataset.train_split``."""
  split = config.dataset.train_split
  flags = annotated_flags(builder, split)
  if not flags or all(f.all() for f in flags.values()):
    return []
  where = f'config.dataset.train_split={split!r} of {builder.info.full_name}'
  untraced = sorted(v for v, f in flags.items() if not f.any())
  if len(untraced) == len(flags):
    return [f'{where} has no annotated frame in any of its {len(flags)} videos: trace some '
            'frames (docs/data.md, sparse masks) or train on another split.']
  if untraced:
    logging.warning('%s: %d of %d training videos have no annotated frame and give no '
                    'supervised target: %s', where, len(untraced), len(flags),
                    ', '.join(untraced[:10]) + (' ...' if len(untraced) > 10 else ''))
  length = config.input.clip_length
  if clips.distinct_clips(config, True) and not any(
      _has_distinct_clip(f, length) for f in flags.values()):
    return [f"config.input.train_clips='distinct_frames' trains on clips whose first frame "
            f'and target are annotated, at least clip_length - 1 = {length - 1} frames '
            f'apart, but no video of {where} has two such annotated frames: trace more '
            "frames per video, or set config.input.train_clips='every_frame'."]
  return []
