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
import json
import os
import time
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import tensorflow as tf
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
from usvjax import workdir as workdir_lib
from usvjax.errors import ConfigError


class NonFiniteLossError(FloatingPointError):
  """The loss became NaN or infinite."""


def make_train_step(model, task, tx: optax.GradientTransformation, seed: int,
                    accumulate_steps: int = 1):
  """The (un-jitted) step: forward, task loss, gradients, optax update.

  ``accumulate_steps`` k > 1 (gradient accumulation, ``config.optimizer.accumulate_steps``)
  processes the batch of B examples as k micro-batches of B/k (examples i, i + k, ...: each
  keeps the batch's split over devices), one after the other in a ``lax.scan``, so only one
  micro-batch's activations are live at a time. The gradient, the loss and the metrics are
  means over the micro-batches (the full batch's when the loss is a mean over equally
  weighted examples) and the optimizer makes one update: the step, the schedule and the
  data stream are those of the batch of B. BatchNorm normalises each micro-batch with its
  own statistics and updates its running averages once per micro-batch (k momentum updates
  per step), as training on batches of B/k does; batch-level loss terms (FLA-Net's
  contrastive negatives) see their micro-batch only.
  """
  root_key = jax.random.key(seed)

  def gradients(params, batch_stats, batch: dict, rng: jax.Array):
    def loss_fn(params):
      outputs, updates = model.apply(
          {'params': params, 'batch_stats': batch_stats}, batch, train=True,
          mutable=['batch_stats'], rngs={'dropout': rng})
      loss, aux = task.loss(outputs, batch)
      return loss, (dict(aux, loss=loss), updates.get('batch_stats', batch_stats))

    (_, (metrics, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    return grads, batch_stats, metrics

  def accumulated(params, batch_stats, batch: dict, rng: jax.Array):
    micro = jax.tree.map(lambda x: _micro_batches(x, accumulate_steps), batch)
    shapes = jax.eval_shape(gradients, params, batch_stats,
                            jax.tree.map(lambda x: x[0], micro), rng)
    sums = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), (shapes[0], shapes[2]))

    def add_micro_batch(carry, inputs):
      sums, batch_stats = carry
      i, micro_batch = inputs
      grads, batch_stats, metrics = gradients(params, batch_stats, micro_batch,
                                              jax.random.fold_in(rng, i))
      return (jax.tree.map(jnp.add, sums, (grads, metrics)), batch_stats), None

    (sums, batch_stats), _ = jax.lax.scan(
        add_micro_batch, (sums, batch_stats), (jnp.arange(accumulate_steps), micro))
    grads, metrics = jax.tree.map(lambda s: s / accumulate_steps, sums)
    return grads, batch_stats, metrics

  def train_step(state: state_lib.TrainState, batch: dict) -> tuple[state_lib.TrainState, dict]:
    rng = jax.random.fold_in(root_key, state.step)
    grads_of = gradients if accumulate_steps == 1 else accumulated
    grads, batch_stats, metrics = grads_of(state.params, state.batch_stats, batch, rng)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                              opt_state=opt_state)
    return new_state, dict(metrics, grad_norm=optax.tree.norm(grads),
                           param_norm=optax.tree.norm(params))
  return train_step


