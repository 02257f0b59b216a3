"""Exact evaluation of a split, and the files a user reads afterwards.

``evaluate_split`` runs the model over every clip/video of a split exactly once (padding
masked out, see ``input_pipeline.pipeline.eval_batches``), or, with
``config.input.eval_protocol='first_frame'``, streams every whole video from its first
frame's given mask (``usvjax.streaming``); every process gathers all
predictions, so metrics are exact and identical on every process. ``write_report`` writes
``metrics.json``, a per-video CSV and pictures (segmentation overlays; ROC and PR curves
and a confusion matrix for classification).
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
from usvjax import checkpoint
from usvjax.errors import ConfigError
from usvjax import interfaces
from usvjax import models
from usvjax import parallel
from usvjax import plots
from usvjax import provenance
from usvjax import run_checks
from usvjax import state as state_lib
from usvjax import streaming
from usvjax import tasks


def make_eval_step(model, task, protocol: str = 'clip'):
  """The evaluation step: ``eval_step(variables, local_batch, mesh)`` yields the task's eval
  outputs (global arrays) for the batch's examples.

  ``protocol`` 'clip' runs the model once on the batch of clips (or sequences);
  'first_frame' streams batches of whole videos (``streaming.first_frame_eval_step``).
  Make it once per run: each new step function would be compiled again.
  """
  if protocol == 'first_frame':
    return streaming.first_frame_eval_step(model, task)

  @jax.jit
  def forward(variables, batch):
    return task.eval_outputs(model.apply(variables, batch, train=False), batch)

  def eval_step(variables, batch, mesh):
    yield forward(variables, parallel.global_batch(batch, mesh))
  return eval_step


def evaluate_split(eval_step, task, config: ml_collections.ConfigDict, builder, split: str,
                   mesh: jax.sharding.Mesh, variables: dict):
  """Evaluates ``variables`` on ``split`` with ``eval_step`` (from ``make_eval_step``).

  An evaluation that scores against the stored data itself (segmentation at the frames'
  own size) has ``use_split(config, builder, split)``, called before the first batch.

  Returns:
    (metrics dict, the task's evaluation object holding per-frame/per-video rows).
  """
  parallel.check_batch_size(config.input.eval_batch_size, mesh, 'eval batch size')
  batches, num_batches = pipeline.eval_batches(config, builder, split)
  evaluation = task.evaluator()
  if hasattr(evaluation, 'use_split'):
    evaluation.use_split(config, builder, split)
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


def restore_variables(config: ml_collections.ConfigDict, workdir: str, which: str, model,
                      mesh: jax.sharding.Mesh, features=None) -> tuple[dict, int]:
  """The ``params`` and ``batch_stats`` of checkpoint ``which`` ('best', 'latest' or a
  step) of ``workdir``, replicated over ``mesh``, and its step.

  The checkpoint's structure comes from ``jax.eval_shape`` of the model's initialisation
  on the batch specification (``features``: the dataset's, see ``pipeline.batch_spec``):
  no data is read, and the optimizer state is neither built nor restored.
  """
  with checkpoint.create_manager(workdir, config.keep_checkpoints, config.best_metric,
                                 config.best_mode, read_only=True) as manager:
    step = checkpoint.resolve_step(manager, which)
    batch = state_lib.init_batch(config, pipeline.batch_spec(config, True, features))
    abstract = state_lib.abstract_variables(model, batch, mesh)
    return checkpoint.restore_variables(manager, step, abstract), step


def dataset_record(builder, workdir: str) -> dict:
  """The evaluated data's fingerprint, with a warning if it is not the training run's."""
  data = provenance.data_fingerprint(builder)
  trained = provenance.recorded_data(workdir)
  if trained and not provenance.same_data(trained, data) and jax.process_index() == 0:
    tqdm.write(f'warning: the data differ from those the run in {workdir} was trained on '
               f'(now {json.dumps(data)}; then {json.dumps(trained)}).')
  return data


def calibrate(task: interfaces.Task, eval_step, config: ml_collections.ConfigDict, builder,
              mesh: jax.sharding.Mesh, variables: dict) -> dict:
  """Lets a task that calibrates (a decision threshold chosen on validation data:
  ``task.calibrates``) evaluate ``dataset.eval_split`` first; returns what the report says
  about it ({} for other tasks)."""
  if not getattr(task, 'calibrates', False):
    return {}
  if config.dataset.folds.num:
    raise ConfigError(f'config.task.threshold_rule={config.task.threshold_rule!r} chooses the '
                      'threshold on the validation split, which k-fold cross-validation does '
                      "not have: use 'fixed' there.")
  split = config.dataset.eval_split
  _, validation = evaluate_split(eval_step, task, config, builder, split, mesh, variables)
  return dict(task.calibrate(validation), threshold_split=split)


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str, which: str = 'best',
                        split: str = '', output_dir: str = '') -> Report:
  """Restores a checkpoint of ``workdir`` and writes an exact report of ``split``.

  Args:
    config: the run's config.
    workdir: the run directory (holds ``checkpoints/``).
    which: 'best', 'latest' or a step number.
    split: the split to evaluate (default ``config.dataset.test_split``).
    output_dir: where to write (default ``<workdir>/eval_<split>_step<N>``).

  Returns:
    The metrics, the evaluation object and the directory of the written report.
  """
  split = split or config.dataset.test_split
  mesh = parallel.create_mesh()
  builder = pipeline.get_builder(config.dataset)
  run_checks.check_run(config, builder, split)
  model, task = models.create_model(config.model), tasks.create_task(config)
  variables, step = restore_variables(config, workdir, which, model, mesh,
                                      builder.info.features)
  eval_step = make_eval_step(model, task, config.input.eval_protocol)
  calibration = calibrate(task, eval_step, config, builder, mesh, variables)
  metrics, evaluation = evaluate_split(eval_step, task, config, builder,
                                       split, mesh, variables)
  metrics = dict(metrics, **calibration, step=step, split=split, checkpoint=which,
                 dataset=dataset_record(builder, workdir))
  output_dir = output_dir or os.path.join(workdir, f'eval_{split}_step{step}')
  class_names = None
  if 'label' in builder.info.features:
    class_names = builder.info.features['label'].names
  write_report(output_dir, metrics, evaluation, class_names)
  if jax.process_index() == 0:
    plots.training_curves(workdir, output_dir)
  return Report(metrics, evaluation, output_dir)
