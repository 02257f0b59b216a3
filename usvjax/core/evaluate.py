"""Exact evaluation of a split, and the files a user reads afterwards.

``evaluate_split`` runs a resolved run's model (``usvjax.core.run``: the program training
validates with) over every clip/video of a split exactly once (padding masked out, see
``input_pipeline.pipeline.eval_batches``), or, with
``config.input.eval_protocol='first_frame'``, streams every whole video from its first
frame's given mask (``usvjax.core.streaming``); every process gathers all
predictions, so metrics are exact and identical on every process. ``write_report`` writes
``metrics.json``, a per-video CSV and pictures (segmentation overlays; ROC and PR curves,
a confusion matrix and a reliability diagram for classification).

``evaluate_checkpoint`` follows ``config.evaluation`` (``experiments/evaluate.py``'s flags):
``tta`` ('flip': ``usvjax.core.tta``), ``clips`` (K > 1: a classifier's class probabilities
averaged over K frame samplings, ``input_pipeline.sequences.sampling_offsets``),
``weights`` ('raw': a run's trained parameters, not the EMA it keeps, see
``optimizer.ema_decay``) and ``calibrate`` (a temperature fitted on ``dataset.eval_split``,
written to ``<workdir>/calibration.json``, applied to the scored split; ``stored_temperature`` gives
it to ``classify_video``, export and predict). The validation pass that fits it (and
chooses a threshold by ``task.threshold_rule``) uses the same TTA and clips as the scored
split; metrics.json records ``tta``, ``clips`` and ``weights``.
"""
from __future__ import annotations

import json
import os
from typing import NamedTuple

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils
from tqdm import tqdm

from input_pipeline import pipeline
from input_pipeline import sequences
from usvjax import interfaces
from usvjax.core import parallel
from usvjax.core import run as run_lib
from usvjax.core import tta as tta_lib
from usvjax.errors import ConfigError
from usvjax.reporting import plots
from usvjax.reporting import provenance


CALIBRATION_FILE = 'calibration.json'


WEIGHTS = ('ema', 'raw')


def options(config: ml_collections.ConfigDict) -> dict:
  """``config.evaluation`` ({'tta', 'clips', 'calibrate', 'weights'}), its defaults where a
  run's saved config predates it."""
  given = config.get('evaluation') or {}
  chosen = {'tta': given.get('tta', 'none'), 'clips': int(given.get('clips', 1)),
            'calibrate': bool(given.get('calibrate', False)),
            'weights': given.get('weights', 'ema')}
  if chosen['weights'] not in WEIGHTS:
    raise ConfigError(f"--weights={chosen['weights']!r} (config.evaluation.weights): use "
                      f"one of {WEIGHTS} ('ema': the EMA weights where the run keeps them).")
  return chosen


def _sampled_batches(run: run_lib.Run, split: str, builder, clips: int):
  """(batches, how many) of each of the ``clips`` frame samplings of ``split``."""
  if clips == 1:
    yield run.eval_batches(split, builder)
    return
  for offset in sequences.sampling_offsets(clips):
    config = run.config.copy_and_resolve_references()
    config.input.eval_offset = offset
    yield pipeline.eval_batches(config, builder, run.source, split)


def evaluate_split(run: run_lib.Run, split: str, variables: dict, builder=None,
                   clips: int = 1) -> tuple[dict, interfaces.Evaluation]:
  """Evaluates ``variables`` on ``split`` of the run's data (or of ``builder``, a view of it
  such as ``speckled.SpeckledBuilder``) with the run's one eval step; a classifier with
  ``clips`` K > 1 on K frame samplings, its class probabilities averaged per video.

  An evaluation that scores against the stored data itself (segmentation at the frames'
  own size) has ``use_split(config, builder, split)``, called before the first batch.

  Returns:
    (metrics dict, the task's evaluation object holding per-frame/per-video rows).
  """
  config, mesh = run.config, run.mesh
  parallel.check_batch_size(config.input.eval_batch_size, mesh, 'eval batch size')
  builder = builder or run.builder
  evaluation = run.task.evaluator()
  if clips < 1 or (clips > 1 and not hasattr(evaluation, 'average_samplings')):
    raise ConfigError(f'--clips={clips} (config.evaluation.clips): K >= 1 frame samplings of '
                      'a video classifier; a segmenter takes --tta=flip instead.')
  if hasattr(evaluation, 'use_split'):
    evaluation.use_split(config, builder, split)
  eval_step = run.eval_step()
  for batches, num_batches in _sampled_batches(run, split, builder, clips):
    for batch in tqdm(batches, total=num_batches, desc=f'eval {split}', leave=False,
                      disable=jax.process_index() != 0):
      for outputs in eval_step(variables, batch, mesh):
        evaluation.update(jax.tree.map(np.asarray, multihost_utils.process_allgather(
            outputs, tiled=True)))
  if clips > 1:
    evaluation.average_samplings()
  return evaluation.result(), evaluation


def write_report(directory: str, metrics: dict, evaluation: interfaces.Evaluation,
                 class_names: list[str] | None = None) -> None:
  """Writes the evaluation's report (metrics.json, per_video.csv, its pictures) into
  ``directory`` (process 0 only)."""
  if jax.process_index() == 0:
    evaluation.write_report(directory, metrics, class_names)


def pictures(evaluation: interfaces.Evaluation) -> dict[str, np.ndarray]:
  """{name: uint8 RGB image} the evaluation shows (segmentation overlays) for
  TensorBoard; {} for evaluations without pictures and on processes other than 0."""
  if jax.process_index() != 0 or not hasattr(evaluation, 'pictures'):
    return {}
  return evaluation.pictures()


