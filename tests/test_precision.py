"""Accelerator switches: bfloat16 compute, gradient accumulation, rematerialisation and the
profiler (usvjax/core/execution.py, usvjax/core/train.py)."""
import glob
import itertools
import os

import jax
import jax.extend.core
import jax.numpy as jnp
import numpy as np
import pytest

import helpers
from input_pipeline import pipeline
from usvjax import models
from usvjax import tasks
from usvjax.core import evaluate
from usvjax.core import execution
from usvjax.core import optim
from usvjax.core import parallel
from usvjax.core import run as run_lib
from usvjax.core import state as state_lib
from usvjax.core import train_logs
from usvjax.core import train_step
from usvjax.models import flanet


def _setup(config, batch_size=None):
  """(model, task, tx, mesh, state, global batches) of ``config`` at ``batch_size``."""
  if batch_size:
    config.input.batch_size = batch_size
  builder = pipeline.get_builder(config.dataset)
  mesh = parallel.create_mesh()
  local = list(itertools.islice(
      pipeline.train_batches(config, builder, tasks.example_source(config)), 2))
  batches = [parallel.global_batch(b, mesh) for b in local]
  model = execution.wrap(models.create_model(config.model), config)
  task, tx = tasks.create_task(config), optim.create_optimizer(config)
  state = state_lib.init_state(model, tx, batches[0], config.seed, mesh)
  return model, task, tx, mesh, state, batches


def _conv_dtypes(jaxpr) -> set:
  """The operand dtypes of every convolution and matmul of a (closed) jaxpr, recursively."""
  found = set()
  for eqn in jaxpr.eqns:
    if eqn.primitive.name in ('conv_general_dilated', 'dot_general'):
      found.update(str(v.aval.dtype) for v in eqn.invars)
    for sub in jax.extend.core.jaxprs_in_params(eqn.params):
      found |= _conv_dtypes(sub)
  return found


def _train(config, steps: int):
  model, task, tx, mesh, state, batches = _setup(config)
  step = train_step.jit_train_step(train_step.make_train_step(model, task, tx, config.seed), mesh)
  losses = []
  for i in range(steps):
    state, metrics = step(state, batches[i % 2])
    losses.append(float(metrics['loss']))
  return model, task, mesh, state, batches, step, losses


@pytest.fixture(scope='module')
def runs(data_dir):
  """U-Net tiny trained 24 steps (Adam 3e-3, two alternating batches) in both dtypes."""
  out = {}
  for dtype in ('float32', 'bfloat16'):
    config = helpers.load_config('unet', data_dir, compute_dtype=dtype,
                                 **{'optimizer.lr': 3e-3, 'schedule.name': 'constant'})
    out[dtype] = (config,) + _train(config, 24)
  return out


def test_bfloat16_training_converges_like_float32(runs):
  *_, losses32 = runs['float32']
  config, model, _, _, state, batches, step, losses16 = runs['bfloat16']
  assert losses32[-1] < 0.85 * losses32[0]
  # Tolerance: the bf16 curve stays within 2% of the fp32 curve (measured: 0.6%).
  np.testing.assert_allclose(losses16, losses32, rtol=0.02)
  # Convolutions ran in bfloat16; parameters, optimizer state and BN statistics are fp32.
  assert _conv_dtypes(jax.make_jaxpr(step)(state, batches[0]).jaxpr) == {'bfloat16'}
  for tree in (state.params, state.opt_state, state.batch_stats):
    floats = [x for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)]
    assert floats and all(x.dtype == jnp.float32 for x in floats)
  outputs = jax.jit(lambda v, b: model.apply(v, b, train=False))(state.variables(), batches[0])
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(outputs))
  # float32 computes in float32 (the wrapper is the model itself).
  f32 = runs['float32']
  assert _conv_dtypes(jax.make_jaxpr(f32[6])(f32[4], f32[5][0]).jaxpr) == {'float32'}
  assert config.compute_dtype == 'bfloat16'


def test_bfloat16_evaluation_matches_float32(runs, data_dir):
  config, _, _, _, state, *_ = runs['float32']
  results = {}
  for dtype in ('float32', 'bfloat16'):
    run = run_lib.resolve(helpers.load_config('unet', data_dir, compute_dtype=dtype))
    results[dtype], _ = evaluate.evaluate_split(run, config.dataset.eval_split,
                                                state.variables())
  # 24 steps predict (almost) empty masks, so the thresholded scores are those of empty
  # masks; the scores of the probabilities themselves tell the dtypes apart. Tolerance
  # 0.005 absolute (measured: at most 0.0004).
  for key in ('mean_dice', 'mean_mae', 'mean_s_measure', 'mean_e_measure', 'max_f'):
    assert results['bfloat16'][key] == pytest.approx(results['float32'][key], abs=0.005), key


def _frame_cnn(data_dir, **model):
  """CNN_Aver tiny with a ResNet-18 of width 1/16 on 2 frames per video (``model``
  overrides its keys)."""
  config = helpers.load_config('cnn_aver', data_dir, **{
      'input.image_size': 64, 'input.max_frames': 2, 'input.length_buckets': (2,)})
  config.unlock()
  config.model.update(backbone='resnet18', backbone_width=0.0625, **model)
  return config


def test_bfloat16_runs_every_convolution_of_a_resnet_in_bfloat16(data_dir):
  # Forward and backward; ImageNet normalisation (a float32 constant) must not promote the
  # backbone back to float32.
  config = _frame_cnn(data_dir)
  config.compute_dtype = 'bfloat16'
  model, task, _, _, state, batches = _setup(config)

  def loss(params):
    outputs, _ = model.apply({'params': params, 'batch_stats': state.batch_stats},
                             batches[0], train=True, mutable=['batch_stats'])
    return task.loss(outputs, batches[0])[0]
  assert _conv_dtypes(jax.make_jaxpr(jax.grad(loss))(state.params).jaxpr) == {'bfloat16'}


