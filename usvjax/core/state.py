"""The train state: step, parameters, BatchNorm statistics and optimizer state, and with
``config.optimizer.ema_decay`` > 0 an exponential moving average of the parameters.

EMA weights (``EmaTrainState.ema_params``): ema = d * ema + (1 - d) * params after every
optimizer update (``train_step``), starting from the initial (or pretrained) parameters,
without bias correction. They are what validation, the best checkpoint's choice and
``evaluate`` use (``inference_variables``; restored by ``checkpoint.restore_variables``),
and the mean teacher's weights (``usvjax.loss_terms.mean_teacher``). BatchNorm: the running
``batch_stats`` are already moving averages (of the batch statistics), so the EMA weights
are applied with the model's own ``batch_stats``, not an average of them, as timm's
``ModelEmaV2`` and big_vision do. Without EMA the state is the plain ``TrainState``, and its
checkpoints are those of a run without the option. (The EMA is part of the compiled step,
so XLA may round the parameters of a run with it differently, in the last bits, from those
of the same run without it.)
"""
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
    """The variables ``model.apply`` takes, with the trained parameters."""
    return {'params': self.params, 'batch_stats': self.batch_stats}

  def inference_variables(self) -> dict:
    """The variables validation and evaluation apply the model with."""
    return self.variables()


@flax.struct.dataclass
class EmaTrainState(TrainState):
  """``TrainState`` with the EMA of the parameters (``config.optimizer.ema_decay`` > 0)."""
  ema_params: Any = None

  def inference_variables(self) -> dict:
    """The EMA weights with the model's BatchNorm statistics (module docstring)."""
    return {'params': self.ema_params, 'batch_stats': self.batch_stats}


def init_batch(config: ml_collections.ConfigDict, fields: spec_lib.Spec) -> dict[str, np.ndarray]:
  """One example of the batch specification ``fields`` (a variable time axis gets
  ``config.input.max_frames`` frames): the shapes a model is initialised from."""
  return spec_lib.example_batch(fields, 1, config.input.max_frames)


def _init_variables(model, batch: dict, rng: jax.Array) -> dict:
  variables = model.init({'params': rng, 'dropout': rng}, batch, train=False)
  return {'params': variables['params'], 'batch_stats': variables.get('batch_stats', {})}


def init_state(model, tx: optax.GradientTransformation, batch: dict, seed: int,
               mesh: jax.sharding.Mesh, ema: bool = False) -> TrainState:
  """Initialises parameters from ``batch``'s shapes, replicated over ``mesh``; with
  ``ema`` an ``EmaTrainState`` whose EMA starts at the initial parameters."""
  def init(rng):
    variables = _init_variables(model, batch, rng)
    state = TrainState(step=jnp.zeros((), jnp.int32), params=variables['params'],
                       batch_stats=variables['batch_stats'],
                       opt_state=tx.init(variables['params']))
    return with_ema(state) if ema else state
  return jax.jit(init, out_shardings=parallel.replicated(mesh))(jax.random.key(seed))


def with_ema(state: TrainState) -> EmaTrainState:
  """``state`` with an EMA that starts at its parameters (a copy: the train step donates
  both)."""
  fields = {name: getattr(state, name) for name in ('step', 'params', 'batch_stats',
                                                    'opt_state')}
  return EmaTrainState(**fields, ema_params=jax.tree.map(jnp.copy, state.params))


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
  shape for shape. Several comma-separated targets each get the same weights (STPFNet's
  'encoder,memory_network/trunk': one ImageNet ResNet for the query and the memory
  encoder, as STM initialises both). An EMA starts again at the loaded parameters.
  """
  for part in target.split(','):
    state = _load_into(state, checkpoint_dir, part.strip())
  return with_ema(state) if isinstance(state, EmaTrainState) else state


def _load_into(state: TrainState, checkpoint_dir: str, target: str) -> TrainState:
  """``load_pretrained`` of one sub-module ``target``."""
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
