"""Transposed convolutions computed as sub-pixel convolutions: the same numbers, faster on CPU.

A transposed convolution of stride s (``lax.conv_transpose``: a convolution of the input
dilated by s, with s - 1 zeros between its pixels) computes every output pixel of phase
(a, b) = (row mod s, column mod s) from the kernel taps that meet real input pixels: taps
t with t = (lo - a) mod s, (lo - a) mod s + s, ... of each axis (lo: the low padding of the
dilated input). So the output is s x s ordinary stride-1 convolutions of the undilated input
with sub-kernels ``kernel[t0_a::s, t0_b::s]``, interleaved (depth to space). XLA:CPU runs
the dilated form through a generic convolution (16% of a FLA-Net training step's
operation time at 224 px, ``scripts/profile_train_step.py``,
docs/results/step_profile_cpu.csv) and multiplies the s^2 - 1 zeros of every window; the sub-pixel
form skips the zeros and its gradients are ordinary convolution gradients (1x1 sub-kernels
go through ``pointwise``: matrix products).

``ConvTranspose`` is ``nn.ConvTranspose`` (same fields, parameters, shapes and
initialisers, so checkpoints and converted weights are unchanged) computed this way, for 2-D
inputs with explicit, 'SAME' or 'VALID' padding; anything else (kernel dilation, a mask,
'CIRCULAR' padding) is ``nn.ConvTranspose`` unchanged.
"""
from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp
from jax import lax

from usvjax.models.backbones import pointwise


