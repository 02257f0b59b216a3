"""Methods side by side on one dataset: the same split (or folds), input size, step budget
and seeds.

A comparison is a list of methods, each ``name=configs/<method>.py:<variant>`` optionally
followed by its own overrides (``;key=value;...``), plus overrides shared by every method
(the dataset, the input size, the number of steps, ...). Values may name ``{workdir}``,
``{seed}`` and, with folds, ``{fold}`` (e.g. ``init.checkpoint={workdir}/clman_cl/seed{seed}``:
a pretraining run of the same comparison, listed before the method that loads it).

Each (method, seed) trains in ``<workdir>/<name>/seed<seed>`` (an interrupted run resumes
from its checkpoint); its best checkpoint is then evaluated exactly on the test split, and
the result is written to ``result.json`` there, atomically. A rerun skips every run that
has a result of the same config and data (``usvjax.provenance``: the config saved in the
run directory, the data fingerprint), so an interrupted comparison finishes only what is
left, and a changed config or dataset is run again. Each run is trained and scored by its
runner (``usvjax.runners``), and every row the runner scores is reported: the runner's
headline row under the method's name (a two-stage config: its variable-frame CNN-LSTM;
CLMAN: the classifier after its own pretraining), any other row as ``<name>/<row>`` (a
two-stage config's ``cnn_vote``, ``cnn_aver``, ``key_frame``, ``equal_frame_lstm``). The
headline's task (``usvjax.tasks``) gives the columns of all of a run's rows, one table per
task.

k-fold cross-validation (``folds`` = k > 0): every (method, seed, fold) is a run, in
``<workdir>/<name>/fold_<fold>/seed<seed>``, with the folds of
``usvjax.cross_validation`` (``fold_config``: over ``dataset.train_split``, by patient
where the data has a group column, else by video, stratified by label; one assignment,
fixed by ``fold_seed``, for every method and seed), trained and scored as there
(``train_fold``, ``score_fold``): the final checkpoint on the held-out fold, since choosing
the best on it would leak it. A ``task.threshold_rule`` other than 'fixed' (a threshold
chosen on the validation split, which k-fold has none of) is refused before anything
trains.

Written to ``workdir``: ``results.md`` (mean ± std over seeds, and folds, the papers'
columns, train time and evaluation frames/s: for a run of several rows, all its rows'
frames over the time of scoring them all), ``results.csv`` (one line per row of each run:
dataset, image_size, steps, method, variant, [fold,] seed, task, then every metric) and
``curves.png`` (the validation metric over training steps of every headline row: mean over
its runs, range shaded; with folds, validation scores the held-out fold).

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

import ast
import csv
import importlib
import json
import os
import shutil
import time
from collections.abc import Sequence
from typing import NamedTuple

import matplotlib
import ml_collections
import numpy as np

from usvjax.errors import ConfigError
from usvjax import cross_validation
from usvjax.metrics import statistics
from usvjax import provenance
from usvjax import run as run_lib
from usvjax import runners
from usvjax import tables
from usvjax import tasks
from usvjax import train_logs

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position

TIMING = {'train s': 'train_seconds', 'eval frames/s': 'eval_frames_per_second'}


class Method(NamedTuple):
  name: str
  config: str  # 'configs/<method>.py:<variant>'
  overrides: dict[str, str]


def parse_method(spec: str) -> Method:
  """'name=configs/x.py:variant;key=value;...' -> Method."""
  head, *overrides = spec.split(';')
  name, sep, config = head.partition('=')
  if not sep or not name or ':' not in config and not config.endswith('.py'):
    raise ConfigError(f'method {spec!r}: write NAME=configs/<method>.py:<variant>[;key=value].')
  return Method(name.strip(), config.strip(), parse_overrides(overrides))


def parse_overrides(items: Sequence[str]) -> dict[str, str]:
  """['key=value', ...] -> {key: value}."""
  out = {}
  for item in items:
    key, sep, value = item.partition('=')
    if not sep:
      raise ConfigError(f'override {item!r}: write key=value (e.g. input.image_size=64).')
    out[key.strip()] = value.strip()
  return out


def method_config(method: Method, shared: dict[str, str], seed: int, workdir: str,
                  fold: int | None = None) -> ml_collections.ConfigDict:
  """The method's config with the shared overrides, then its own, and the seed; values
  may name ``{workdir}``, ``{seed}`` and (a k-fold run) ``{fold}``."""
  path, _, variant = method.config.partition(':')
  module = os.path.splitext(path)[0].replace('/', '.')
  config = importlib.import_module(module).get_config(variant or None)
  fields = dict(workdir=workdir, seed=seed, **({} if fold is None else {'fold': fold}))
  for key, value in {**shared, **method.overrides}.items():
    try:
      value = value.format(**fields)
    except KeyError as e:
      raise ConfigError(f'method {method.name!r}: {key}={value!r} names {{{e.args[0]}}}; '
                        f'known here: {", ".join("{%s}" % f for f in fields)}.') from e
    _set(config, key, _value(value), method.name)
  config.seed = seed
  return config


def _value(text: str):
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def _set(config: ml_collections.ConfigDict, key: str, value, method: str) -> None:
  *parents, leaf = key.split('.')
  node = config
  try:
    for parent in parents:
      node = node[parent]
    old = node[leaf]
  except KeyError as e:
    raise ConfigError(f'method {method!r}: the config has no key {key!r}.') from e
  node[leaf] = type(old)(value) if isinstance(old, float) and isinstance(value, int) else value


def headline_task(config: ml_collections.ConfigDict) -> str:
  """The task of the row a comparison reports for ``config``."""
  return runners.get(config).headline(config).config.input.task


def _outdated(config: ml_collections.ConfigDict, run_dir: str) -> str:
  """Why the run in ``run_dir`` is not a run of ``config`` on today's data ('' if it is)."""
  if not os.path.exists(os.path.join(run_dir, provenance.CONFIG_FILE)):
    return 'it records no config'
  changed = provenance.differences(config, provenance.load_config(run_dir))
  if changed:
    return f'its config differs ({"; ".join(changed[:3])})'
  data = provenance.data_fingerprint(run_lib.prepare_dataset(config.dataset))
  if not provenance.same_data(provenance.recorded_data(run_dir), data):
    return 'its data changed'
  return ''


