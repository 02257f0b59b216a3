"""Accuracy and AUC of a video classifier against the number of frames per video;
``experiments/frame_sweep.py`` is the command. Two curves:

* **Test-time frame budget** (default). The trained run's headline model
  (``usvjax.runners``: the classifier itself, CLMAN's classifier, the variable-frame
  CNN-LSTM of a two-stage run) is evaluated exactly on a split once per frame count n, with
  ``input.max_frames = n`` and ``input.sampling = 'up_to'``: each video contributes min(its
  length, n) frames, sampled uniformly over the whole video as in every evaluation
  (``input_pipeline/sequences.py``). Nothing is retrained: the curve shows how a model
  trained on up to ``max_frames`` frames degrades (or not) when it sees fewer.
* **Retrained per count** (``retrain=True``; two-stage CNN-LSTM runs): Cui et al.'s Fig. 7,
  which trains the equal-frame CNN-LSTM on equal-frame datasets of 10, 12, ..., 20 uniformly
  sampled frames and reports each one's accuracy. Per count n an equal-frame LSTM
  (``two_stage.sequence_config`` with ``equal_frames = n``) is trained on exactly n
  uniformly sampled frames per video of the run's feature cache, in
  ``<output_dir>/frames_<n>/lstm_equal`` (resumable; the run's own ``lstm_equal`` is not
  touched), and scored on exactly n frames per video. Choice: every count reads the run's
  one frame CNN and its cache (the CNN was trained on up to ``frame_cnn.input.max_frames``
  frames per video), where the paper's separately sampled datasets imply one frame CNN per
  count: the CNN classifies single frames, so the count is a property of the LSTM's input,
  and a frame CNN per count would cost the whole run again per count. Videos shorter than n
  repeat frames (``usvjax.runners.two_stage``); the paper's equal-frame datasets left them out.

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

from usvjax import runners
from usvjax.core import evaluate
from usvjax.core import run as run_lib
from usvjax.core import train
from usvjax.errors import ConfigError
from usvjax.reporting import console
from usvjax.reporting import provenance
from usvjax.reporting import tables
from usvjax.runners import two_stage

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


def retrained_config(config: ml_collections.ConfigDict, workdir: str,
                     frames: int) -> ml_collections.ConfigDict:
  """The config of an equal-frame CNN-LSTM on exactly ``frames`` frames per video of the
  two-stage run ``workdir``'s feature cache (Fig. 7's retrained curve)."""
  if not isinstance(runners.get(config), two_stage.TwoStage):  # It reads the stages' files.
    raise ConfigError(f'--retrain trains an equal-frame CNN-LSTM per frame count on a '
                      f'two-stage run\'s feature cache; this run is config.runner='
                      f'{config.runner!r}. Drop --retrain for the test-time frame budget.')
  c = config.copy_and_resolve_references()
  c.equal_frames = frames
  return two_stage.sequence_config(c, workdir, equal=True)


def _sweep_dir(retrain: bool) -> str:
  """The sweep's folder name within the run: one per curve, so neither overwrites the other."""
  return 'equal_frame_sweep' if retrain else 'frame_sweep'


def _report(config: ml_collections.ConfigDict, workdir: str, count: int, which: str,
            split: str, output_dir: str, retrain: bool) -> evaluate.Report:
  """The exact report of ``count`` frames per video in ``output_dir``/frames_<count>."""
  count_dir = os.path.join(output_dir, f'frames_{count}')
  if not retrain:
    headline = runners.get(config).headline(config, workdir)
    return evaluate.evaluate_checkpoint(
        run_lib.resolve(frames_config(headline.config, count), split),
        os.path.join(workdir, headline.log_dir), which, split, count_dir)
  stage_config, stage_dir = retrained_config(config, workdir, count), os.path.join(
      count_dir, 'lstm_equal')
  console.say(f'training an equal-frame LSTM on {count} frames per video in {stage_dir}')
  stage = run_lib.resolve(stage_config, split)
  train.train_and_evaluate(stage, stage_dir)
  return evaluate.evaluate_checkpoint(stage, stage_dir, which, split, count_dir)


