"""The tables, curves and paired tests of a comparison (``compare.run``).

Written to ``workdir``: ``results.md`` (mean ± std over seeds, and folds, the papers'
columns, train time and evaluation frames/s: for a run of several rows, all its rows'
frames over the time of scoring them all), ``results.csv`` (one line per row of each run:
dataset, image_size, steps, method, variant, [fold,] seed, task, then every metric) and
``curves.png`` (the validation metric over training steps of every headline row: mean over
its runs, range shaded; with folds, validation scores the held-out fold).

Checkpoint selection (``compare``'s module docstring): a table of each method's test score
at its best-by-validation checkpoint, at its last checkpoint and over its last
``LAST_CHECKPOINTS`` evaluated ones (mean and range), and the paired tests made a second
time on each video's value averaged over those checkpoints (results.csv:
``paired_last3_dice_*`` or ``paired_last3_auc_*``), beside the best-by-validation ones.

Every method is also tested against a reference row (``paired_tests``; the first method
unless ``reference`` names another row, e.g. an ablation's baseline: then the tables are
``results_vs_<reference>.md`` and ``.csv``, beside the default ones), by a paired
bootstrap over the test videos: segmentation, of the per-video Dice difference,
frame-weighted as the headline Dice (``statistics.paired_bootstrap``); binary classification,
of the AUC difference (``statistics.paired_auc_bootstrap``). Each run is paired with the
reference's run of the same seed and fold (results.csv: ``paired_dice_*`` or ``paired_auc_*``:
``difference``, ``ci95_lo`` / ``_hi``, ``p``); results.md pools the runs: each video's
value averaged over the seeds of each method, and with folds every fold's held-out videos
together (each video once). A pooled k-fold AUC is that of all folds' models' probabilities
put together (as ``cross_validate``'s pooled row): models that differ in calibration lower
it, so read it beside the per-(fold, seed) tests and the mean ± std.
"""
from __future__ import annotations

import csv
import json
import os

import matplotlib
import numpy as np

from usvjax import tasks
from usvjax.errors import ConfigError
from usvjax.metrics import statistics
from usvjax.reporting import tables

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position

TIMING = {'train s': 'train_seconds', 'eval frames/s': 'eval_frames_per_second'}
LAST_CHECKPOINTS = 3  # The last evaluated checkpoints each run also scores on test.
LAST_PREFIX = 'last3_'  # Their results' keys: 'last3_mean_dice_mean', 'last3_video_dice', ...


def tables_name(reference: str | None = None) -> str:
  """The tables' file name without extension: 'results', or 'results_vs_<reference>'
  ('/' of a row's name as '_')."""
  return 'results' if reference is None else 'results_vs_' + reference.replace('/', '_')


def _by_task(results: dict[str, list[dict]]) -> dict[str, dict[str, list[dict]]]:
  """{task: {method: results}}, tasks in order of first appearance."""
  out: dict[str, dict[str, list[dict]]] = {}
  for name, runs in results.items():
    out.setdefault(runs[0]['task'], {})[name] = runs
  return out


def markdown_table(results: dict[str, list[dict]], task: str) -> str:
  """Mean ± std over runs (seeds, and folds; just the value for one run) of the task's
  columns."""
  columns = {**tasks.definition(task).columns, **TIMING}
  rows = {}
  for name, runs in results.items():
    cells = []
    for key in columns.values():
      cells.append(tables.mean_std([r[key] for r in runs if key in r],
                                   1 if key in TIMING.values() else 3))
    rows[name] = cells
  return tables.markdown(rows, list(columns), 'method')