def _micro_batches(x: jax.Array, k: int) -> jax.Array:
  """[B, ...] -> [k, B/k, ...], micro-batch i holding examples i, i + k, ... (when a
  device's share of the batch is a multiple of k, its micro-batches are its own examples)."""
  if x.shape[0] % k:
    raise ConfigError(f'the batch of {x.shape[0]} examples does not split into '
                      f'config.optimizer.accumulate_steps={k} equal micro-batches.')
  return jnp.swapaxes(x.reshape(x.shape[0] // k, k, *x.shape[1:]), 0, 1)


def jit_train_step(train_step, mesh: jax.sharding.Mesh):
  replicated = parallel.replicated(mesh)
  return jax.jit(train_step, in_shardings=(replicated, parallel.data_sharded(mesh)),
                 out_shardings=(replicated, replicated), donate_argnums=0)


class Profiler:
  """Traces ``steps`` training steps with ``jax.profiler`` into ``logdir`` (the run's
  TensorBoard folder: its profile plugin shows the trace and XLA's per-op statistics; the
  ``*.trace.json.gz`` beside it opens in Perfetto). Tracing starts at the second step of
  the run (or of the resumption), after the first one compiled; 0 steps traces nothing."""

  def __init__(self, steps: int, start_step: int, logdir: str):
    self.first, self.last, self.logdir = start_step + 2, start_step + 1 + steps, logdir
    self.active = False

  def before(self, step: int) -> None:
    if step == self.first and self.last >= self.first:
      jax.profiler.start_trace(self.logdir, create_perfetto_trace=True)
      self.active = True

  def after(self, step: int, outputs) -> None:
    if self.active and step == self.last:
      jax.block_until_ready(outputs)
      self.close()

  def close(self) -> None:
    if self.active:
      jax.profiler.stop_trace()
      self.active = False


class Writer:
  """TensorBoard scalars and a JSON-lines log in the workdir (process 0 only).

  A run resumed at ``start_step`` first drops the log lines of later steps (written after
  its last checkpoint by the run it resumes, and about to be written again) and any line
  cut short by a kill, so ``metrics.jsonl`` holds each step once after any number of
  resumes.
  """

  def __init__(self, workdir: str, start_step: int = 0):
    self.enabled, self.workdir = jax.process_index() == 0, workdir
    if self.enabled:
      with self._writing():
        self.summary = tf.summary.create_file_writer(os.path.join(workdir, 'tensorboard'))
        path = os.path.join(workdir, 'metrics.jsonl')
        _keep_steps_up_to(path, start_step)
        self.jsonl = open(path, 'a')  # pylint: disable=consider-using-with

  def _writing(self):
    return workdir_lib.writing(self.workdir, 'the metrics log', resume_hint(self.workdir))

  def write(self, step: int, scalars: dict[str, float]) -> None:
    if not self.enabled:
      return
    with self._writing():
      with self.summary.as_default(step=step):
        for name, value in scalars.items():
          tf.summary.scalar(name, value)
      self.jsonl.write(json.dumps({'step': step, **scalars}) + '\n')
      self.jsonl.flush()

  def images(self, step: int, images: dict[str, np.ndarray]) -> None:
    """uint8 RGB [H, W, 3] images to TensorBoard (``evaluate.pictures``: overlays)."""
    if not (self.enabled and images):
      return
    with self._writing():
      with self.summary.as_default(step=step):
        for name, image in images.items():
          tf.summary.image(name, image[None])

  def close(self) -> None:
    if self.enabled:
      with self._writing():
        self.summary.flush()
        self.jsonl.close()


def resume_hint(workdir: str) -> str:
  """What to do after a filesystem failure in the middle of a run."""
  return (f'Training stopped; the checkpoints already in {workdir}/checkpoints are intact '
          '(a save is renamed into place only when complete): free space or fix the '
          'filesystem, then rerun the same command to resume from the last one.')


def _keep_steps_up_to(path: str, last_step: int) -> None:
  """Rewrites the JSON-lines log ``path`` (atomically) without lines of steps after
  ``last_step`` and without unreadable lines."""
  if not os.path.exists(path):
    return
  kept = []
  with open(path) as f:
    for line in f:
      try:
        if json.loads(line)['step'] <= last_step:
          kept.append(line)
      except (ValueError, KeyError):
        continue
  with open(path + '.tmp', 'w') as f:
    f.writelines(kept)
  os.replace(path + '.tmp', path)


def say(message: str) -> None:
  """A line for the person running the job (process 0 only)."""
  if jax.process_index() == 0:
    tqdm.write(message)


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
  what, then = f'the checkpoint of step {step}', resume_hint(workdir)
  if jax.process_index() == 0:
    needed = sum(x.nbytes for x in jax.tree.leaves(state))
    workdir_lib.check_space(workdir, needed, what, then)
  with workdir_lib.writing(workdir, what, then):
    checkpoint.save(manager, step, state, metrics)


def _validate(evaluator, writer: Writer, step: int, state: state_lib.TrainState
              ) -> dict[str, float]:
  """Evaluates the validation split, logs its metrics and overlays at ``step``."""
  eval_metrics, evaluation = evaluator(state.variables())
  writer.write(step, {f'val/{k}': v for k, v in eval_metrics.items()})
  writer.images(step, {f'val_overlay/{k}': v for k, v in evaluate.pictures(evaluation).items()})
  headline = ('mean_dice', 'pooled_dice', 'accuracy', 'auc', 'contrastive_accuracy')
  say(f'step {step} validation: ' + ', '.join(
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
    say(f'resumed from step {start_step} ({manager.directory})' + (
        f': nothing left to train (config.total_steps={config.total_steps}); raise '
        'total_steps to train on, or evaluate the run' if start_step >= config.total_steps
        else ''))
  elif config.init.checkpoint:
    state = state_lib.load_pretrained(state, config.init.checkpoint, config.init.target)
    state = jax.device_put(state, parallel.replicated(mesh))
    say(f'initialised {config.init.target!r} from {config.init.checkpoint}')
  step_fn = jit_train_step(make_train_step(model, task, tx, config.seed,
                                           config.optimizer.accumulate_steps), mesh)
  profiler = Profiler(config.profile_steps, start_step, os.path.join(workdir, 'tensorboard'))
  writer = Writer(workdir, start_step)
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
