"""Exact evaluation of a split, and the files a user reads afterwards.

``evaluate_split`` runs a resolved run's model (``usvjax.core.run``: the program training
validates with) over every clip/video of a split exactly once (padding masked out, see
``input_pipeline.pipeline.eval_batches``), or, with
``config.input.eval_protocol='first_frame'``, streams every whole video from its first
frame's given mask (``usvjax.core.streaming``); every process gathers all
predictions, so metrics are exact and identical on every process. ``write_report`` writes
``metrics.json``, a per-video CSV and pictures (segmentation overlays; ROC and PR curves
and a confusion matrix for classification).
"""
from __future__ import annotations

import json
import os
from typing import NamedTuple

import jax
import numpy as np
from jax.experimental import multihost_utils
from tqdm import tqdm

from usvjax import interfaces
from usvjax.core import parallel
from usvjax.core import run as run_lib
from usvjax.errors import ConfigError
from usvjax.reporting import plots
from usvjax.reporting import provenance


def evaluate_split(run: run_lib.Run, split: str, variables: dict, builder=None
                   ) -> tuple[dict, interfaces.Evaluation]:
  """Evaluates ``variables`` on ``split`` of the run's data (or of ``builder``, a view of it
  such as ``speckled.SpeckledBuilder``) with the run's one eval step.

  An evaluation that scores against the stored data itself (segmentation at the frames'
  own size) has ``use_split(config, builder, split)``, called before the first batch.

  Returns:
    (metrics dict, the task's evaluation object holding per-frame/per-video rows).
  """
  config, mesh = run.config, run.mesh
  parallel.check_batch_size(config.input.eval_batch_size, mesh, 'eval batch size')
  builder = builder or run.builder
  batches, num_batches = run.eval_batches(split, builder)
  evaluation = run.task.evaluator()
  if hasattr(evaluation, 'use_split'):
    evaluation.use_split(config, builder, split)
  eval_step = run.eval_step()
  for batch in tqdm(batches, total=num_batches, desc=f'eval {split}', leave=False,
                    disable=jax.process_index() != 0):
    for outputs in eval_step(variables, batch, mesh):
      evaluation.update(jax.tree.map(np.asarray, multihost_utils.process_allgather(
          outputs, tiled=True)))
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


def calibrate(run: run_lib.Run, variables: dict) -> dict:
  """Lets a task that calibrates (a decision threshold chosen on validation data:
  ``task.calibrates``) evaluate ``dataset.eval_split`` first; returns what the report says
  about it ({} for other tasks)."""
  task, config = run.task, run.config
  if not getattr(task, 'calibrates', False):
    return {}
  if config.dataset.folds.num:
    raise ConfigError(f'config.task.threshold_rule={config.task.threshold_rule!r} chooses the '
                      'threshold on the validation split, which k-fold cross-validation does '
                      "not have: use 'fixed' there.")
  split = config.dataset.eval_split
  _, validation = evaluate_split(run, split, variables)
  return dict(task.calibrate(validation), threshold_split=split)


def evaluate_checkpoint(run: run_lib.Run, workdir: str, which: str = 'best', split: str = '',
                        output_dir: str = '') -> Report:
  """Restores a checkpoint of ``workdir`` and writes an exact report of ``split``.

  Args:
    run: the run's config, resolved (``run.resolve``; with ``split`` to check that split).
    workdir: the run directory (holds ``checkpoints/``).
    which: 'best', 'latest' or a step number.
    split: the split to evaluate (default ``config.dataset.test_split``).
    output_dir: where to write (default ``<workdir>/eval_<split>_step<N>``).

  Returns:
    The metrics, the evaluation object and the directory of the written report.
  """
  split = split or run.config.dataset.test_split
  variables, step = run.restore(workdir, which)
  calibration = calibrate(run, variables)
  metrics, evaluation = evaluate_split(run, split, variables)
  metrics = dict(metrics, **calibration, step=step, split=split, checkpoint=which,
                 dataset=dataset_record(run.builder, workdir))
  output_dir = output_dir or os.path.join(workdir, f'eval_{split}_step{step}')
  write_report(output_dir, metrics, evaluation, run.class_names())
  if jax.process_index() == 0:
    plots.training_curves(workdir, output_dir)
  return Report(metrics, evaluation, output_dir)
