"""The mean teacher (config.task.consistency_weight): the term, what the teacher and the
student see, weight 0 changing nothing, gradients, the config error, and exact resume with
the EMA weights evaluated."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import helpers
import test_ema
from input_pipeline import pipeline
from usvjax import models
from usvjax.core import parallel
from usvjax.core import run as run_lib
from usvjax.errors import ConfigError
from usvjax.loss_terms import mean_teacher

_ON = {'task.consistency_weight': 0.5, 'task.consistency_noise': 0.2}


def test_the_term_is_the_squared_difference_on_the_valid_unannotated_targets_only():
  rng = np.random.default_rng(0)
  logits = jnp.asarray(rng.normal(size=(3, 4, 4, 1)), jnp.float32)
  teacher = jnp.asarray(rng.random((3, 4, 4, 1)), jnp.float32)
  batch = {'valid': np.array([[1, 1], [1, 1], [1, 0]], bool),
           'annotated': np.array([[1, 0], [1, 1], [0, 0]], bool)}
  term = mean_teacher.MeanTeacher(weight=2.0, noise=0.1)
  value, parts = term({'logits': logits, 'teacher_probs': teacher}, batch)
  want = np.mean((jax.nn.sigmoid(logits[0]) - teacher[0]) ** 2)  # Only clip 0 counts.
  np.testing.assert_allclose(parts['consistency'], want, rtol=1e-6)
  np.testing.assert_allclose(value, 2.0 * want, rtol=1e-6)
  changed = teacher.at[1:].set(0.0)  # The annotated or padded targets' teacher is unread.
  assert term({'logits': logits, 'teacher_probs': changed}, batch)[0] == value
  none = dict(batch, annotated=np.ones((3, 2), bool))
  assert float(term({'logits': logits, 'teacher_probs': teacher}, none)[0]) == 0.0


def test_gradient_of_the_term_reaches_every_trainable_parameter():
  _, state, batch, _ = test_ema.tiny_step(0.0)
  config = helpers.load_config('unet', '')
  model, term = models.create_model(config.model), mean_teacher.MeanTeacher(1.0, 0.1)
  data = batch(0)
  teacher = {'teacher_probs': jnp.full(data['masks'][:, -1].shape, 0.5)}

  def consistency(params):
    outputs, _ = model.apply({'params': params, 'batch_stats': state.batch_stats}, data,
                             train=True, mutable=['batch_stats'])
    return term(dict(outputs, **teacher), data)[0]
  grads = helpers.flat_local(jax.grad(consistency)(state.params))
  assert grads and all(np.any(g != 0) for g in grads.values()), [
      k for k, g in grads.items() if not np.any(g != 0)]


def test_the_step_runs_the_ema_teacher_on_the_clean_batch_and_the_student_on_noise():
  step, state, batch, mesh = test_ema.tiny_step(0.9, **_ON)
  config = helpers.load_config('unet', '')
  model = models.create_model(config.model)
  data = batch(0)
  # The first step's EMA is the initial parameters; shift it to tell the two apart.
  state = state.replace(ema_params=jax.tree.map(lambda p: p * 1.1, state.ema_params))
  teacher = jax.nn.sigmoid(model.apply({'params': state.ema_params,
                                        'batch_stats': state.batch_stats}, data,
                                       train=False)['logits'])
  key = jax.random.fold_in(jax.random.fold_in(jax.random.key(config.seed), 0), 1)
  noisy = dict(data, frames=data['frames'] + 0.2 * jax.random.normal(
      key, data['frames'].shape))
  student, _ = model.apply(state.variables(), noisy, train=True, mutable=['batch_stats'])
  unannotated = np.array([0, 2])
  want = np.mean((jax.nn.sigmoid(student['logits'][unannotated]) - teacher[unannotated]) ** 2)
  _, metrics = step(state, parallel.global_batch(data, mesh))
  np.testing.assert_allclose(float(metrics['consistency']), want, rtol=1e-5)


def test_at_weight_0_the_step_is_the_supervised_step():
  results = []
  for noise in (0.1, 0.5):  # At weight 0 neither the noise nor a teacher is used.
    step, state, batch, mesh = test_ema.tiny_step(0.9, **{'task.consistency_noise': noise})
    for i in range(2):
      state, metrics = step(state, parallel.global_batch(batch(i), mesh))
    results.append((test_ema.host(state.params), jax.device_get(metrics)))
  (plain, plain_metrics), (zero, zero_metrics) = results
  assert plain_metrics.keys() == zero_metrics.keys() and 'consistency' not in zero_metrics
  for key in plain:
    np.testing.assert_array_equal(zero[key], plain[key], err_msg=key)


def test_a_mean_teacher_without_ema_names_both_keys():
  with pytest.raises(ConfigError, match=r'config.task.consistency_weight=0.5 .*'
                     r'config.optimizer.ema_decay > 0'):
    test_ema.tiny_step(0.0, **_ON)


def test_resume_is_bit_exact_with_the_teacher_on_and_evaluation_takes_the_ema_weights(
    data_dir, tmp_path, monkeypatch):
  """4 steps straight and 2 + 2 resumed agree in every state tree (EMA weights included);
  the checkpoint restores the EMA weights for evaluation, and its parameters with
  weights='raw' (``evaluate --weights=raw``)."""
  make_batches = pipeline.train_batches

  def half_unannotated(*args, **kwargs):  # Until the data carry sparse masks.
    for batch in make_batches(*args, **kwargs):
      annotated = np.array(batch['valid'])
      annotated[::2, -1] = False
      yield dict(batch, annotated=annotated)
  monkeypatch.setattr(pipeline, 'train_batches', half_unannotated)
  straight, resumed = test_ema.train_straight_and_resumed(data_dir, tmp_path, **_ON)
  test_ema.assert_same_states(straight, resumed)
  config = helpers.load_config('unet', data_dir, **{'optimizer.ema_decay': 0.5, **_ON})
  run = run_lib.resolve(config)
  for weights, trained in (('ema', straight.ema_params), ('raw', straight.params)):
    variables, step = run.restore(str(tmp_path / 'straight'), 'latest', weights)
    assert step == 4
    got, want = test_ema.host(variables['params']), test_ema.host(trained)
    for key in want:
      np.testing.assert_array_equal(got[key], want[key], err_msg=f'{weights} {key}')