def test_flanet_fft_takes_bfloat16_features_and_works_in_float32():
  # jnp.fft refuses bfloat16: FLA-Net's spectrum is taken in float32 under compute_dtype.
  x = jax.random.normal(jax.random.key(0), (1, 8, 8, 4))
  spectrum = flanet.to_spectrum(x.astype(jnp.bfloat16))
  assert spectrum.dtype == jnp.float32
  np.testing.assert_allclose(spectrum, flanet.to_spectrum(x), atol=0.05)


def _one_step(config, *accumulate_steps: int):
  """One training step at batch size 8 from the same state per ``accumulate_steps``:
  [(new state, metrics)], (model, batch, the state before)."""
  model, task, tx, mesh, state, batches = _setup(config, batch_size=8)
  results = []
  for k in accumulate_steps:
    step = train_step.jit_train_step(train_step.make_train_step(model, task, tx, config.seed, k), mesh)
    results.append(step(jax.tree.map(jnp.copy, state), batches[0]))  # It donates the state.
  return results, (model, batches[0], state)


def test_accumulated_micro_batches_give_the_update_of_the_whole_batch(data_dir):
  # The frame CNN with GroupNorm: no batch statistics, so 2 micro-batches of 4 must give
  # the update of the batch of 8 (SGD, so the update is proportional to the gradient).
  config = _frame_cnn(data_dir, norm='group')
  config.optimizer.update(name='sgd', lr=1.0, momentum=0.0)
  ((whole, whole_metrics), (accumulated, metrics)), (_, _, before) = _one_step(config, 1, 2)
  assert float(metrics['loss']) == pytest.approx(float(whole_metrics['loss']), rel=1e-5)
  start = helpers.flat_local(before.params)
  got = helpers.flat_local(accumulated.params)
  for key, want in helpers.flat_local(whole.params).items():
    update = want - start[key]
    assert np.any(update != 0), key  # Every parameter is updated ...
    # ... by the whole batch's update, to float32 summation-order error.
    # Measured: at most 6e-4 (GroupNorm over the 4 values of a group at stride 32 amplifies
    # float32 summation-order differences); a wrong accumulation is off by O(0.1-1).
    error = np.linalg.norm(got[key] - want) / np.linalg.norm(update)
    assert error < 2e-3, (key, error)


def test_accumulation_updates_batch_norm_statistics_once_per_micro_batch(data_dir):
  config = helpers.load_config('unet', data_dir)
  [(accumulated, _)], (model, batch, before) = _one_step(config, 2)
  stats = before.batch_stats
  update = jax.jit(lambda params, stats, micro: model.apply(
      {'params': params, 'batch_stats': stats}, micro, train=True,
      mutable=['batch_stats'])[1]['batch_stats'])
  for i in range(2):  # Micro-batch i: examples i, i + 2, ...
    stats = update(before.params, stats, jax.tree.map(lambda x, i=i: x[i::2], batch))
  for key, want in helpers.flat_local(stats).items():
    np.testing.assert_allclose(helpers.flat_local(accumulated.batch_stats)[key], want,
                               rtol=1e-5, atol=1e-6, err_msg=key)


def test_accumulation_needs_equal_micro_batches(data_dir):
  config = helpers.load_config('unet', data_dir)
  with pytest.raises(ValueError, match='does not split into .*accumulate_steps=3'):
    _one_step(config, 3)


def test_remat_gives_the_same_outputs_and_gradients(data_dir):
  config = _frame_cnn(data_dir)
  model, task, _, _, state, batches = _setup(config)
  config.remat = True
  remat = execution.wrap(models.create_model(config.model), config)

  def loss_and_grads(m):
    def loss_fn(params):
      outputs, _ = m.apply({'params': params, 'batch_stats': state.batch_stats}, batches[0],
                           train=True, mutable=['batch_stats'])
      return task.loss(outputs, batches[0])[0], outputs
    return jax.jit(jax.value_and_grad(loss_fn, has_aux=True))
  (loss, outputs), grads = loss_and_grads(model)(state.params)
  (remat_loss, remat_outputs), remat_grads = loss_and_grads(remat)(state.params)
  assert float(remat_loss) == pytest.approx(float(loss), rel=1e-5)
  for key, want in helpers.flat_local({'out': outputs, 'grad': grads}).items():
    got = helpers.flat_local({'out': remat_outputs, 'grad': remat_grads})[key]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max(),
                               err_msg=key)
  text = str(jax.make_jaxpr(loss_and_grads(remat))(state.params))
  assert text.count('checkpoint') + text.count('remat') >= 8  # Every block of ResNet-18.


def test_unknown_compute_dtype_is_an_error(data_dir):
  config = helpers.load_config('unet', data_dir, compute_dtype='float16')
  with pytest.raises(ValueError, match="compute_dtype='float16': use one of"):
    execution.wrap(models.create_model(config.model), config)


def test_profiler_traces_the_steps_after_the_first(tmp_path):
  profiler = train_logs.Profiler(2, 0, str(tmp_path))
  square = jax.jit(lambda x: x @ x)
  x = jnp.ones((64, 64))
  for step in (1, 2, 3, 4):
    profiler.before(step)
    assert profiler.active == (step in (2, 3))
    x = square(x) / 64
    profiler.after(step, x)
  profiler.close()
  assert glob.glob(os.path.join(tmp_path, 'plugins', 'profile', '*', '*.xplane.pb'))
  assert glob.glob(os.path.join(tmp_path, 'plugins', 'profile', '*', '*.trace.json.gz'))
