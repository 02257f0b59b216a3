"""The one training loop: ``train_and_evaluate(config, workdir)`` for every model and task.

The config names the model (``config.model``), the task (``config.input.task``), the data
(``config.dataset``, ``config.input``) and the optimizer; this file never names a method.

* Data parallel: ``jax.jit`` over a 1-D ``'data'`` mesh; parameters replicated, batches
  sharded on their leading axis (see ``parallel``). The train state is donated.
* RNG: one root key from ``config.seed``; ``fold_in(key, step)`` inside the step.
* Accelerator switches: ``config.compute_dtype`` and ``config.remat`` (``execution.wrap``:
  bfloat16 compute with float32 parameters, rematerialised backbone blocks),
  ``config.optimizer.accumulate_steps`` (gradient accumulation, ``make_train_step``),
  ``config.profile_steps`` (a ``jax.profiler`` trace in the TensorBoard folder, ``Profiler``).
* Checkpoints every ``checkpoint_every`` steps and at the end (last ``keep_checkpoints``
  plus the best by ``config.best_metric``); a run restarted in the same workdir resumes
  from the latest checkpoint, data stream included, and ends with the same parameters as
  an uninterrupted run.
* No host sync per step: the step's metrics stay on the device until a logging,
  evaluation or checkpoint step, where they are fetched together. A non-finite loss (or
  non-finite updated parameters) is found there and stops the run with the number of the
  first bad step, before anything is saved: the last checkpoint stays good.
* Logs: a tqdm progress bar (step, loss, frames/s), TensorBoard scalars and
  ``metrics.jsonl`` in the workdir; only process 0 writes.
"""
from __future__ import annotations

import functools
import os
import time

import jax
import ml_collections
import numpy as np
from tqdm import tqdm

from input_pipeline import pipeline
from usvjax import checkpoint
from usvjax import evaluate
from usvjax import execution
from usvjax import models
from usvjax import optim
from usvjax import parallel
from usvjax import run_checks
from usvjax import state as state_lib
from usvjax import tasks
from usvjax import train_logs
from usvjax import train_step as train_step_lib
from usvjax import workdir as workdir_lib


class NonFiniteLossError(FloatingPointError):
  """The loss became NaN or infinite."""


def _frames_per_batch(batch: dict) -> int:
  """Real (not padding) frames in the global batch, estimated from this process's share."""
  return int(np.sum(batch['valid'])) * jax.process_count()


def _check_finite(pending: list[tuple[int, dict]], manager) -> dict[str, float]:
  """Fetches the metrics of the steps since the last check (one host sync) and returns
  the last step's; stops the run at the first step whose loss or updated parameters are
  not finite.

  The loss of step s is computed from the parameters before the update, so the parameter
  norm after the update is checked too: no checkpoint ever holds non-finite parameters.
  """
  fetched = jax.device_get(pending)
  pending.clear()
  for step, metrics in fetched:
    loss, param_norm = float(metrics['loss']), float(metrics['param_norm'])
    if not (np.isfinite(loss) and np.isfinite(param_norm)):
      what = f'loss is {loss}' if not np.isfinite(loss) else 'parameters became non-finite'
      last = manager.latest_step()
      kept = ('no checkpoint had been saved yet' if last is None else
              f'the last good checkpoint is step {last} in {manager.directory}')
      raise NonFiniteLossError(
          f'{what} at step {step}. Training stopped; {kept}. Lower config.optimizer.lr, '
          'enable config.optimizer.clip_norm, or check the input data.')
  return {k: float(v) for k, v in fetched[-1][1].items()}


def _save(manager, step: int, state: state_lib.TrainState, metrics: dict | None,
          workdir: str) -> None:
  """Saves a checkpoint; a full or read-only filesystem is one ``WorkdirError``, raised
  before writing where it can be foreseen (free space below the state's uncompressed size,
  an upper bound of what Orbax writes)."""
  what, then = f'the checkpoint of step {step}', train_logs.resume_hint(workdir)
  if jax.process_index() == 0:
    needed = sum(x.nbytes for x in jax.tree.leaves(state))
    workdir_lib.check_space(workdir, needed, what, then)
  with workdir_lib.writing(workdir, what, then):
    checkpoint.save(manager, step, state, metrics)


def _validate(evaluator, writer: train_logs.Writer, step: int, state: state_lib.TrainState
              ) -> dict[str, float]:
  """Evaluates the validation split, logs its metrics and overlays at ``step``."""
  eval_metrics, evaluation = evaluator(state.variables())
  writer.write(step, {f'val/{k}': v for k, v in eval_metrics.items()})
  writer.images(step, {f'val_overlay/{k}': v for k, v in evaluate.pictures(evaluation).items()})
  headline = ('mean_dice', 'pooled_dice', 'accuracy', 'auc', 'contrastive_accuracy')
  train_logs.say(f'step {step} validation: ' + ', '.join(
      f'{k}={v:.4f}' for k, v in eval_metrics.items() if k.startswith(headline)))
  return eval_metrics


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str) -> tuple[state_lib.TrainState, dict[str, float]]:
  """Trains ``config`` in ``workdir`` (resuming if it holds checkpoints), holding the
  workdir's lock (``usvjax.workdir``: one trainer per directory).

  Returns:
    The final train state (replicated) and the validation metrics at the last step.
  """
  with workdir_lib.hold(workdir):
    return _train_and_evaluate(config, workdir)


