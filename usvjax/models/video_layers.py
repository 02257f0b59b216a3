"""Layers of the video-network baselines that keep padded frames out of every result.

A batch of videos is ``frames`` [B, T, H, W, C] padded to a length bucket, with ``valid``
[B, T] marking the real frames (a video's real frames come first). The rule that makes
padding change nothing, in training and in inference:

* **Padded frames are zero wherever a layer that mixes frames reads them.** The input's
  padded frames are zeroed (``video_input``), and every normalisation layer zeroes its
  output there (``MaskedBatchNorm``; ReLU, residual sums and per-frame 2-D layers keep the
  zeros). A temporal convolution with zero padding then reads exactly what it reads at the
  end of the video run alone at its true length: zeros.
* **A temporal stride keeps ceil(n / s) frames** (``strided_valid``): output frame t' of a
  stride-s layer (kernel 3 with padding 1, centred on input frame s t'; kernel 1; or a
  ceil-mode pooling window starting there) is real iff input frame s t' is, so a video of
  n frames keeps ceil(n / s), the output length of the same layer on the video alone.
* **BatchNorm statistics count the real frames only** (``MaskedBatchNorm``): in training
  the mean and variance are those of the real frames of the whole batch (all devices: the
  batch is one global array), so the updated running averages and every real output are
  the same whether a video is padded to 8 frames or to 32. (Flax's BatchNorm would count
  the zeros: 33-48% of a bucket can be padding.)
* **Pooling averages the real frames only** (``masked_video_mean``).

Frames are in [0, 1] (grey frames are repeated to 3 channels) and normalised with the
statistics of the weights one may import: Kinetics-400 (torchvision's video models) or
ImageNet (2-D backbones, TSM).
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from usvjax.models import frame_classifier

KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)


def frame_weights(valid: jnp.ndarray, x: jnp.ndarray) -> jnp.ndarray:
  """``valid`` [B, T] as float weights broadcastable against ``x`` [B, T, ...]."""
  return valid.astype(x.dtype).reshape(valid.shape + (1,) * (x.ndim - 2))


def video_input(frames: jnp.ndarray, valid: jnp.ndarray, mean: tuple[float, ...],
                std: tuple[float, ...]) -> jnp.ndarray:
  """Frames [B, T, H, W, 1 or 3] in [0, 1] -> normalised RGB with padded frames zero."""
  if frames.shape[-1] == 1:
    frames = jnp.broadcast_to(frames, frames.shape[:-1] + (3,))
  x = (frames - jnp.asarray(mean)) / jnp.asarray(std)
  return x * frame_weights(valid, x)


def strided_valid(valid: jnp.ndarray, stride: int) -> jnp.ndarray:
  """The ``valid`` mask [B, ceil(T / stride)] after a temporal stride (see the module
  docstring): output frame t' is real iff input frame stride * t' is."""
  return valid[:, ::stride]


def masked_video_mean(x: jnp.ndarray, valid: jnp.ndarray) -> jnp.ndarray:
  """Mean of x [B, T, H, W, C] over the real frames and all positions -> [B, C] (zero for a
  video without real frames)."""
  return frame_classifier.masked_mean(jnp.mean(x, axis=(2, 3)), valid)


class MaskedBatchNorm(nn.Module):
  """BatchNorm of x [B, T, ..., C] whose batch statistics count the real frames only.

  Train: y = (x - mu) / sqrt(sigma^2 + eps) * scale + bias with mu, sigma^2 the biased
  mean and variance over the real frames' values of every channel; running averages
  ``r <- momentum r + (1 - momentum) batch`` (PyTorch's m = 0.1 is momentum 0.9; PyTorch
  keeps the unbiased variance there, see ``backbones/resnet.py``). Inference: the running
  averages. Padded frames of the output are zero. Variables are named like Flax's
  BatchNorm (``scale``, ``bias``; ``batch_stats`` ``mean``, ``var``).
  """
  momentum: float = 0.9
  epsilon: float = 1e-5

  @nn.compact
  def __call__(self, x: jnp.ndarray, valid: jnp.ndarray, train: bool) -> jnp.ndarray:
    channels = x.shape[-1]
    scale = self.param('scale', nn.initializers.ones, (channels,))
    bias = self.param('bias', nn.initializers.zeros, (channels,))
    running_mean = self.variable('batch_stats', 'mean', jnp.zeros, (channels,))
    running_var = self.variable('batch_stats', 'var', jnp.ones, (channels,))
    weights = frame_weights(valid, x)
    if train:
      axes = tuple(range(x.ndim - 1))
      count = jnp.maximum(jnp.sum(weights) * (x[0, 0].size // channels), 1.0)
      mean = jnp.sum(x * weights, axes) / count
      var = jnp.sum(jnp.square(x - mean) * weights, axes) / count
      if not self.is_initializing():
        running_mean.value = self.momentum * running_mean.value + (1 - self.momentum) * mean
        running_var.value = self.momentum * running_var.value + (1 - self.momentum) * var
    else:
      mean, var = running_mean.value, running_var.value
    y = (x - mean) * jax.lax.rsqrt(var + self.epsilon) * scale + bias
    return y * weights
