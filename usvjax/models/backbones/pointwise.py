"""1x1 convolutions computed as matrix products: the same numbers, faster gradients on CPU.

XLA:CPU lowers the filter gradient of a 1x1 convolution as a convolution whose window is
the whole feature map; on this project's 2-core CPU it ran at 6-12 GFLOP/s against 40-60
for the same layer's forward pass, and ResNet-50's 1x1 convolutions made most of a training
step (``scripts/profile_conv_backward.py``, docs/performance.md). Written as a strided
slice and a matrix product over channels, the convolution's gradients are matrix products
too, which XLA runs at matmul speed.

``conv_general_dilated`` is a drop-in for ``lax.conv_general_dilated`` (Flax's
``nn.Conv(..., conv_general_dilated=pointwise.conv_general_dilated)``): a 1x1 kernel without
padding, dilation or feature groups, channels last, is a matrix product (strides subsample
the input first); anything else, or inside ``as_matmuls(False)`` (``config.pointwise_matmul =
False``), is ``lax.conv_general_dilated`` unchanged. Parameters (names, shapes, layout
[1, 1, C_in, C_out]) are nn.Conv's, so checkpoints and converted weights do not depend on
the switch.
"""
from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from collections.abc import Sequence

import jax
from jax import lax

_AS_MATMUL = contextvars.ContextVar('usvjax_pointwise_matmul', default=True)


@contextlib.contextmanager
def as_matmuls(enabled: bool) -> Iterator[None]:
  """Models traced inside this context run their 1x1 convolutions as matrix products
  (``enabled``, the default outside any context) or as convolutions."""
  token = _AS_MATMUL.set(enabled)
  try:
    yield
  finally:
    _AS_MATMUL.reset(token)


def _trivial(values: Sequence[int] | None) -> bool:
  return values is None or all(v == 1 for v in values)


def _unpadded(padding) -> bool:
  """'VALID', or 'SAME' (no padding for a 1x1 kernel), or all-zero (low, high) pairs."""
  return isinstance(padding, str) or all(tuple(p) == (0, 0) for p in padding)


def _channels_last(dimension_numbers, ndim: int) -> bool:
  """The layout Flax's nn.Conv uses: (batch, spatial..., features) for input and output,
  (spatial..., in, out) for the kernel."""
  if dimension_numbers is None:
    return False
  numbers = lax.conv_dimension_numbers((1,) * ndim, (1,) * ndim, dimension_numbers)
  spatial = tuple(range(1, ndim - 1))
  return (numbers.lhs_spec == (0, ndim - 1) + spatial and
          numbers.out_spec == (0, ndim - 1) + spatial and
          numbers.rhs_spec == (ndim - 1, ndim - 2) + tuple(range(ndim - 2)))


def conv_general_dilated(lhs: jax.Array, rhs: jax.Array, window_strides: Sequence[int],
                         padding, lhs_dilation: Sequence[int] | None = None,
                         rhs_dilation: Sequence[int] | None = None, dimension_numbers=None,
                         feature_group_count: int = 1, batch_group_count: int = 1,
                         precision=None, preferred_element_type=None) -> jax.Array:
  """``lax.conv_general_dilated``; a pointwise (1x1) convolution as a matrix product.

  Shapes (channels last): ``lhs`` [B, *spatial, C_in], ``rhs`` [1, ..., 1, C_in, C_out] ->
  [B, *ceil(spatial / strides), C_out].
  """
  pointwise = (_AS_MATMUL.get() and all(k == 1 for k in rhs.shape[:-2]) and
               _unpadded(padding) and _trivial(lhs_dilation) and _trivial(rhs_dilation) and
               feature_group_count == 1 and batch_group_count == 1 and
               _channels_last(dimension_numbers, lhs.ndim))
  if not pointwise:
    return lax.conv_general_dilated(
        lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
        feature_group_count, batch_group_count, precision, preferred_element_type)
  strided = lhs[(slice(None),) + tuple(slice(None, None, s) for s in window_strides)]
  rows = strided.reshape(-1, strided.shape[-1])  # [B * spatial, C_in]: a plain matmul, whose
  kernel = rhs.reshape(rhs.shape[-2:])          # filter gradient XLA needs no copy for.
  out = lax.dot_general(rows, kernel, (((1,), (0,)), ((), ())), precision=precision,
                        preferred_element_type=preferred_element_type)
  return out.reshape(strided.shape[:-1] + kernel.shape[-1:])