def export_predictions(report: 'Report') -> list[str]:
  """Writes the report's per-frame predictions into its directory (process 0 only;
  segmentation: ``predicted_masks/<video>/<frame>.png``); returns the paths."""
  if not hasattr(report.evaluation, 'export'):
    raise ConfigError(f'--export: the evaluation in {report.directory} has no predictions '
                      'to export.')
  return report.evaluation.export(report.directory) if jax.process_index() == 0 else []


class Report(NamedTuple):
  metrics: dict
  evaluation: interfaces.Evaluation
  directory: str


def dataset_record(builder, workdir: str) -> dict:
  """The evaluated data's fingerprint, with a warning if it is not the training run's."""
  data = provenance.data_fingerprint(builder)
  trained = provenance.recorded_data(workdir)
  if trained and not provenance.same_data(trained, data) and jax.process_index() == 0:
    tqdm.write(f'warning: the data differ from those the run in {workdir} was trained on '
               f'(now {json.dumps(data)}; then {json.dumps(trained)}).')
  return data


def calibrate(run: run_lib.Run, variables: dict, fit_temperature: bool = False,
              temperature: float = 1.0, clips: int = 1) -> dict:
  """Sets a classifier's temperature (``temperature``, or fitted on ``dataset.eval_split``
  with ``fit_temperature``) and lets a task that chooses its decision threshold there
  (``task.calibrates``) evaluate that split first; returns what the report says about
  them ({} for other tasks and nothing to do)."""
  task, config = run.task, run.config
  if not hasattr(task, 'temperature'):
    if fit_temperature:
      raise ConfigError(f'--calibrate fits a classifier\'s temperature; the run\'s task is '
                        f'{config.input.task}: evaluate it without --calibrate.')
    return {}
  task.temperature = temperature
  if not (fit_temperature or getattr(task, 'calibrates', False)):
    return {'temperature': temperature} if temperature != 1.0 else {}
  if config.dataset.folds.num:
    raise ConfigError(f'config.task.threshold_rule={config.task.threshold_rule!r} and '
                      '--calibrate use the validation split, which k-fold cross-validation '
                      "does not have: use threshold_rule 'fixed' and no --calibrate there.")
  split = config.dataset.eval_split
  _, validation = evaluate_split(run, split, variables, clips=clips)
  return dict(task.calibrate(validation, fit_temperature), threshold_split=split)


def stored_temperature(workdir: str, step: int) -> float:
  """The temperature ``evaluate --calibrate`` stored for checkpoint ``step`` of ``workdir``
  (1.0 where none is stored); an error if it was fitted on another checkpoint."""
  path = os.path.join(workdir, CALIBRATION_FILE)
  if not os.path.exists(path):
    return 1.0
  with open(path, encoding='utf-8') as f:
    stored = json.load(f)
  if stored['step'] != step:
    raise ConfigError(f'{path} holds the temperature of checkpoint step {stored["step"]}, '
                      f'not of step {step}: run python -m experiments.evaluate --calibrate '
                      f'--checkpoint={step} (or remove the file).')
  return float(stored['temperature'])


def stored_calibration(run: run_lib.Run, workdir: str, variables: dict, step: int) -> float:
  """Sets a classifier run's task as ``evaluate --calibrate`` left it for checkpoint ``step``
  (its stored temperature; a threshold rule's threshold, chosen on the validation split's
  scaled probabilities) for a tool that scores new videos; returns the temperature."""
  temperature = stored_temperature(workdir, step)
  calibrate(run.with_data() if getattr(run.task, 'calibrates', False) else run, variables,
            temperature=temperature)
  return temperature


def evaluate_checkpoint(run: run_lib.Run, workdir: str, which: str = 'best', split: str = '',
                        output_dir: str = '', calibration_file: str = CALIBRATION_FILE
                        ) -> Report:
  """Restores a checkpoint of ``workdir`` and writes an exact report of ``split``.

  Args:
    run: the run's config, resolved (``run.resolve``; with ``split`` to check that split).
    workdir: the run directory (holds ``checkpoints/``).
    which: 'best', 'latest' or a step number.
    split: the split to evaluate (default ``config.dataset.test_split``).
    output_dir: where to write (default ``<workdir>/eval_<split>_step<N>``).
    calibration_file: where in ``workdir`` ``--calibrate`` stores the temperature (another
      name where several rows score one checkpoint differently, e.g. the two-stage runner's
      frame-CNN rows: the readers take ``CALIBRATION_FILE``).

  Returns:
    The metrics, the evaluation object and the directory of the written report.
  """
  split = split or run.config.dataset.test_split
  chosen = options(run.config)
  run = tta_lib.with_tta(run, chosen['tta'])
  variables, step = run.restore(workdir, which, chosen['weights'])
  calibration = calibrate(run, variables, chosen['calibrate'], clips=chosen['clips'])
  if chosen['calibrate'] and jax.process_index() == 0:
    with open(os.path.join(workdir, calibration_file), 'w', encoding='utf-8') as f:
      json.dump(dict(calibration, step=step, checkpoint=which, tta=chosen['tta'],
                     clips=chosen['clips']), f, indent=2)
  metrics, evaluation = evaluate_split(run, split, variables, clips=chosen['clips'])
  metrics = dict(metrics, **calibration, step=step, split=split, checkpoint=which,
                 tta=chosen['tta'], clips=chosen['clips'], weights=chosen['weights'],
                 dataset=dataset_record(run.builder, workdir))
  output_dir = output_dir or os.path.join(workdir, f'eval_{split}_step{step}')
  write_report(output_dir, metrics, evaluation, run.class_names())
  if jax.process_index() == 0:
    plots.training_curves(workdir, output_dir)
  return Report(metrics, evaluation, output_dir)
