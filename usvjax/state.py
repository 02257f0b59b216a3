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
  """Loads converted weights (``experiments/convert_weights.py``) into ``params[target]``
  and ``batch_stats[target]``; every variable of the target must be there, shape for shape.
  """
  from usvjax.models.backbones import convert  # pylint: disable=g-import-not-at-top
  if target not in state.params:
    raise ValueError(f'config.init.target={target!r} is not a sub-module of the model; it has '
                     f'{sorted(state.params)}.')
  pretrained = convert.load_converted(checkpoint_dir)
  updated = {}
  for collection in ('params', 'batch_stats'):
    ours = traverse_util.flatten_dict(getattr(state, collection).get(target, {}))
    theirs = traverse_util.flatten_dict(pretrained.get(collection, {}))
    problems = ['/'.join(path) for path, leaf in ours.items()
                if path not in theirs or theirs[path].shape != leaf.shape]
    if problems:
      raise ValueError(f'pretrained checkpoint {checkpoint_dir!r} does not fit the model\'s '
                       f'{target!r} (e.g. {problems[:4]}); convert weights of the same '
                       'architecture and normalisation.')
    loaded = {path: jnp.asarray(theirs[path], leaf.dtype) for path, leaf in ours.items()}
    updated[collection] = dict(getattr(state, collection),
                               **{target: traverse_util.unflatten_dict(loaded)})
  return state.replace(**updated)
