"""Every video segmentation model learns, in every part, from its config's loss (DSANet's
stricter per-parameter version is in test_dsanet.py, STPFNet's in test_stpfnet.py)."""
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from input_pipeline import spec
from usvjax import models
from usvjax import tasks


@pytest.mark.parametrize('name', ['flanet'])
def test_every_module_gets_gradient_from_the_loss(name):
  """One jitted gradient of the tiny config's loss (a narrow ResNet-18 encoder keeps the
  compilation short): no module is cut off from the loss."""
  config = importlib.import_module(f'configs.{name}').get_config('tiny')
  config.model.backbone = 'resnet18'
  model, task = models.create_model(config.model), tasks.create_task(config)
  rng = np.random.default_rng(0)
  batch = spec.example_batch(tasks.batch_spec(config, train=True), config.input.batch_size)
  batch['frames'] = rng.random(batch['frames'].shape, np.float32)
  batch['masks'][:, :, 8:20, 10:22] = 1.0
  batch['heatmaps'] = rng.random(batch['heatmaps'].shape, np.float32)
  batch = jax.tree.map(jnp.asarray, batch)
  variables = jax.jit(lambda b: model.init(jax.random.key(0), b, train=False))(batch)

  @jax.jit
  def gradients(params, batch):  # The batch as an argument: no constant folding of it.
    def loss_fn(p):
      outputs, _ = model.apply({'params': p, 'batch_stats': variables['batch_stats']}, batch,
                               train=True, mutable=['batch_stats'])
      return task.loss(outputs, batch)
    return jax.grad(loss_fn, has_aux=True)(params)

  grads, parts = gradients(variables['params'], batch)
  assert all(np.isfinite(float(v)) for v in parts.values())
  for module, tree in grads.items():
    assert sum(np.abs(np.asarray(x)).sum() for x in jax.tree.leaves(tree)) > 0, module
