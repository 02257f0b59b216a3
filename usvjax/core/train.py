"""The one training loop: ``train_and_evaluate(run, workdir)`` for every model and task.

``run`` is the config resolved once (``usvjax.core.run``): its prepared data, example source,
task, wrapped model and mesh; the config still gives the optimizer and the schedule. This
file never names a method.

* Data parallel: ``jax.jit`` over a 1-D ``'data'`` mesh; parameters replicated, batches
  sharded on their leading axis (see ``parallel``). The train state is donated.
* RNG: one root key from ``config.seed``; ``fold_in(key, step)`` inside the step.
* Accelerator switches: ``config.compute_dtype`` and ``config.remat`` (``execution.wrap``:
  bfloat16 compute with float32 parameters, rematerialised backbone blocks),
  ``config.optimizer.accumulate_steps`` (gradient accumulation, ``train_step.make_train_step``),
  ``config.profile_steps`` (a ``jax.profiler`` trace in the TensorBoard folder,
  ``train_logs.Profiler``).
* Checkpoints every ``checkpoint_every`` steps and at the end (last ``keep_checkpoints``
  plus the best by ``config.best_metric``); a run restarted in the same workdir resumes
  from the latest checkpoint, data stream included, and ends with the same parameters as
  an uninterrupted run.
* No host sync per step: the step's metrics stay on the device until a logging,
  evaluation or checkpoint step, where they are fetched together. A non-finite loss (or
  non-finite updated parameters) is found there and stops the run with the number of the
  first bad step, before anything is saved: the last checkpoint stays good.
* Evaluations (``Validation``): ``dataset.eval_split`` every ``eval_every`` steps and at
  the end (``val/``; it ranks checkpoints), and every evaluation of ``config.evals``
  (``<name>/``: a second split, or a split with speckle), all with the one eval step that
  ``evaluate`` scores checkpoints with, applied to the EMA weights where
  ``config.optimizer.ema_decay`` > 0 keeps them (``state.EmaTrainState``).
* Early stopping: with ``config.early_stopping_patience`` > 0, training ends after the
  evaluation that makes that many in a row without an improvement of ``config.best_metric``
  (a log line gives the step, the best step and value); resumable, the count is derived
  from the validation history (``early_stopping``).
* Pre-emption: a SIGTERM or SIGINT stops the run after the current step, with a
  checkpoint of that step (``preemption``); the rerun resumes from it.
* Logs: a tqdm progress bar (step, loss, frames/s), TensorBoard scalars and
  ``metrics.jsonl`` in the workdir (``train_logs``); only process 0 writes.
"""
from __future__ import annotations

import os
import time
from typing import NamedTuple

import jax
import numpy as np
from tqdm import tqdm

from input_pipeline import speckled
from usvjax.core import checkpoint
from usvjax.core import early_stopping
from usvjax.core import evaluate
from usvjax.core import optim
from usvjax.core import parallel
from usvjax.core import preemption
from usvjax.core import run as run_lib
from usvjax.core import state as state_lib
from usvjax.core import train_logs
from usvjax.core import train_step as train_step_lib
from usvjax.core import workdir as workdir_lib
from usvjax.reporting import console


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


class Validation:
  """The evaluations a run makes during training: ``dataset.eval_split`` (``val/``; its
  metrics rank the checkpoints) and each of ``config.evals`` (``<name>/``: a second split,
  or a split with speckle, ``input_pipeline.speckled``), with the run's one eval step."""

  def __init__(self, run: run_lib.Run, writer: train_logs.Writer):
    self.run, self.writer = run, writer
    self.headline = tuple(run.definition.columns.values())
    # 'val' first; the run checks refuse a config.evals entry of that name.
    self.evals = {'val': (run.config.dataset.eval_split, None), **extra_evaluations(run)}

  def __call__(self, step: int, state: state_lib.TrainState) -> dict[str, float]:
    """Evaluates every evaluation at ``step``, logs metrics and overlays; returns the
    validation metrics."""
    variables = state.inference_variables()  # The EMA weights when the run keeps them.
    for name, (split, builder) in self.evals.items():
      metrics, evaluation = evaluate.evaluate_split(self.run, split, variables, builder)
      self.writer.write(step, {f'{name}/{k}': v for k, v in metrics.items()})
      self.writer.images(step, {f'{name}_overlay/{k}': v
                                for k, v in evaluate.pictures(evaluation).items()})
      console.say(f'step {step} {name} ({split}): ' + ', '.join(
          f'{k}={metrics[k]:.4f}' for k in self.headline if k in metrics))
      if name == 'val':
        validation = metrics
    return validation