def run(config: ml_collections.ConfigDict, workdir: str, counts: Sequence[int],
        which: str = 'best', split: str = '', output_dir: str = '',
        retrain: bool = False) -> list[dict]:
  """One row per frame count: {'frames', *KEYS, 'num_videos'}; writes frame_sweep.csv and
  frame_sweep.png (and each count's report in ``frames_<n>/``) into ``output_dir``
  (default ``<workdir>/frame_sweep``, or ``<workdir>/equal_frame_sweep`` with ``retrain``:
  see the module docstring for the two curves)."""
  if not counts or min(counts) < 1:
    raise ConfigError(f'--frames={list(counts)}: give frame counts >= 1, e.g. 1,2,4,8,16.')
  output_dir = output_dir or os.path.join(workdir, _sweep_dir(retrain))
  rows = []
  with run_lib.prepared_once():
    for count in sorted(set(counts)):
      report = _report(config, workdir, count, which, split, output_dir, retrain)
      rows.append({'frames': count, **{k: report.metrics[k] for k in KEYS},
                   'num_videos': report.metrics['num_videos']})
  _write(rows, output_dir, retrain)
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


def run_folds(method_dir: str, counts: Sequence[int], output_dir: str = '',
              retrain: bool = False) -> list[dict]:
  """``run`` for every fold and seed of a ``compare --folds`` method: one row per run and
  frame count, {'dataset', 'image_size', 'steps', 'method', 'fold', 'seed', 'frames', *KEYS,
  'num_videos'}; each run's files in ``<output_dir>/fold_<k>/seed<s>``, all rows in
  ``<output_dir>/frame_sweep.csv`` and their mean in ``frame_sweep.png`` (default
  ``output_dir``: ``<method_dir>/frame_sweep``, or ``equal_frame_sweep`` with ``retrain``)."""
  runs, unfinished = [], []
  for fold, seed, run_dir in fold_runs(method_dir):
    finished = os.path.exists(os.path.join(run_dir, 'result.json'))  # Scored by compare.
    (runs if finished else unfinished).append((fold, seed, run_dir))
  if unfinished:
    console.say(f'{len(unfinished)} unfinished runs not swept (no result.json yet): '
              + ', '.join(os.path.relpath(d, method_dir) for _, _, d in unfinished))
  if not runs:
    raise ConfigError(f'{method_dir} holds no finished fold_<k>/seed<s> run of compare '
                      '--folds: run (or finish) the comparison first.')
  output_dir = output_dir or os.path.join(method_dir, _sweep_dir(retrain))
  method = os.path.basename(os.path.normpath(method_dir))
  rows = []
  for fold, seed, run_dir in runs:
    config = provenance.load_config(run_dir)
    columns = {**provenance.setting(config), 'method': method, 'fold': fold, 'seed': seed}
    swept = run(config, run_dir, counts, 'latest',  # The fold's held-out videos, whatever
                config.dataset.train_split,         # split is named (input_pipeline.pipeline).
                os.path.join(output_dir, f'fold_{fold}', f'seed{seed}'), retrain)
    rows += [{**columns, **row} for row in swept]
  _write(rows, output_dir, retrain)
  return rows


def table(rows: Sequence[dict]) -> str:
  """Markdown: per frame count, each of ``KEYS`` as mean ± std over the rows (runs) of
  that count."""
  frames = sorted({r['frames'] for r in rows})
  return tables.markdown(
      {f'{n} frames': [tables.mean_std([r[k] for r in rows if r['frames'] == n]) for k in KEYS]
       for n in frames}, KEYS, 'frames')


def _write(rows: list[dict], output_dir: str, retrain: bool) -> None:
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
  if not retrain:  # 1, 2, 4, ... frames; Fig. 7's counts (10, 12, ..., 20) are linear.
    ax.set_xscale('log', base=2)
  ax.set_xlabel('frames per video (exactly; an LSTM trained per count)' if retrain
                else 'frames per video (at most; nothing retrained)')
  ax.legend()
  fig.tight_layout()
  fig.savefig(os.path.join(output_dir, 'frame_sweep.png'), dpi=120)
  plt.close(fig)
