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
has a result of the same config and data (``usvjax.reporting.provenance``: the config saved in the
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
``usvjax.studies.cross_validation`` (``fold_config``: over ``dataset.train_split``, by patient
where the data has a group column, else by video, stratified by label; one assignment,
fixed by ``fold_seed``, for every method and seed), trained and scored as there
(``train_fold``, ``score_fold``): the final checkpoint on the held-out fold, since choosing
the best on it would leak it. A ``task.threshold_rule`` other than 'fixed' (a threshold
chosen on the validation split, which k-fold has none of) is refused before anything
trains.

Checkpoint-selection noise (a fixed split): with a handful of validation videos the
best-by-validation checkpoint is partly a lottery, which a spread over seeds does not show.
So each run also scores on the test split its last ``compare_report.LAST_CHECKPOINTS`` (3)
evaluated checkpoints (those validation scored that are still on disk: ``method_config``
keeps at least 3; a run made before kept 2), reusing the best one's report where it is one
of them. The headline row's result gets, for its task's curve metric ``<m>`` (what
validation logs, ``tasks.definition(task).curve_metric``; ``auc``), ``last_<m>`` (the last checkpoint's test score, at ``last_step``),
``last3_<m>_mean`` / ``_min`` / ``_max`` over those checkpoints (``last3_checkpoints``: how
many), and ``last3_video_dice`` / ``last3_video_probs``: each test video's value averaged
over them. The paired tests are then made twice (``compare_report``): on the
best-by-validation checkpoints, as before, and on that average of the last checkpoints.
The choice: score the average of the last checkpoints (each video's Dice, or its
probability, averaged over them, as the pooled tests average over seeds) rather than widen
the interval, so that one lucky or unlucky checkpoint cannot decide a comparison and the
test never selects anything. Cost: up to 3 more test evaluations per run, no training.
k-fold runs score their final checkpoint only (nothing is selected there).

The tables, curves and paired tests are written by ``compare_report``.
"""
from __future__ import annotations

import ast
import importlib
import json
import os
import shutil
import time
from collections.abc import Sequence
from typing import NamedTuple

import ml_collections
import numpy as np

from usvjax import interfaces
from usvjax import runners
from usvjax import tasks
from usvjax.core import checkpoint
from usvjax.core import evaluate as evaluate_lib
from usvjax.core import run as run_lib
from usvjax.errors import ConfigError
from usvjax.reporting import console
from usvjax.reporting import provenance
from usvjax.studies import compare_report
from usvjax.studies import cross_validation


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
  config.keep_checkpoints = max(config.keep_checkpoints, compare_report.LAST_CHECKPOINTS)
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
  # How many checkpoints are kept changes nothing a run computes (an older run kept 2).
  changed = provenance.differences(config, provenance.load_config(run_dir),
                                   ('keep_checkpoints',))
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
    console.say(f'{run_dir}: {outdated}; moved to {run_dir}.outdated, running again')
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
  frames = sum(report.metrics.get('scored_frames') or
               sum(row.get('num_frames', 0) for row in report.evaluation.video_rows())
               for report in reports.values())
  timing = dict(train_seconds=trained - start,
                eval_frames_per_second=frames / (time.perf_counter() - trained))
  rows = {row: dict(_row_result(report), **timing) for row, report in reports.items()}
  headline = runner.headline(config, run_dir)
  result = dict(rows.pop(headline.row), rows=rows)
  if not k_fold:
    result.update(last_checkpoints(headline, run_dir, reports[headline.row]))
  os.makedirs(run_dir, exist_ok=True)
  with open(path + '.tmp', 'w') as f:
    json.dump(result, f, indent=2)  # Unsorted: ``rows`` in the runner's order.
  os.replace(path + '.tmp', path)
  return result


def _row_result(report) -> dict:
  """A row's numeric metrics and per-video values for the paired tests."""
  result = {k: v for k, v in report.metrics.items() if isinstance(v, (int, float))}
  return dict(result, **report.evaluation.paired_values())


def evaluated_steps(config: ml_collections.ConfigDict, run_dir: str) -> list[int]:
  """The steps of the last ``compare_report.LAST_CHECKPOINTS`` checkpoints in ``run_dir``
  that validation scored (in its metrics.jsonl), oldest first."""
  metric = 'val/' + tasks.definition(config.input.task).curve_metric
  validated = compare_report.validation_log(run_dir, metric)
  with checkpoint.create_manager(run_dir, config.keep_checkpoints, read_only=True) as manager:
    saved = manager.all_steps()
  return sorted(set(saved) & set(validated))[-compare_report.LAST_CHECKPOINTS:]


def last_checkpoints(headline: interfaces.Headline, run_dir: str,
                     best: evaluate_lib.Report) -> dict:
  """What the headline row's last evaluated checkpoints score on the test split (module
  docstring); ``best`` is its best-by-validation report, reused for its step."""
  stage_dir = os.path.join(run_dir, headline.log_dir)
  steps = evaluated_steps(headline.config, stage_dir)
  if not steps:
    return {}
  split = headline.config.dataset.test_split
  scored, run = [], None
  for step in steps:
    if step == best.metrics.get('step'):
      scored.append(best)
      continue
    run = run or run_lib.resolve(headline.config, split)
    scored.append(evaluate_lib.evaluate_checkpoint(run, stage_dir, str(step), split))
  metric = tasks.definition(headline.config.input.task).curve_metric
  values = [report.metrics[metric] for report in scored]
  last = compare_report.LAST_PREFIX
  out = {'last_step': steps[-1], f'last_{metric}': values[-1],
         f'{last}{metric}_mean': float(np.mean(values)), f'{last}{metric}_min': min(values),
         f'{last}{metric}_max': max(values), f'{last}checkpoints': len(steps)}
  for key, first in scored[0].evaluation.paired_values().items():
    per_video = [report.evaluation.paired_values()[key] for report in scored]
    out[last + key] = {video: np.mean([v[video] for v in per_video], axis=0).tolist()
                       for video in first}
  return out


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
      console.say(f'{method.name}, seed {seed}' + ('' if fold is None else f', fold {fold}') +
                f': {os.path.join(workdir, run_name)}')
      result = run_one(config, os.path.join(workdir, run_name))
      setting = dict(_setting(method, config), seed=seed, task=headline_task(config),
                     **({} if fold is None else {'fold': fold}))
      log_dir = os.path.join(run_name, runners.get(config).headline(config).log_dir)
      results.setdefault(method.name, []).append(
          dict({k: v for k, v in result.items() if k != 'rows'}, **setting, log_dir=log_dir))
      for row, row_result in result.get('rows', {}).items():
        results.setdefault(f'{method.name}/{row}', []).append(dict(row_result, **setting))
  compare_report.write(results, workdir, reference)
  return results
