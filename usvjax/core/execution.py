"""How a model's computation runs, from the config, without changing its definition.

``wrap(model, config)`` returns an object used like the model (``init``, ``apply`` and every
other attribute, e.g. the streaming ``start``/``step``), whose ``apply``

* with ``config.compute_dtype='bfloat16'`` (mixed precision) casts the floating parameters,
  the floating input arrays (frames, masks) and the input of every convolution and dense
  layer (``COMPUTE_LAYERS``, through ``nn.intercept_methods``: a float32 constant such as
  ImageNet normalisation would otherwise promote the rest of the network back to float32)
  to bfloat16 at use, and every floating output back to float32. Convolutions and matmuls
  then run in bfloat16, while the parameters, and so the
  optimizer state made from them and the gradients (the transpose of the cast casts the
  cotangent back), stay float32, and the loss and the metrics are computed in float32 from
  float32 outputs. BatchNorm statistics stay float32: the ``batch_stats`` collection is not
  cast, and Flax's normalisation layers (``force_float32_reductions``, the default) compute
  batch means and variances in float32 and keep their running averages in float32. This is
  Flax's ``dtype=bfloat16, param_dtype=float32`` for every layer at once; elementwise
  operations that meet a float32 constant run in float32 until the next layer.
* with ``config.remat`` builds the ResNet backbones with every residual block
  rematerialised (``resnet.rematerialised``): its activations are recomputed in the backward
  pass instead of stored. Parameters, outputs and gradients are unchanged.
* with ``config.pointwise_matmul`` (the default) the backbones' 1x1 convolutions run as
  matrix products (``backbones/pointwise.py``), with ``False`` as XLA convolutions: the same
  numbers up to float32 rounding; the matrix products' gradients are faster on CPU.

Checkpoints do not depend on either switch.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from usvjax.errors import ConfigError
from usvjax.models.backbones import pointwise
from usvjax.models.backbones import resnet

DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}
COMPUTE_LAYERS = (nn.Conv, nn.ConvTranspose, nn.ConvLocal, nn.Dense, nn.DenseGeneral,
                  nn.Einsum)


def cast_floating(tree: Any, dtype: Any) -> Any:
  """``tree`` with every floating array cast to ``dtype`` (integers, booleans, PRNG keys
  and non-arrays unchanged)."""
  def cast(x):
    floating = hasattr(x, 'dtype') and jnp.issubdtype(x.dtype, jnp.floating)
    return x.astype(dtype) if floating and x.dtype != dtype else x
  return jax.tree.map(cast, tree)


class Executed:
  """The model, applied in ``dtype`` (float32 parameters, inputs and outputs at the
  boundary), with ``remat`` residual blocks; see the module docstring."""

  def __init__(self, model, dtype: Any, remat: bool, pointwise_matmul: bool = True):
    self.model, self.dtype, self.remat = model, dtype, remat
    self.pointwise_matmul = pointwise_matmul

  def apply(self, variables: dict, *args, **kwargs):
    """``model.apply``: same arguments, same (float32) results."""
    variables = dict(variables, params=cast_floating(variables['params'], self.dtype))
    args, kwargs = cast_floating((args, kwargs), self.dtype)
    with resnet.rematerialised(self.remat), pointwise.as_matmuls(self.pointwise_matmul), \
        nn.intercept_methods(self._cast_layer_inputs):
      return cast_floating(self.model.apply(variables, *args, **kwargs), jnp.float32)

  def _cast_layer_inputs(self, next_fun, args, kwargs, context):
    if context.method_name == '__call__' and isinstance(context.module, COMPUTE_LAYERS):
      args, kwargs = cast_floating((args, kwargs), self.dtype)
    return next_fun(*args, **kwargs)

  def __getattr__(self, name: str):
    return getattr(self.model, name)


def wrap(model, config: ml_collections.ConfigDict):
  """``model`` as ``config.compute_dtype`` and ``config.remat`` run it (the model itself
  when they are float32 and off)."""
  if config.compute_dtype not in DTYPES:
    raise ConfigError(f'config.compute_dtype={config.compute_dtype!r}: use one of '
                      f'{sorted(DTYPES)}.')
  dtype = DTYPES[config.compute_dtype]
  if dtype == jnp.float32 and not config.remat and config.pointwise_matmul:
    return model
  return Executed(model, dtype, config.remat, config.pointwise_matmul)
