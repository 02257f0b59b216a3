"""Accuracy and AUC against the number of frames a video classifier sees (Cui et al.,
Fig. 7); ``experiments/frame_sweep.py`` is the command.

The trained run's headline model (``usvjax.runners``: the classifier itself, CLMAN's
classifier, the variable-frame CNN-LSTM of a two-stage run) is evaluated exactly on a split
once per frame count n, with ``input.max_frames = n`` and ``input.sampling = 'up_to'``: each
video contributes min(its length, n) frames, sampled uniformly over the whole video as in
every evaluation (``input_pipeline/sequences.py``). Nothing is retrained: the curve shows how
a model trained on up to ``max_frames`` frames degrades (or not) when it sees fewer.
"""
from __future__ import annotations

import csv
import os
from collections.abc import Sequence

import matplotlib
import ml_collections

from usvjax.errors import ConfigError
from usvjax import evaluate
from usvjax import runners

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position

KEYS = ('accuracy', 'auc', 'sensitivity', 'specificity', 'f1')


def frames_config(config: ml_collections.ConfigDict, frames: int) -> ml_collections.ConfigDict:
  """``config`` evaluating up to ``frames`` frames per video (a bucket of that length added)."""
  c = config.copy_and_resolve_references()
  c.input.max_frames = frames
  c.input.sampling = 'up_to'
  c.input.length_buckets = tuple(sorted(set(c.input.length_buckets) | {frames}))
  return c


def run(config: ml_collections.ConfigDict, workdir: str, counts: Sequence[int],
        which: str = 'best', split: str = '', output_dir: str = '') -> list[dict]:
  """One row per frame count: {'frames', *KEYS, 'num_videos'}; writes frame_sweep.csv and
  frame_sweep.png (and each count's report in ``frames_<n>/``) into ``output_dir``
  (default ``<workdir>/frame_sweep``)."""
  if not counts or min(counts) < 1:
    raise ConfigError(f'--frames={list(counts)}: give frame counts >= 1, e.g. 1,2,4,8,16.')
  _, model_config, sub_dir = runners.get(config).headline(config)
  run_dir = os.path.join(workdir, sub_dir)
  output_dir = output_dir or os.path.join(workdir, 'frame_sweep')
  rows = []
  for count in sorted(set(counts)):
    report = evaluate.evaluate_checkpoint(frames_config(model_config, count), run_dir, which,
                                          split, os.path.join(output_dir, f'frames_{count}'))
    rows.append({'frames': count, **{k: report.metrics[k] for k in KEYS},
                 'num_videos': report.metrics['num_videos']})
  _write(rows, output_dir)
  return rows


def _write(rows: list[dict], output_dir: str) -> None:
  with open(os.path.join(output_dir, 'frame_sweep.csv'), 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
  fig, ax = plt.subplots(figsize=(5, 3.2))
  frames = [r['frames'] for r in rows]
  for key in ('accuracy', 'auc'):
    ax.plot(frames, [r[key] for r in rows], marker='o', label=key)
  ax.set_xscale('log', base=2)
  ax.set_xlabel('frames per video (at most)')
  ax.legend()
  fig.tight_layout()
  fig.savefig(os.path.join(output_dir, 'frame_sweep.png'), dpi=120)
  plt.close(fig)
