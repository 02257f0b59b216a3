"""The train state: step, parameters, BatchNorm statistics and optimizer state."""
from __future__ import annotations

import os
from typing import Any

import flax
from flax import traverse_util
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from input_pipeline import spec as spec_lib
from usvjax.core import checkpoint
from usvjax.core import parallel
from usvjax.errors import ConfigError


@flax.struct.dataclass
class TrainState:
  step: jnp.ndarray
  params: Any
  batch_stats: Any
  opt_state: Any

  def variables(self) -> dict:
    """The variables ``model.apply`` takes."""
    return {'params': self.params, 'batch_stats': self.batch_stats}


def init_batch(config: ml_collections.ConfigDict, fields: spec_lib.Spec) -> dict[str, np.ndarray]:
  """One example of the batch specification ``fields`` (a variable time axis gets
  ``config.input.max_frames`` frames): the shapes a model is initialised from."""
  return spec_lib.example_batch(fields, 1, config.input.max_frames)


def _init_variables(model, batch: dict, rng: jax.Array) -> dict:
  variables = model.init({'params': rng, 'dropout': rng}, batch, train=False)
  return {'params': variables['params'], 'batch_stats': variables.get('batch_stats', {})}


def init_state(model, tx: optax.GradientTransformation, batch: dict, seed: int,
               mesh: jax.sharding.Mesh) -> TrainState:
  """Initialises parameters from ``batch``'s shapes, replicated over ``mesh``."""
  def init(rng):
    variables = _init_variables(model, batch, rng)
    return TrainState(step=jnp.zeros((), jnp.int32), params=variables['params'],
                      batch_stats=variables['batch_stats'],
                      opt_state=tx.init(variables['params']))
  return jax.jit(init, out_shardings=parallel.replicated(mesh))(jax.random.key(seed))


def abstract_variables(model, batch: dict, mesh: jax.sharding.Mesh) -> dict:
  """The shapes, dtypes and (replicated) shardings of the model's ``params`` and
  ``batch_stats``, from ``jax.eval_shape``: nothing is computed or allocated."""
  shapes = jax.eval_shape(lambda rng: _init_variables(model, batch, rng), jax.random.key(0))
  sharding = parallel.replicated(mesh)
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
                      shapes)


def _pretrained_variables(checkpoint_dir: str, prefix: tuple[str, ...]) -> dict:
  """{'params': ..., 'batch_stats': ...} of the weights to load into sub-module ``prefix``:
  a folder written by ``experiments/convert_weights.py``, or a usvjax run (a workdir with
  ``checkpoints/``, e.g. contrastive pretraining), whose latest checkpoint's sub-module of
  the same path is taken."""
  from usvjax.models.backbones import convert  # pylint: disable=g-import-not-at-top
  if not os.path.isdir(os.path.join(checkpoint_dir, 'checkpoints')):
    return convert.load_converted(checkpoint_dir)
  raw = checkpoint.restore_latest_raw(checkpoint_dir)
  out = {}
  for collection in ('params', 'batch_stats'):
    tree = raw.get(collection) or {}
    for key in prefix:
      tree = tree.get(key, {}) if isinstance(tree, dict) else {}
    out[collection] = tree
  if not out['params']:
    raise ConfigError(f'the run {checkpoint_dir!r} has no sub-module {"/".join(prefix)!r}: '
                      'set config.init.target to a path both models share (CLMAN: encoder).')
  return out


def load_pretrained(state: TrainState, checkpoint_dir: str, target: str) -> TrainState:
  """Loads pretrained weights (see ``_pretrained_variables``) into the sub-module ``target``
  ('/'-separated path, e.g. 'encoder/backbone'; '' is the whole model, e.g. a converted
  released FLA-Net) of params and batch_stats; every variable of the target must be there,
  shape for shape.
  """
  prefix = tuple(part for part in target.split('/') if part)
  params = traverse_util.flatten_dict(state.params)
  if not any(path[:len(prefix)] == prefix for path in params):
    top = sorted({'/'.join(p[:len(prefix)]) for p in params})
    raise ConfigError(f'config.init.target={target!r} is not a sub-module of the model; '
                      f'candidates: {top}.')
  pretrained = _pretrained_variables(checkpoint_dir, prefix)
  updated = {}
  for collection in ('params', 'batch_stats'):
    ours = traverse_util.flatten_dict(getattr(state, collection))
    theirs = traverse_util.flatten_dict(pretrained.get(collection, {}))
    targets = {path: path[len(prefix):] for path in ours if path[:len(prefix)] == prefix}
    problems = ['/'.join(inner) for path, inner in targets.items()
                if inner not in theirs or theirs[inner].shape != ours[path].shape]
    if problems:
      raise ConfigError(f'pretrained checkpoint {checkpoint_dir!r} does not fit the model\'s '
                        f'{target!r} (e.g. {problems[:4]}); convert weights of the same '
                        'architecture and normalisation.')
    for path, inner in targets.items():
      ours[path] = jnp.asarray(theirs[inner], ours[path].dtype)
    updated[collection] = traverse_util.unflatten_dict(ours)
  return state.replace(**updated)
