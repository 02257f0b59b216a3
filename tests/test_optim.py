"""Optimizers and schedules from the config."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import helpers
from usvjax.core import optim


def _config(**overrides):
  return helpers.load_config('unet', '', total_steps=100, **overrides)


def test_warmup_then_cosine():
  schedule = optim.learning_rate_schedule(_config(**{
      'optimizer.lr': 1.0, 'schedule.name': 'cosine', 'schedule.warmup_steps': 10}))
  assert float(schedule(0)) == 0.0
  assert float(schedule(5)) == pytest.approx(0.5)
  assert float(schedule(10)) == pytest.approx(1.0)
  assert float(schedule(55)) == pytest.approx(0.5, abs=1e-6)  # Half-way through the decay.
  assert float(schedule(100)) == pytest.approx(0.0, abs=1e-6)


def test_step_decay_multiplies_at_each_boundary():
  schedule = optim.learning_rate_schedule(_config(**{
      'optimizer.lr': 1.0, 'schedule.name': 'step', 'schedule.step_boundaries': (30, 60),
      'schedule.step_factor': 0.1}))
  assert [float(schedule(s)) for s in (29, 30, 59, 60)] == pytest.approx([1, 0.1, 0.1, 0.01])


@pytest.mark.parametrize('clip, expected', [
    ({'optimizer.clip_value': 0.5}, [-0.5, 0.5, 0.25]),
    ({'optimizer.clip_norm': 1.0}, [-3 / 5.0249, 4 / 5.0249, 0.5 / 5.0249]),
])
def test_gradient_clipping_before_plain_sgd(clip, expected):
  config = _config(**{'optimizer.name': 'sgd', 'optimizer.lr': 1.0, 'optimizer.momentum': 0.0,
                      'schedule.name': 'constant', **clip})
  tx = optim.create_optimizer(config)
  params = jnp.zeros(3)
  updates, _ = tx.update(jnp.array([-3.0, 4.0, 0.25 if 'optimizer.clip_value' in clip else 0.5]),
                         tx.init(params), params)
  np.testing.assert_allclose(-np.asarray(updates), expected, rtol=1e-4)


@pytest.mark.parametrize('name', ['adam', 'adamw', 'sgd', 'lars'])
def test_every_optimizer_reduces_a_quadratic(name):
  config = _config(**{'optimizer.name': name, 'optimizer.lr': 0.05,
                      'optimizer.weight_decay': 1e-4, 'schedule.name': 'constant'})
  tx = optim.create_optimizer(config)
  params = jnp.array([1.0, -2.0])
  state = tx.init(params)
  for _ in range(20):
    updates, state = tx.update(2 * params, state, params)
    params = params + updates
  assert float(jnp.sum(params**2)) < 5.0  # LARS scales its steps by a small trust ratio.


def test_lars_leaves_biases_and_norm_parameters_alone():
  """SimCLR's LARS: no weight decay and no trust ratio on biases and norm scales/offsets."""
  config = _config(**{'optimizer.name': 'lars', 'optimizer.lr': 1.0, 'optimizer.momentum': 0.0,
                      'optimizer.weight_decay': 0.1, 'schedule.name': 'constant'})
  tx = optim.create_optimizer(config)
  params = {'conv': {'kernel': jnp.full((2, 2), 3.0), 'bias': jnp.ones(2)},
            'norm': {'scale': jnp.ones(2), 'bias': jnp.ones(2)}}
  zeros = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(zeros, tx.init(params), params)  # Only weight decay moves them.
  assert float(jnp.abs(updates['conv']['kernel']).min()) > 0
  for leaf in (updates['conv']['bias'], updates['norm']['scale'], updates['norm']['bias']):
    np.testing.assert_array_equal(leaf, 0.0)
  grads = jax.tree.map(jnp.ones_like, params)
  updates, _ = tx.update(grads, tx.init(params), params)
  np.testing.assert_allclose(updates['norm']['scale'], -1.0)  # lr x gradient, no trust ratio.
  decayed = 1.0 + 0.1 * 3.0  # Kernel: trust 1e-3 |w| / |g + wd w|, times (g + wd w).
  np.testing.assert_allclose(updates['conv']['kernel'], -1e-3 * 6.0 / (2 * decayed) * decayed,
                             rtol=1e-5)


def test_unknown_optimizer_is_named():
  with pytest.raises(ValueError, match="'rmsprop'"):
    optim.create_optimizer(_config(**{'optimizer.name': 'rmsprop'}))
