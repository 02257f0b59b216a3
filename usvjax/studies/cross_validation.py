"""k-fold cross-validation of any classification config, split by patient or video.

Folds come from ``input_pipeline.folds.fold_assignment`` over ``config.dataset.train_split``
(use e.g. 'train+validation+test' for the whole dataset): by patient where the data has a
group column, else by video, stratified by label, fixed by the seed (``fold_config``; a
threshold chosen on validation data, ``task.threshold_rule``, is refused: k-fold has no
validation split). ``usvjax.studies.compare`` runs its folds (``--folds``) with the same
``fold_config``, ``train_fold`` and ``score_fold``. For fold i the model trains on the
other folds and its final checkpoint is evaluated on fold i (periodic validation during
training also reports fold i, for the curves; picking the best checkpoint on it would
leak the held-out fold, so it is not used).
Every fold is trained and scored by the config's runner (``usvjax.runners``) on the fold's
data alone: a two-stage config trains its frame CNN, feature cache and LSTMs per fold, so
no feature comes from a CNN that saw the held-out videos, and scores every row of
``two_stage.ROWS``; CLMAN pretrains per fold on the fold's training videos only; a single
model is one row named after it. Runs live in
``<workdir>/fold_<i>`` and resume like any run, so an interrupted cross-validation
continues where it stopped.

Writes ``cv_results.json`` (per row: per fold, mean ± sample std, pooled), ``cv_table.md``,
and per row ``<workdir>/<row>/`` ROC, PR and normalised confusion-matrix PNGs of all folds'
held-out predictions pooled. The pooled metrics carry 95% bootstrap intervals
(``<metric>_ci95`` = [lo, hi], ``metrics.classification.bootstrap_intervals``) over the
pooled held-out videos, resampling patients where the data has groups (videos otherwise;
``bootstrap_unit``), with every video's fold model's prediction fixed; cv_table.md shows
them in a table of their own. Each fold's own intervals are in its report's metrics.json.
"""
from __future__ import annotations

import json
import os
import time

import jax
import ml_collections
import numpy as np

from usvjax import runners
from usvjax import tasks
from usvjax.core import evaluate
from usvjax.core import run as run_lib
from usvjax.errors import ConfigError
from usvjax.metrics import classification as classification_metrics
from usvjax.metrics import keys as metric_keys
from usvjax.reporting import console
from usvjax.reporting import plots
from usvjax.reporting import tables

KEYS = metric_keys.CLASSIFICATION_KEYS


def fold_config(config: ml_collections.ConfigDict, num_folds: int, index: int,
                seed: int) -> ml_collections.ConfigDict:
  """``config`` for fold ``index`` of ``num_folds`` (the assignment fixed by ``seed``): it
  trains on the other folds of ``dataset.train_split`` and scores this one.

  Raises ``ConfigError`` with fewer than 2 folds, or if any of its tasks (a stage's
  included) chooses its decision threshold on the validation split
  (``task.threshold_rule`` other than 'fixed'): k-fold has none, and
  ``evaluate.calibrate`` would fail only after the training.
  """
  if num_folds < 2:
    raise ConfigError(f'{num_folds} folds: k-fold cross-validation needs at least 2.')
  calibrating = _calibrating(config)
  if calibrating:
    key, rule = calibrating[0]
    raise ConfigError(f'config.{key}={rule!r} chooses the decision threshold on the '
                      'validation split, which k-fold cross-validation does not have: use '
                      f"{key}='fixed'.")
  c = config.copy_and_resolve_references()
  c.dataset.folds.update(num=num_folds, index=index, seed=seed)
  return c


def _calibrating(config: ml_collections.ConfigDict, prefix: str = '') -> list[tuple[str, str]]:
  """(dotted key, rule) of every ``threshold_rule`` in ``config`` other than 'fixed'."""
  found = []
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      found += _calibrating(value, f'{prefix}{key}.')
    elif key == 'threshold_rule' and value != 'fixed':
      found.append((prefix + key, value))
  return found


def train_fold(config: ml_collections.ConfigDict, fold_dir: str) -> None:
  """Trains one fold (resuming); later stages (a two-stage config's feature cache) read
  the final checkpoints: picking the best on the held-out fold would leak it."""
  runners.train(config, fold_dir, which='latest')


def score_fold(config: ml_collections.ConfigDict, fold_dir: str) -> dict[str, evaluate.Report]:
  """{row: report} of the fold's final checkpoint(s) on its held-out videos, written to
  ``<fold_dir>/held_out``."""
  return runners.evaluate(config, fold_dir, config.dataset.train_split, 'latest',
                          os.path.join(fold_dir, 'held_out'))


def fold_reports(config: ml_collections.ConfigDict, fold_dir: str) -> dict[str, evaluate.Report]:
  """Trains one fold and scores its final checkpoint(s) on the held-out videos."""
  train_fold(config, fold_dir)
  return score_fold(config, fold_dir)


