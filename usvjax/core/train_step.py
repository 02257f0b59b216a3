"""The training step: forward, task loss, gradients, optax update (``make_train_step``),
jitted over the ``'data'`` mesh with the train state donated (``jit_train_step``).

Imports only JAX and optax, so the step runs (and is benchmarked, ``scripts/device_check.py``)
where TensorFlow is absent.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from usvjax.core import parallel
from usvjax.core import state as state_lib
from usvjax.errors import ConfigError


def make_train_step(model, task, tx: optax.GradientTransformation, seed: int,
                    accumulate_steps: int = 1, ema_decay: float = 0.0):
  """The (un-jitted) step: forward, task loss, gradients, optax update.

  ``ema_decay`` d > 0 (``config.optimizer.ema_decay``; the state is a
  ``state.EmaTrainState``) updates the EMA of the parameters after the update:
  ema = d * ema + (1 - d) * params.

  A task with a ``teacher`` (not None: the mean teacher, ``usvjax.loss_terms.mean_teacher``;
  it needs the EMA) runs the model with the EMA weights and the model's ``batch_stats``
  (``train=False``) on the batch, adds ``teacher.targets`` of its outputs (under
  ``stop_gradient``) to the student's outputs, and the student sees
  ``teacher.student_batch(batch, key)`` (its noise drawn from the step's key). Without a
  teacher nothing of this runs: the step is the supervised one.

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
  if not 0 <= ema_decay < 1:
    raise ConfigError(f'config.optimizer.ema_decay={ema_decay}: use 0 (no EMA) or a decay in '
                      '(0, 1), e.g. 0.99.')
  teacher = getattr(task, 'teacher', None)
  if teacher is not None and ema_decay <= 0:
    raise ConfigError(f'config.task.consistency_weight={teacher.weight} (the mean teacher) '
                      'needs the EMA of the weights as its teacher: set '
                      'config.optimizer.ema_decay > 0 (e.g. 0.99).')

  def gradients(params, ema_params, batch_stats, batch: dict, rng: jax.Array):
    student, teacher_outputs = batch, {}
    if teacher is not None:
      teacher_outputs = jax.lax.stop_gradient(teacher.targets(model.apply(
          {'params': ema_params, 'batch_stats': batch_stats}, batch, train=False)))
      student = teacher.student_batch(batch, jax.random.fold_in(rng, 1))

    def loss_fn(params):
      outputs, updates = model.apply(
          {'params': params, 'batch_stats': batch_stats}, student, train=True,
          mutable=['batch_stats'], rngs={'dropout': rng})
      loss, aux = task.loss(dict(outputs, **teacher_outputs), batch)
      return loss, (dict(aux, loss=loss), updates.get('batch_stats', batch_stats))

    (_, (metrics, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    return grads, batch_stats, metrics

  def accumulated(params, ema_params, batch_stats, batch: dict, rng: jax.Array):
    micro = jax.tree.map(lambda x: _micro_batches(x, accumulate_steps), batch)
    shapes = jax.eval_shape(gradients, params, ema_params, batch_stats,
                            jax.tree.map(lambda x: x[0], micro), rng)
    sums = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), (shapes[0], shapes[2]))

    def add_micro_batch(carry, inputs):
      sums, batch_stats = carry
      i, micro_batch = inputs
      grads, batch_stats, metrics = gradients(params, ema_params, batch_stats, micro_batch,
                                              jax.random.fold_in(rng, i))
      return (jax.tree.map(jnp.add, sums, (grads, metrics)), batch_stats), None

    (sums, batch_stats), _ = jax.lax.scan(
        add_micro_batch, (sums, batch_stats), (jnp.arange(accumulate_steps), micro))
    grads, metrics = jax.tree.map(lambda s: s / accumulate_steps, sums)
    return grads, batch_stats, metrics

  def train_step(state: state_lib.TrainState, batch: dict) -> tuple[state_lib.TrainState, dict]:
    rng = jax.random.fold_in(root_key, state.step)
    grads_of = gradients if accumulate_steps == 1 else accumulated
    ema_params = getattr(state, 'ema_params', None)
    grads, batch_stats, metrics = grads_of(state.params, ema_params, state.batch_stats, batch,
                                           rng)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                              opt_state=opt_state)
    if ema_decay > 0:
      new_state = new_state.replace(ema_params=jax.tree.map(
          lambda e, p: ema_decay * e + (1 - ema_decay) * p, ema_params, params))
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
