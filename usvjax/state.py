"""The train state: step, parameters, BatchNorm statistics and optimizer state."""
from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from usvjax import parallel


@flax.struct.dataclass
class TrainState:
  step: jnp.ndarray
  params: Any
  batch_stats: Any
  opt_state: Any

  def variables(self) -> dict:
    """The variables ``model.apply`` takes."""
    return {'params': self.params, 'batch_stats': self.batch_stats}


def init_state(model, tx: optax.GradientTransformation, batch: dict, seed: int,
               mesh: jax.sharding.Mesh) -> TrainState:
  """Initialises parameters from ``batch``'s shapes, replicated over ``mesh``."""
  def init(rng):
    variables = model.init({'params': rng, 'dropout': rng}, batch, train=False)
    params = variables['params']
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      batch_stats=variables.get('batch_stats', {}),
                      opt_state=tx.init(params))
  return jax.jit(init, out_shardings=parallel.replicated(mesh))(jax.random.key(seed))