def run(config: ml_collections.ConfigDict, workdir: str, num_folds: int = 5,
        seed: int = 0) -> dict:
  """Trains and evaluates every fold (the dataset prepared once for all of them).

  Returns:
    {'methods': {row: {'folds': [...], 'mean', 'std', 'pooled'}}, 'num_folds', 'seed',
    'fold_seconds': [...]} (a resumed fold's time counts only what this call did).
  """
  if not tasks.definition(runners.get(config).headline(config).config.input.task).pooled:
    raise ConfigError('cross-validation is for classification configs '
                      f'(config.input.task={config.input.task!r}).')
  rows: dict[str, list] = {}
  seconds = []
  with run_lib.prepared_once():
    for index in range(num_folds):
      start = time.perf_counter()
      for row, report in fold_reports(fold_config(config, num_folds, index, seed),
                                      os.path.join(workdir, f'fold_{index}')).items():
        rows.setdefault(row, []).append(report)
      seconds.append(time.perf_counter() - start)
      console.say(f'fold {index + 1}/{num_folds} done in {seconds[-1]:.0f} s')
    summary = {'num_folds': num_folds, 'seed': seed, 'fold_seconds': seconds,
               'methods': {row: _summarise(reports, config.task.threshold)
                           for row, reports in rows.items()}}
    if jax.process_index() == 0:
      _write(summary, workdir, rows, config)
  return summary


def _pooled(reports: list[evaluate.Report]) -> tuple[np.ndarray, np.ndarray]:
  arrays = [report.evaluation.arrays() for report in reports]
  return np.concatenate([p for p, _ in arrays]), np.concatenate([l for _, l in arrays])


def pooled_metrics(reports: list[evaluate.Report], threshold: float) -> dict:
  """The metrics of every fold's held-out videos put together, with their bootstrap
  intervals (module docstring)."""
  probs, labels = _pooled(reports)
  units = [unit for report in reports for unit in report.evaluation.units()]
  return dict(classification_metrics.classification_metrics(probs, labels, threshold),
              **classification_metrics.bootstrap_intervals(probs, labels, threshold, units))


def _summarise(reports: list[evaluate.Report], threshold: float) -> dict:
  folds = [{k: report.metrics[k] for k in KEYS + ('num_videos',)} for report in reports]
  table = np.array([[fold[k] for k in KEYS] for fold in folds])
  return {'folds': folds,
          'mean': dict(zip(KEYS, np.nanmean(table, axis=0).tolist())),
          'std': dict(zip(KEYS, np.nanstd(table, axis=0, ddof=1).tolist())),
          'pooled': pooled_metrics(reports, threshold)}


def _mean_std(result: dict, key: str) -> str:
  return f'{result["mean"][key]:.3f} ± {result["std"][key]:.3f}'


def _interval(pooled: dict, key: str) -> str:
  """'value [lo, hi]' of a pooled metric ('value' alone where no interval is defined or,
  as for ece, none is computed: ``classification.CI_KEYS``)."""
  lo, hi = pooled.get(f'{key}_ci95', (np.nan, np.nan))
  return f'{pooled[key]:.3f}' + ('' if np.isnan(lo) else f' [{lo:.3f}, {hi:.3f}]')


def markdown_table(summary: dict) -> str:
  """A comparison of the rows (mean ± std over folds), the pooled held-out videos with
  their 95% bootstrap intervals, then each row's folds."""
  methods = summary['methods']
  text = tables.markdown({row: [_mean_std(result, k) for k in KEYS]
                          for row, result in methods.items()}, KEYS, 'method (mean ± std)')
  units = {result['pooled']['bootstrap_unit'] for result in methods.values()}
  text += (f'\nPooled held-out videos, 95% CI (bootstrap by {" or ".join(sorted(units))}):'
           '\n\n' + tables.markdown({row: [_interval(result['pooled'], k) for k in KEYS]
                                     for row, result in methods.items()}, KEYS, 'method'))
  for row, result in methods.items():
    folds = {f'{i} ({int(f["num_videos"])} videos)': f for i, f in enumerate(result['folds'])}
    text += f'\n{row}\n\n' + tables.metrics_table(folds, KEYS, 'fold')
  return text


def _write(summary: dict, workdir: str, rows: dict, config) -> None:
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, 'cv_results.json'), 'w') as f:
    json.dump(summary, f, indent=2)
  with open(os.path.join(workdir, 'cv_table.md'), 'w') as f:
    f.write(markdown_table(summary))
  class_names = run_lib.prepare_dataset(config.dataset).info.features['label'].names
  for row, reports in rows.items():
    plots.classification_curves(*_pooled(reports), os.path.join(workdir, row), class_names,
                                summary['methods'][row]['pooled'], config.task.threshold)