def dilated_padding(kernel: int, stride: int, padding) -> tuple[int, int]:
  """(low, high) padding of the dilated input that ``lax.conv_transpose`` uses for one
  axis: explicit pairs as given; 'SAME' gives an output of input * stride, 'VALID' of
  (input - 1) * stride + kernel."""
  if not isinstance(padding, str):
    return tuple(padding)
  if padding == 'SAME':
    total = kernel + stride - 2
    low = kernel - 1 if stride > kernel - 1 else -(-total // 2)
  elif padding == 'VALID':
    total = kernel + stride - 2 + max(kernel - stride, 0)
    low = kernel - 1
  else:
    raise ValueError(f'padding {padding!r}: use SAME, VALID or (low, high) pairs.')
  return low, total - low


def _axis_paddings(padding) -> list:
  """The padding of each spatial axis, from any form ``nn.ConvTranspose`` takes: 'SAME' or
  'VALID', or an int, for both axes; or one int or (low, high) pair per axis. (Flax
  normalises these with a helper outside its public API, so the few lines are here.)"""
  if isinstance(padding, (str, int)):
    padding = (padding, padding)
  if len(padding) != 2:
    raise ValueError(f'padding {padding!r}: give a string, an int, or one int or (low, high) '
                     'pair for each of the two spatial axes.')
  return [(p, p) if isinstance(p, int) else p for p in padding]


def _phase_taps(kernel: int, stride: int, low: int, phase: int) -> tuple[int, int, int]:
  """(first tap, number of taps, input offset of the first tap) of output phase ``phase``
  along one axis: output s*m + phase = sum_j input[m + offset + j] * kernel[first + j*s]."""
  first = (low - phase) % stride
  count = len(range(first, kernel, stride))
  return first, count, (phase + first - low) // stride


def conv_transpose(inputs: jnp.ndarray, kernel: jnp.ndarray, strides: Sequence[int],
                   padding, transpose_kernel: bool = False, precision=None) -> jnp.ndarray:
  """``lax.conv_transpose(inputs, kernel, strides, padding, dimension_numbers=('NHWC',
  'HWIO', 'NHWC'), transpose_kernel=transpose_kernel)`` as s_h x s_w sub-pixel
  convolutions. inputs [B, H, W, C_in], kernel [kh, kw, C_in, C_out] ([kh, kw, C_out, C_in]
  with ``transpose_kernel``) -> [B, H', W', C_out], H' = (H - 1) s_h + 1 + low + high - kh.
  ``padding`` takes ``nn.ConvTranspose``'s forms as well (see :func:`_axis_paddings`).
  """
  if transpose_kernel:  # The gradient of a convolution: flipped taps, swapped channels.
    kernel = jnp.swapaxes(kernel[::-1, ::-1], 2, 3)
  pads = [dilated_padding(k, s, p) for k, s, p in
          zip(kernel.shape[:2], strides, _axis_paddings(padding))]
  sizes = [(n - 1) * s + 1 + lo + hi - k + 1 for n, s, (lo, hi), k in
           zip(inputs.shape[1:3], strides, pads, kernel.shape[:2])]
  rows = [-(-size // s) for size, s in zip(sizes, strides)]  # Outputs per phase.
  phases = []
  for a in range(strides[0]):
    for b in range(strides[1]):
      taps = [_phase_taps(k, s, lo, phase) for k, s, (lo, _), phase in
              zip(kernel.shape[:2], strides, pads, (a, b))]
      phases.append(_phase(inputs, kernel, strides, taps, rows, precision))
  out = jnp.stack(phases, axis=1).reshape(
      (inputs.shape[0], strides[0], strides[1], rows[0], rows[1], kernel.shape[-1]))
  out = out.transpose(0, 3, 1, 4, 2, 5).reshape(
      (inputs.shape[0], rows[0] * strides[0], rows[1] * strides[1], kernel.shape[-1]))
  return out[:, :sizes[0], :sizes[1]]


def _phase(inputs, kernel, strides, taps, rows, precision) -> jnp.ndarray:
  """One phase: [B, rows_h, rows_w, C_out], a VALID stride-1 convolution of the input
  padded (or cropped, for negative amounts) to the phase's window."""
  if any(count == 0 for _, count, _ in taps):  # No tap meets an input pixel: zeros.
    return jnp.zeros((inputs.shape[0], *rows, kernel.shape[-1]),
                     jnp.result_type(inputs, kernel))
  sub = kernel[taps[0][0]::strides[0], taps[1][0]::strides[1]]
  config = [(0, 0, 0)]
  for (_, count, offset), n, m in zip(taps, inputs.shape[1:3], rows):
    config.append((-offset, m + offset + count - 1 - n, 0))
  window = lax.pad(inputs, jnp.zeros((), inputs.dtype), config + [(0, 0, 0)])
  return pointwise.conv_general_dilated(window, sub, (1, 1), 'VALID',
                                        dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
                                        precision=precision)


class ConvTranspose(nn.ConvTranspose):
  """``nn.ConvTranspose`` computed as sub-pixel convolutions (see the module docstring)."""

  @nn.compact
  def __call__(self, inputs: jnp.ndarray) -> jnp.ndarray:
    kernel_size = tuple(self.kernel_size) if not isinstance(self.kernel_size, int) else (
        self.kernel_size,) * 2
    dilation = self.kernel_dilation
    if (len(kernel_size) != 2 or inputs.ndim != 4 or self.mask is not None or
        self.padding == 'CIRCULAR' or dilation not in (None, 1, (1, 1))):
      return super().__call__(inputs)
    strides = self.strides or (1, 1)
    strides = (strides,) * 2 if isinstance(strides, int) else tuple(strides)
    channels = (self.features, inputs.shape[-1]) if self.transpose_kernel else (
        inputs.shape[-1], self.features)
    kernel = self.param('kernel', self.kernel_init, kernel_size + channels,
                        self.param_dtype)
    bias = (self.param('bias', self.bias_init, (self.features,), self.param_dtype)
            if self.use_bias else None)
    inputs, kernel, bias = self.promote_dtype(inputs, kernel, bias, dtype=self.dtype)
    y = conv_transpose(inputs, kernel, strides, self.padding, self.transpose_kernel,
                       self.precision)
    return y if bias is None else y + bias