def _train_and_evaluate(config: ml_collections.ConfigDict,
                        workdir: str) -> tuple[state_lib.TrainState, dict[str, float]]:
  """``train_and_evaluate`` while the workdir's lock is held."""
  mesh = parallel.create_mesh()
  parallel.check_batch_size(config.input.batch_size, mesh)
  builder = pipeline.get_builder(config.dataset)
  run_checks.check_run(config, builder)
  model = execution.wrap(models.create_model(config.model), config)
  task = tasks.create_task(config)
  tx = optim.create_optimizer(config)
  manager = checkpoint.create_manager(workdir, config.keep_checkpoints, config.best_metric,
                                      config.best_mode)
  start_step = manager.latest_step() or 0
  batches = pipeline.train_batches(config, builder, start_step)
  fields = pipeline.batch_spec(config, True, builder.info.features)
  state = state_lib.init_state(model, tx, state_lib.init_batch(config, fields), config.seed,
                               mesh)
  if start_step:
    state = checkpoint.restore(manager, start_step, state)
    train_logs.say(f'resumed from step {start_step} ({manager.directory})' + (
        f': nothing left to train (config.total_steps={config.total_steps}); raise '
        'total_steps to train on, or evaluate the run' if start_step >= config.total_steps
        else ''))
  elif config.init.checkpoint:
    state = state_lib.load_pretrained(state, config.init.checkpoint, config.init.target)
    state = jax.device_put(state, parallel.replicated(mesh))
    train_logs.say(f'initialised {config.init.target!r} from {config.init.checkpoint}')
  step_fn = train_step_lib.jit_train_step(train_step_lib.make_train_step(model, task, tx, config.seed,
                                           config.optimizer.accumulate_steps), mesh)
  profiler = train_logs.Profiler(config.profile_steps, start_step, os.path.join(workdir, 'tensorboard'))
  writer = train_logs.Writer(workdir, start_step)
  eval_step = evaluate.make_eval_step(model, task, config.input.eval_protocol)
  evaluator = functools.partial(evaluate.evaluate_split, eval_step, task, config, builder,
                                config.dataset.eval_split, mesh)
  eval_metrics: dict[str, float] = {}
  progress = tqdm(total=config.total_steps, initial=start_step, desc='train', unit='step',
                  disable=jax.process_index() != 0, dynamic_ncols=True)
  batch = next(batches) if start_step < config.total_steps else None
  tick, frames, pending = time.perf_counter(), 0, []
  try:
    if config.total_steps == 0 and manager.latest_step() is None:
      # Pretrained weights evaluated as they are: step 0 is their checkpoint.
      eval_metrics = _validate(evaluator, writer, 0, state)
      _save(manager, 0, state, eval_metrics, workdir)
    for step in range(start_step + 1, config.total_steps + 1):
      profiler.before(step)
      state, metrics = step_fn(state, parallel.global_batch(batch, mesh))
      profiler.after(step, metrics)
      pending.append((step, metrics))
      frames += _frames_per_batch(batch)
      if step < config.total_steps:
        batch = next(batches)  # Overlaps host input work with the device step.
      progress.update(1)
      logged = step % config.log_every == 0 or step == config.total_steps
      evaluated = step % config.eval_every == 0 or step == config.total_steps
      if not (logged or evaluated or step % config.checkpoint_every == 0):
        continue
      last = _check_finite(pending, manager)
      if logged:
        elapsed = time.perf_counter() - tick
        scalars = {f'train/{k}': v for k, v in last.items()}
        scalars['train/frames_per_second'] = frames / max(elapsed, 1e-9)
        scalars['train/learning_rate'] = float(optim.learning_rate_schedule(config)(step - 1))
        writer.write(step, scalars)
        progress.set_postfix(loss=f"{last['loss']:.4f}",
                             fps=f"{scalars['train/frames_per_second']:.1f}")
        tick, frames = time.perf_counter(), 0
      if evaluated:
        eval_metrics = _validate(evaluator, writer, step, state)
      if evaluated or step % config.checkpoint_every == 0:
        _save(manager, step, state, eval_metrics if evaluated else None, workdir)
  finally:
    profiler.close()
    progress.close()
    writer.close()
    manager.close()  # Waits for a save in flight.
  return state, eval_metrics