def write(results: dict[str, list[dict]], workdir: str, reference: str | None = None) -> None:
  """<tables>.md (one table per task), <tables>.csv (one line per run) and curves.png, with
  paired tests against ``reference`` (default: the first method); <tables>:
  ``tables_name(reference)``."""
  if not results:
    return
  by_task = _by_task(results)
  paired = paired_tests(results, reference)
  last = (paired_tests(results, next(iter(paired.values()))['reference'], LAST_PREFIX)
          if paired else {})
  runs = next(iter(results.values()))
  folds = sorted({r['fold'] for r in runs if 'fold' in r})
  path = os.path.join(workdir, tables_name(reference))
  with open(path + '.md', 'w') as f:
    if folds:
      seeds = sorted({r['seed'] for r in runs})
      f.write(f'{len(folds)}-fold cross-validation, seeds {", ".join(map(str, seeds))}: mean ± '
              f'std over the {len(folds) * len(seeds)} (fold, seed) runs of each method.\n\n')
    f.write('\n'.join(markdown_table(group, task) if len(by_task) == 1 else
                      f'{task}\n\n{markdown_table(group, task)}'
                      for task, group in by_task.items()))
    pooled = 'held-out videos of every fold, seeds' if folds else 'test videos, seeds'
    if paired:
      f.write(_paired_markdown(paired, f'paired bootstrap over the {pooled} pooled'))
    spread = checkpoint_table(results)
    if spread:
      f.write("\n\nCheckpoint selection: each run's test score at its best-by-validation "
              f'checkpoint, at its last one and over its last {LAST_CHECKPOINTS} evaluated '
              'ones (mean ± std over runs):\n\n' + spread)
    if last:
      f.write(_paired_markdown(last, "each video's value averaged over its run's last "
                                     f'{LAST_CHECKPOINTS} evaluated checkpoints, paired '
                                     f'bootstrap over the {pooled} pooled'))
  keys = ['dataset', 'image_size', 'steps', 'method', 'variant'] + ['fold'] * bool(folds) + [
      'seed', 'task']
  for task in by_task:
    keys += [k for k in tasks.definition(task).columns.values() if k not in keys]
  metrics = {k for runs in results.values() for r in runs for k, v in r.items()
             if isinstance(v, (int, float)) and k not in keys}
  keys += sorted(metrics - set(TIMING.values())) + list(TIMING.values())
  with open(path + '.csv', 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=keys, extrasaction='ignore')
    writer.writeheader()
    for name, runs in results.items():
      writer.writerows(dict(r, method=name) for r in runs)
  _curves(results, workdir)


def _paired_markdown(paired: dict[str, dict], how: str) -> str:
  """The pooled paired tests as a markdown table, after a line saying what they pair."""
  first = next(iter(paired.values()))
  metric = {'dice': 'Dice', 'auc': 'AUC'}[first['metric']]
  return (f'\n\n{metric} against {first["reference"]} ({how}):\n\n' + tables.markdown(
      {name: [f'{t["difference"]:+.4f}', f'[{t["ci95_lo"]:+.4f}, {t["ci95_hi"]:+.4f}]',
              f'{t["p"]:.4f}'] for name, t in paired.items()},
      [f'{metric} difference', '95% CI', 'p'], 'method'))


def checkpoint_table(results: dict[str, list[dict]]) -> str:
  """Markdown: per method whose runs scored their last checkpoints (``compare``'s
  ``LAST_PREFIX``), its task's curve metric on test at the best-by-validation checkpoint,
  at the last, the mean of the last ``LAST_CHECKPOINTS`` and their range (max - min);
  mean ± std over runs.
  '' when no method has them."""
  rows = {}
  for name, runs in results.items():
    metric = tasks.definition(runs[0]['task']).curve_metric
    last = LAST_PREFIX + metric
    if not all(f'{last}_mean' in r for r in runs):
      continue
    rows[f'{name} ({metric})'] = [
        tables.mean_std([r[k] for r in runs])
        for k in (metric, f'last_{metric}', f'{last}_mean')] + [
        tables.mean_std([r[f'{last}_max'] - r[f'{last}_min'] for r in runs])]
  columns = ['best by validation', 'last', f'last {LAST_CHECKPOINTS}: mean',
             f'last {LAST_CHECKPOINTS}: max - min']
  return tables.markdown(rows, columns, 'method') if rows else ''


def _dice_test(values: np.ndarray, reference: np.ndarray) -> dict[str, float]:
  """Per-video [Dice, frames] of a method and of the reference -> paired bootstrap of the
  frame-weighted Dice difference (weights: the reference's frames)."""
  return statistics.paired_bootstrap(values[:, 0] - reference[:, 0], reference[:, 1])


def _auc_test(values: np.ndarray, reference: np.ndarray) -> dict[str, float]:
  """Per-video [p(class 1), label] of a method and of the reference -> paired bootstrap
  of the AUC difference."""
  return statistics.paired_auc_bootstrap(values[:, 0], reference[:, 0], reference[:, 1])


# Per-video values a run's result carries -> (the metric compared, its paired test).
PAIRED_TESTS = {'video_dice': ('dice', _dice_test), 'video_probs': ('auc', _auc_test)}


