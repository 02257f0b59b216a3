"""The train state: step, parameters, BatchNorm statistics and optimizer state."""
from __future__ import annotations

from typing import Any

import flax
from flax import traverse_util
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


def load_pretrained(state: TrainState, checkpoint_dir: str, target: str) -> TrainState:
  """Loads converted weights (``experiments/convert_weights.py``) into the sub-module
  ``target`` ('/'-separated path, e.g. 'encoder/backbone') of params and batch_stats;
  every variable of the target must be there, shape for shape.
  """
  from usvjax.models.backbones import convert  # pylint: disable=g-import-not-at-top
  prefix = tuple(target.split('/'))
  params = traverse_util.flatten_dict(state.params)
  if not any(path[:len(prefix)] == prefix for path in params):
    top = sorted({'/'.join(p[:len(prefix)]) for p in params})
    raise ValueError(f'config.init.target={target!r} is not a sub-module of the model; '
                     f'candidates: {top}.')
  pretrained = convert.load_converted(checkpoint_dir)
  updated = {}
  for collection in ('params', 'batch_stats'):
    ours = traverse_util.flatten_dict(getattr(state, collection))
    theirs = traverse_util.flatten_dict(pretrained.get(collection, {}))
    targets = {path: path[len(prefix):] for path in ours if path[:len(prefix)] == prefix}
    problems = ['/'.join(inner) for path, inner in targets.items()
                if inner not in theirs or theirs[inner].shape != ours[path].shape]
    if problems:
      raise ValueError(f'pretrained checkpoint {checkpoint_dir!r} does not fit the model\'s '
                       f'{target!r} (e.g. {problems[:4]}); convert weights of the same '
                       'architecture and normalisation.')
    for path, inner in targets.items():
      ours[path] = jnp.asarray(theirs[inner], ours[path].dtype)
    updated[collection] = traverse_util.unflatten_dict(ours)
  return state.replace(**updated)