def run_one(config: ml_collections.ConfigDict, run_dir: str) -> dict:
  """Trains (or resumes) one run and scores it once: its best checkpoint(s) on the test
  split, or with k-fold (``config.dataset.folds.num``) its final ones on the held-out fold.

  A finished or partial run in ``run_dir`` of another config or other data is moved to
  ``<run_dir>.outdated`` (replacing an older one there) and the run is made again.

  Returns:
    The headline row's result (its numeric metrics, per-video values for the paired
    tests, ``train_seconds``, ``eval_frames_per_second``) with ``rows``: {row: result} of
    the runner's other rows, in its order (as written to ``result.json``; one written
    before rows were kept has none).
  """
  path = os.path.join(run_dir, 'result.json')
  outdated = _outdated(config, run_dir) if os.path.exists(run_dir) else ''
  if outdated:
    train_logs.say(f'{run_dir}: {outdated}; moved to {run_dir}.outdated, running again')
    shutil.rmtree(run_dir + '.outdated', ignore_errors=True)
    os.replace(run_dir, run_dir + '.outdated')
  elif os.path.exists(path):
    with open(path) as f:
      return json.load(f)
  runner = runners.get(config)
  k_fold = bool(config.dataset.folds.num)
  start = time.perf_counter()
  (cross_validation.train_fold if k_fold else runners.train)(config, run_dir)
  trained = time.perf_counter()
  reports = (cross_validation.score_fold(config, run_dir) if k_fold else
             runners.evaluate(config, run_dir))
  frames = sum(report.metrics.get('num_frames') or
               sum(row.get('num_frames', 0) for row in report.evaluation.video_rows())
               for report in reports.values())
  timing = dict(train_seconds=trained - start,
                eval_frames_per_second=frames / (time.perf_counter() - trained))
  rows = {row: dict(_row_result(report), **timing) for row, report in reports.items()}
  result = dict(rows.pop(runner.headline(config).row), rows=rows)
  os.makedirs(run_dir, exist_ok=True)
  with open(path + '.tmp', 'w') as f:
    json.dump(result, f, indent=2)  # Unsorted: ``rows`` in the runner's order.
  os.replace(path + '.tmp', path)
  return result


def _row_result(report) -> dict:
  """A row's numeric metrics and per-video values for the paired tests."""
  result = {k: v for k, v in report.metrics.items() if isinstance(v, (int, float))}
  rows = report.evaluation.video_rows()
  if rows and 'dice' in rows[0]:  # {video: [its mean Dice, its frames]}, for the paired tests.
    result['video_dice'] = {r['video_id']: [r['dice'], r['num_frames']] for r in rows}
  probs = [k for k in (rows[0] if rows else {}) if k.startswith('prob_')]
  if len(probs) == 2:  # Binary classification: {video: [p(class 1), label]}.
    result['video_probs'] = {r['video_id']: [r[probs[1]], r['label']] for r in rows}
  return result


def _setting(method: Method, config: ml_collections.ConfigDict) -> dict:
  """The columns that say what a run was: dataset, image size, steps and the variant (the
  method's config and its own overrides)."""
  variant = ';'.join([method.config] + [f'{k}={v}' for k, v in method.overrides.items()])
  return {**provenance.setting(config), 'variant': variant}