def paired_tests(results: dict[str, list[dict]], reference: str | None = None,
                 prefix: str = '') -> dict[str, dict]:
  """{method: paired test against ``reference`` (a row of ``results``; default the first
  method), runs pooled, with 'reference' and 'metric'} over the methods whose runs carry
  per-video values (``PAIRED_TESTS``: Dice for segmentation, AUC for binary
  classification; with ``prefix`` ``LAST_PREFIX``, those averaged over each run's last
  checkpoints, and {} where the reference has none: runs made before they were kept).
  Each run also gets ``paired_<prefix><metric>_*`` against the reference's run of its seed
  (and fold); pooled, each video's value is averaged over the pairs of runs that scored it
  (its seeds) first. Only videos both scored count."""
  kinds = [k for k in PAIRED_TESTS
           if sum(all(prefix + k in r for r in runs) for runs in results.values()) >= 2]
  if not kinds:
    return {}
  key, (metric, test) = prefix + kinds[0], PAIRED_TESTS[kinds[0]]
  names = [n for n, runs in results.items() if all(key in r for r in runs)]
  reference = names[0] if reference is None else reference
  if reference not in names:
    if prefix:
      return {}
    raise ConfigError(f'reference {reference!r} has no per-video {metric} to pair with; '
                      f'name one of {names}.')
  by_pair = {_pair(r): r[key] for r in results[reference]}
  out = {}
  for name in (n for n in names if n != reference):
    pairs = [(run, by_pair[_pair(run)]) for run in results[name] if _pair(run) in by_pair]
    for run, first in pairs:
      videos = sorted(set(first) & set(run[key]))
      found = test(np.array([run[key][v] for v in videos]), np.array([first[v] for v in videos]))
      run.update({f'paired_{prefix}{metric}_{k}': v for k, v in found.items()})
    if pairs:
      out[name] = dict(test(*_pooled([(run[key], first) for run, first in pairs])),
                       reference=reference, metric=metric)
  return out


def _pair(run: dict) -> tuple:
  """What a run is paired by: its seed and (k-fold) fold."""
  return run['seed'], run.get('fold')


def _pooled(pairs: list[tuple[dict, dict]]) -> tuple[np.ndarray, np.ndarray]:
  """Per-video values of a method and of the reference over paired runs -> each video's
  values averaged over the pairs that scored it on both sides, [V, 2] each, over the videos
  that the most pairs scored (a fixed split: every pair; k-fold: every seed of the video's
  fold)."""
  scored: dict[str, list] = {}
  for values, first in pairs:
    for video in set(values) & set(first):
      scored.setdefault(video, []).append((values[video], first[video]))
  most = max(map(len, scored.values()), default=0)
  mean = np.array([np.mean(scored[v], axis=0) for v in sorted(scored)
                   if len(scored[v]) == most]).reshape(-1, 2, 2)
  return mean[:, 0], mean[:, 1]


def validation_curves(results: dict[str, list[dict]], workdir: str
                      ) -> dict[str, tuple[list[int], np.ndarray]]:
  """{method: (steps, values[runs, steps])}: the validation metric of each method's task
  (``tasks.definition(task).curve_metric``) logged by every run (seed, fold) that names its
  ``log_dir`` (relative to ``workdir``; a headline row), at the steps all of them logged."""
  curves = {}
  for name, runs in results.items():
    metric = 'val/' + tasks.definition(runs[0]['task']).curve_metric
    logs = [validation_log(os.path.join(workdir, r['log_dir']), metric)
            for r in runs if 'log_dir' in r]
    logs = [log for log in logs if log]
    if logs:
      steps = sorted(set.intersection(*(set(log) for log in logs)))
      curves[name] = steps, np.array([[log[step] for step in steps] for log in logs])
  return curves


def validation_log(run_dir: str, metric: str) -> dict[int, float]:
  """{step: metric} of the metrics.jsonl in ``run_dir``."""
  path = os.path.join(run_dir, 'metrics.jsonl')
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    return {r['step']: r[metric] for r in map(json.loads, f) if metric in r}


def _curves(results: dict[str, list[dict]], workdir: str) -> None:
  """curves.png: each method's validation metric over steps; with several runs (seeds,
  folds) their mean, and their range shaded."""
  fig, ax = plt.subplots(figsize=(6, 4))
  for name, (steps, values) in validation_curves(results, workdir).items():
    runs = len(values)
    label = f'{name} (mean of {runs} runs)' if runs > 1 else name
    line, = ax.plot(steps, values.mean(axis=0), marker='.', label=label)
    if runs > 1:
      ax.fill_between(steps, values.min(axis=0), values.max(axis=0), color=line.get_color(),
                      alpha=0.2, linewidth=0)
  ax.set_xlabel('step')
  metrics = sorted({tasks.definition(runs[0]['task']).curve_metric for runs in results.values()})
  ax.set_ylabel('validation ' + ', '.join(metrics))
  if ax.lines:  # Runs without validation (k-fold) draw no curve.
    ax.legend()
  fig.tight_layout()
  fig.savefig(os.path.join(workdir, 'curves.png'), dpi=120)
  plt.close(fig)
