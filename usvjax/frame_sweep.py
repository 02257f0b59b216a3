"""Accuracy and AUC against the number of frames a video classifier sees (Cui et al.,
Fig. 7); ``experiments/frame_sweep.py`` is the command.

The trained run's headline model (``usvjax.runners``: the classifier itself, CLMAN's
classifier, the variable-frame CNN-LSTM of a two-stage run) is evaluated exactly on a split
once per frame count n, with ``input.max_frames = n`` and ``input.sampling = 'up_to'``: each
video contributes min(its length, n) frames, sampled uniformly over the whole video as in
every evaluation (``input_pipeline/sequences.py``). Nothing is retrained: the curve shows how
a model trained on up to ``max_frames`` frames degrades (or not) when it sees fewer.

A method of ``compare --folds`` (``<workdir>/<method>/fold_<k>/seed<s>``) is swept run by
run (``run_folds``; runs compare has not finished are skipped and named): each fold's final
checkpoint on its own held-out videos, as ``compare`` scores it (the best checkpoint would
be chosen on those videos), one CSV row per fold, seed and frame count, and the plot gives
the mean over the runs with their range shaded.
"""
from __future__ import annotations

import csv
import glob
import os
import re
from collections.abc import Sequence

import matplotlib
import ml_collections

from usvjax.errors import ConfigError
from usvjax import evaluate
from usvjax import provenance
from usvjax import runners
from usvjax import tables
from usvjax import train

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
  _, model_config, sub_dir = runners.get(config).headline(config, workdir)
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


def fold_runs(method_dir: str) -> list[tuple[int, int, str]]:
  """(fold, seed, run directory) of every run of a ``compare --folds`` method directory
  (``fold_<k>/seed<s>`` holding a saved config), by fold then seed; [] if there is none."""
  found = []
  pattern = os.path.join(method_dir, 'fold_*', 'seed*', provenance.CONFIG_FILE)
  for config_file in glob.glob(pattern):
    run_dir = os.path.dirname(config_file)
    fold = re.fullmatch(r'fold_(\d+)', os.path.basename(os.path.dirname(run_dir)))
    seed = re.fullmatch(r'seed(\d+)', os.path.basename(run_dir))
    if fold and seed:
      found.append((int(fold.group(1)), int(seed.group(1)), run_dir))
  return sorted(found)


def run_folds(method_dir: str, counts: Sequence[int], output_dir: str = '') -> list[dict]:
  """``run`` for every fold and seed of a ``compare --folds`` method: one row per run and
  frame count, {'dataset', 'image_size', 'steps', 'method', 'fold', 'seed', 'frames', *KEYS,
  'num_videos'}; each run's files in ``<output_dir>/fold_<k>/seed<s>``, all rows in
  ``<output_dir>/frame_sweep.csv`` and their mean in ``frame_sweep.png`` (default
  ``output_dir``: ``<method_dir>/frame_sweep``)."""
  runs, unfinished = [], []
  for fold, seed, run_dir in fold_runs(method_dir):
    finished = os.path.exists(os.path.join(run_dir, 'result.json'))  # Scored by compare.
    (runs if finished else unfinished).append((fold, seed, run_dir))
  if unfinished:
    train.say(f'{len(unfinished)} unfinished runs not swept (no result.json yet): '
              + ', '.join(os.path.relpath(d, method_dir) for _, _, d in unfinished))
  if not runs:
    raise ConfigError(f'{method_dir} holds no finished fold_<k>/seed<s> run of compare '
                      '--folds: run (or finish) the comparison first.')
  output_dir = output_dir or os.path.join(method_dir, 'frame_sweep')
  method = os.path.basename(os.path.normpath(method_dir))
  rows = []
  for fold, seed, run_dir in runs:
    config = provenance.load_config(run_dir)
    columns = {**provenance.setting(config), 'method': method, 'fold': fold, 'seed': seed}
    swept = run(config, run_dir, counts, 'latest',  # The fold's held-out videos, whatever
                config.dataset.train_split,         # split is named (input_pipeline.pipeline).
                os.path.join(output_dir, f'fold_{fold}', f'seed{seed}'))
    rows += [{**columns, **row} for row in swept]
  _write(rows, output_dir)
  return rows


def table(rows: Sequence[dict]) -> str:
  """Markdown: per frame count, each of ``KEYS`` as mean ± std over the rows (runs) of
  that count."""
  frames = sorted({r['frames'] for r in rows})
  return tables.markdown(
      {f'{n} frames': [tables.mean_std([r[k] for r in rows if r['frames'] == n]) for k in KEYS]
       for n in frames}, KEYS, 'frames')


def _write(rows: list[dict], output_dir: str) -> None:
  """frame_sweep.csv (the rows) and frame_sweep.png: accuracy and AUC against the frame
  count, the mean over the rows of each count with their range shaded."""
  with open(os.path.join(output_dir, 'frame_sweep.csv'), 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
  fig, ax = plt.subplots(figsize=(5, 3.2))
  frames = sorted({r['frames'] for r in rows})
  for key in ('accuracy', 'auc'):
    values = [[r[key] for r in rows if r['frames'] == n] for n in frames]
    ax.plot(frames, [sum(v) / len(v) for v in values], marker='o', label=key)
    ax.fill_between(frames, [min(v) for v in values], [max(v) for v in values], alpha=0.2)
  ax.set_xscale('log', base=2)
  ax.set_xlabel('frames per video (at most)')
  ax.legend()
  fig.tight_layout()
  fig.savefig(os.path.join(output_dir, 'frame_sweep.png'), dpi=120)
  plt.close(fig)