def run(methods: Sequence[Method], shared: dict[str, str], seeds: Sequence[int],
        workdir: str, folds: int = 0, fold_seed: int = 0,
        reference: str | None = None) -> dict[str, list[dict]]:
  """Runs every (method, seed) not yet done, or with ``folds`` = k > 0 every (method, seed,
  fold) of k-fold cross-validation (the folds' assignment fixed by ``fold_seed``), and
  writes the tables, every row tested against ``reference`` (a row's name; default the
  first method); {row: [results]} (each result with its ``seed``, ``fold`` with k-fold,
  and ``task``; a run's headline row under the method's name, its other rows as
  ``<name>/<row>``)."""
  names = [m.name for m in methods]
  if reference is not None and reference.split('/')[0] not in names:
    raise ConfigError(f'reference {reference!r} is not a method of this comparison; name one '
                      f'of {names} (or a row of one, e.g. {names[0]}/<row>).')
  runs = [(method, seed, fold) for method in methods for seed in seeds
          for fold in (range(folds) if folds else [None])]
  configs = []
  for method, seed, fold in runs:  # Every config first: a bad one stops before any training.
    config = method_config(method, shared, seed, workdir, fold)
    configs.append(config if fold is None else
                   cross_validation.fold_config(config, folds, fold, fold_seed))
  results: dict[str, list[dict]] = {}
  with run_lib.prepared_once():  # One preparation of the dataset for every run.
    for (method, seed, fold), config in zip(runs, configs):
      run_name = os.path.join(method.name, *([] if fold is None else [f'fold_{fold}']),
                              f'seed{seed}')
      train_logs.say(f'{method.name}, seed {seed}' + ('' if fold is None else f', fold {fold}') +
                f': {os.path.join(workdir, run_name)}')
      result = run_one(config, os.path.join(workdir, run_name))
      setting = dict(_setting(method, config), seed=seed, task=headline_task(config),
                     **({} if fold is None else {'fold': fold}))
      log_dir = os.path.join(run_name, runners.get(config).headline(config).log_dir)
      results.setdefault(method.name, []).append(
          dict({k: v for k, v in result.items() if k != 'rows'}, **setting, log_dir=log_dir))
      for row, row_result in result.get('rows', {}).items():
        results.setdefault(f'{method.name}/{row}', []).append(dict(row_result, **setting))
  _write(results, workdir, reference)
  return results


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


def _write(results: dict[str, list[dict]], workdir: str, reference: str | None = None) -> None:
  """<tables>.md (one table per task), <tables>.csv (one line per run) and curves.png, with
  paired tests against ``reference`` (default: the first method); <tables>:
  ``tables_name(reference)``."""
  if not results:
    return
  by_task = _by_task(results)
  paired = paired_tests(results, reference)
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
    if paired:
      first = next(iter(paired.values()))
      metric = {'dice': 'Dice', 'auc': 'AUC'}[first['metric']]
      pooled = 'held-out videos of every fold, seeds' if folds else 'test videos, seeds'
      f.write(f'\n\n{metric} against {first["reference"]} (paired bootstrap over the '
              f'{pooled} pooled):\n\n')
      f.write(tables.markdown(
          {name: [f'{t["difference"]:+.4f}', f'[{t["ci95_lo"]:+.4f}, {t["ci95_hi"]:+.4f}]',
                  f'{t["p"]:.4f}'] for name, t in paired.items()},
          [f'{metric} difference', '95% CI', 'p'], 'method'))
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


def paired_tests(results: dict[str, list[dict]],
                 reference: str | None = None) -> dict[str, dict]:
  """{method: paired test against ``reference`` (a row of ``results``; default the first
  method), runs pooled, with 'reference' and 'metric'} over the methods whose runs carry
  per-video values (``PAIRED_TESTS``: Dice for segmentation, AUC for binary
  classification). Each run also gets ``paired_<metric>_*`` against the reference's run of
  its seed (and fold); pooled, each video's value is averaged over the pairs of runs that
  scored it (its seeds) first. Only videos both scored count."""
  kinds = [k for k in PAIRED_TESTS
           if sum(all(k in r for r in runs) for runs in results.values()) >= 2]
  if not kinds:
    return {}
  key, (metric, test) = kinds[0], PAIRED_TESTS[kinds[0]]
  names = [n for n, runs in results.items() if all(key in r for r in runs)]
  reference = names[0] if reference is None else reference
  if reference not in names:
    raise ConfigError(f'reference {reference!r} has no per-video {metric} to pair with; '
                      f'name one of {names}.')
  by_pair = {_pair(r): r[key] for r in results[reference]}
  out = {}
  for name in (n for n in names if n != reference):
    pairs = [(run, by_pair[_pair(run)]) for run in results[name] if _pair(run) in by_pair]
    for run, first in pairs:
      videos = sorted(set(first) & set(run[key]))
      found = test(np.array([run[key][v] for v in videos]), np.array([first[v] for v in videos]))
      run.update({f'paired_{metric}_{k}': v for k, v in found.items()})
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
    logs = [_validation_log(os.path.join(workdir, r['log_dir']), metric)
            for r in runs if 'log_dir' in r]
    logs = [log for log in logs if log]
    if logs:
      steps = sorted(set.intersection(*(set(log) for log in logs)))
      curves[name] = steps, np.array([[log[step] for step in steps] for log in logs])
  return curves


def _validation_log(run_dir: str, metric: str) -> dict[int, float]:
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
  ax.legend()
  fig.tight_layout()
  fig.savefig(os.path.join(workdir, 'curves.png'), dpi=120)
  plt.close(fig)
