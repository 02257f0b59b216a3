"""EMA weights (config.optimizer.ema_decay): the update, checkpoints, and the weights
validation and evaluation use (exact resume of a run with EMA weights: test_mean_teacher)."""
import jax
import numpy as np
import pytest

import helpers
from input_pipeline import spec
from usvjax import models
from usvjax import tasks
from usvjax.core import checkpoint
from usvjax.core import optim
from usvjax.core import parallel
from usvjax.core import run as run_lib
from usvjax.core import state as state_lib
from usvjax.core import train
from usvjax.core import train_step
from usvjax.errors import ConfigError


def tiny_step(ema_decay: float, **overrides):
  """(jitted train step, initial state, batch factory) of the tiny U-Net on hand-made
  batches of 4 clips: ``batch(i)`` is the i-th (random frames and masks, every frame
  valid, the targets of clips 0 and 2 unannotated)."""
  config = helpers.load_config('unet', '', **{'optimizer.ema_decay': ema_decay,
                                              'optimizer.name': 'sgd', **overrides})
  model, task = models.create_model(config.model), tasks.create_task(config)
  tx, mesh = optim.create_optimizer(config), parallel.create_mesh(jax.devices()[:1])
  fields = tasks.batch_spec(config, True)
  state = state_lib.init_state(model, tx, state_lib.init_batch(config, fields), config.seed,
                               mesh, ema=ema_decay > 0)
  step = train_step.jit_train_step(train_step.make_train_step(
      model, task, tx, config.seed, ema_decay=ema_decay), mesh)

  def batch(i: int) -> dict:
    rng = np.random.default_rng(i)
    out = spec.example_batch(fields, 4, config.input.clip_length)
    out['frames'] = rng.random(out['frames'].shape, np.float32)
    out['masks'] = (rng.random(out['masks'].shape) > 0.7).astype(np.float32)
    out['annotated'] = np.ones(out['valid'].shape, bool)
    out['annotated'][::2, -1] = False
    return out
  return step, state, batch, mesh


def host(tree) -> dict:
  """Host copies (a donated state's buffers are reused)."""
  return {k: v.copy() for k, v in helpers.flat_local(tree).items()}


@pytest.mark.parametrize('d', [0.5, 0.75])
def test_ema_after_two_steps_is_the_average_of_the_parameter_snapshots(d):
  step, state, batch, mesh = tiny_step(d)
  snapshots = [host(state.params)]
  for i in range(2):
    state, _ = step(state, parallel.global_batch(batch(i), mesh))
    snapshots.append(host(state.params))
  p0, p1, p2 = snapshots
  ema = host(state.ema_params)
  assert ema.keys() == p0.keys()
  d, e = np.float32(d), np.float32(1 - d)
  for key in p0:
    want = d * (d * p0[key] + e * p1[key]) + e * p2[key]
    if d == 0.5:  # Exact in float32 (halving is), whatever the order of operations.
      np.testing.assert_array_equal(ema[key], want, err_msg=key)
    np.testing.assert_allclose(ema[key], want, rtol=1e-6, atol=0, err_msg=key)
  assert any(not np.array_equal(ema[k], p2[k]) for k in p0)  # It lags the parameters.
  assert state.inference_variables()['params'] is state.ema_params
  assert state.inference_variables()['batch_stats'] is state.batch_stats


def test_without_ema_the_state_is_the_plain_one():
  step, state, batch, mesh = tiny_step(0.0)
  state, _ = step(state, parallel.global_batch(batch(0), mesh))
  assert type(state) is state_lib.TrainState  # pylint: disable=unidiomatic-typecheck
  assert state.inference_variables()['params'] is state.params


@pytest.mark.parametrize('decay', [1.0, -0.1])
def test_a_decay_outside_0_1_is_named(decay):
  with pytest.raises(ConfigError, match=rf'config.optimizer.ema_decay={decay}'):
    tiny_step(decay)


def test_evaluation_restores_the_ema_weights_and_a_plain_checkpoint_its_parameters(tmp_path):
  step, state, batch, mesh = tiny_step(0.9)
  state, _ = step(state, parallel.global_batch(batch(0), mesh))
  plain = state_lib.TrainState(step=state.step, params=state.params,
                               batch_stats=state.batch_stats, opt_state=state.opt_state)
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                          {'params': state.params, 'batch_stats': state.batch_stats})
  for name, saved, want in (('ema', state, state.ema_params), ('plain', plain, state.params)):
    manager = checkpoint.create_manager(str(tmp_path / name), keep=1)
    checkpoint.save(manager, 1, saved)
    reader = checkpoint.create_manager(str(tmp_path / name), keep=1, read_only=True)
    restored = checkpoint.restore_variables(reader, 1, abstract)
    assert set(restored) == {'params', 'batch_stats'}
    got, expected = host(restored['params']), host(want)
    for key in expected:
      np.testing.assert_array_equal(got[key], expected[key], err_msg=f'{name} {key}')
  assert any(not np.array_equal(a, b) for a, b in zip(host(state.ema_params).values(),
                                                       host(state.params).values()))


def train_straight_and_resumed(data_dir, tmp_path, **overrides):
  """The final states of 4 steps in one run and of 2 steps then 2 more resumed (constant
  learning rate, so that total_steps changes nothing but the length)."""
  def config(total_steps):
    return helpers.load_config('unet', data_dir, total_steps=total_steps, eval_every=4,
                               checkpoint_every=2, **{'schedule.name': 'constant',
                                                      'optimizer.ema_decay': 0.5, **overrides})
  straight, _ = train.train_and_evaluate(run_lib.resolve(config(4)), str(tmp_path / 'straight'))
  train.train_and_evaluate(run_lib.resolve(config(2)), str(tmp_path / 'resumed'))
  resumed, _ = train.train_and_evaluate(run_lib.resolve(config(4)), str(tmp_path / 'resumed'))
  return straight, resumed


def assert_same_states(straight, resumed):
  assert int(straight.step) == int(resumed.step) == 4
  for tree in ('params', 'ema_params', 'batch_stats', 'opt_state'):
    want, got = host(getattr(straight, tree)), host(getattr(resumed, tree))
    assert got.keys() == want.keys()
    for key in want:
      np.testing.assert_array_equal(got[key], want[key], err_msg=f'{tree} {key}')