def extra_evaluations(run: run_lib.Run) -> dict[str, tuple[str, object]]:
  """{name: (split, builder)} of ``config.evals``: each names a ``split`` and, with
  ``speckle_looks`` > 0, scores it with speckle of that look number
  (``input_pipeline.speckled``)."""
  out = {}
  for name, spec in run.config.evals.items():
    looks = float(spec.speckle_looks)
    builder = (speckled.SpeckledBuilder(run.builder, looks, run.config.seed) if looks > 0
               else None)
    out[name] = (spec.split, builder)
  return out


class Trained(NamedTuple):
  state: state_lib.TrainState  # Replicated over the run's mesh.
  metrics: dict[str, float]  # The validation metrics at the last step.


def train_and_evaluate(run: run_lib.Run, workdir: str) -> Trained:
  """Trains the resolved ``run`` in ``workdir`` (resuming if it holds checkpoints), holding
  the workdir's lock (``usvjax.core.workdir``: one trainer per directory) and the stop
  signals' handlers (``usvjax.core.preemption``)."""
  with workdir_lib.hold(workdir), preemption.StopSignals() as signals:
    return _train_and_evaluate(run, workdir, signals)


def _train_and_evaluate(run: run_lib.Run, workdir: str,
                        signals: preemption.StopSignals) -> Trained:
  """``train_and_evaluate`` while the workdir's lock is held."""
  config, mesh = run.config, run.mesh
  tx = optim.create_optimizer(config)
  manager = checkpoint.create_manager(workdir, config.keep_checkpoints, config.best_metric,
                                      config.best_mode)
  state = state_lib.init_state(run.model, tx, state_lib.init_batch(config, run.fields(True)),
                               config.seed, mesh, ema=config.optimizer.ema_decay > 0)
  # The newest intact checkpoint (a damaged newer one is warned about and moved aside).
  state, start_step = checkpoint.restore_newest(manager, state)
  batches = run.train_batches(start_step)
  if start_step:
    console.say(f'resumed from step {start_step} ({manager.directory})' + (
        f': nothing left to train (config.total_steps={config.total_steps}); raise '
        'total_steps to train on, or evaluate the run' if start_step >= config.total_steps
        else ''))
  elif config.init.checkpoint:
    state = state_lib.load_pretrained(state, config.init.checkpoint, config.init.target)
    state = jax.device_put(state, parallel.replicated(mesh))
    console.say(f'initialised {config.init.target!r} from {config.init.checkpoint}')
  step_fn = train_step_lib.jit_train_step(train_step_lib.make_train_step(
      run.model, run.task, tx, config.seed, config.optimizer.accumulate_steps,
      config.optimizer.ema_decay), mesh)
  # Read before the writer drops the log lines after start_step (either is the same here).
  early = early_stopping.from_history(workdir, start_step,
                                     config.get('early_stopping_patience', 0),
                                     config.best_metric, config.best_mode)
  profiler = train_logs.Profiler(config.profile_steps, start_step,
                                 os.path.join(workdir, 'tensorboard'))
  writer = train_logs.Writer(workdir, start_step)
  validate = Validation(run, writer)
  eval_metrics: dict[str, float] = {}
  progress = tqdm(total=config.total_steps, initial=start_step, desc='train', unit='step',
                  disable=jax.process_index() != 0, dynamic_ncols=True)
  # A resumed run that had stopped early trains no further.
  last_step = start_step if early.stopped() else config.total_steps
  batch = next(batches) if start_step < last_step else None
  tick, frames, pending = time.perf_counter(), 0, []
  try:
    if config.total_steps == 0 and manager.latest_step() is None:
      # Pretrained weights evaluated as they are: step 0 is their checkpoint.
      eval_metrics = validate(0, state)
      _save(manager, 0, state, eval_metrics, workdir)
    if early.stopped():
      console.say(early.message(start_step))
    for step in range(start_step + 1, last_step + 1):
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
      stopping = signals.reached(step)
      saved = evaluated or stopping or step % config.checkpoint_every == 0
      if not (logged or saved):
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
        eval_metrics = validate(step, state)
      if saved:
        _save(manager, step, state, eval_metrics if evaluated else None, workdir)
      if stopping:
        raise signals.stopped(step, manager.directory)
      if evaluated and early.update(step, eval_metrics[config.best_metric]):
        console.say(early.message(step))
        break
  finally:
    profiler.close()
    progress.close()
    writer.close()
    manager.close()  # Waits for a save in flight.
  return Trained(state, eval_metrics)
