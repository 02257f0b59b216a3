"""Small shared Linen layers: a masked softmax, conv + norm + ReLU, a plain convolutional
encoder, and the U-Net decoder that the video segmenters put on a ResNet encoder."""
from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


def masked_softmax(scores: jnp.ndarray, valid: jnp.ndarray, axis: int) -> jnp.ndarray:
  """softmax(scores) along ``axis`` over the entries where ``valid`` (broadcastable) holds;
  invalid entries get exactly 0, and a slice with no valid entry is all 0 (not NaN)."""
  valid = jnp.broadcast_to(valid, scores.shape)
  scores = jnp.where(valid, scores, -jnp.inf)
  top = jnp.max(scores, axis=axis, keepdims=True)
  weights = jnp.where(valid, jnp.exp(scores - jnp.where(jnp.isfinite(top), top, 0.0)), 0.0)
  return weights / jnp.maximum(jnp.sum(weights, axis=axis, keepdims=True), 1e-30)


class ConvNormAct(nn.Module):
  """3x3 (by default) convolution, BatchNorm, ReLU. NHWC in and out."""
  features: int
  kernel_size: int = 3
  strides: int = 1

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    x = nn.Conv(self.features, (self.kernel_size,) * 2, (self.strides,) * 2, use_bias=False)(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
    return nn.relu(x)


class ConvEncoder(nn.Module):
  """U-Net style encoder: per level two ConvNormAct, then 2x2 max-pool (none after the last).

  Returns the features of every level, finest first: level i has stride 2**i and
  ``width * 2**i`` channels.
  """
  width: int = 16
  levels: int = 4

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool) -> list[jnp.ndarray]:
    features = []
    for level in range(self.levels):
      if level:
        x = nn.max_pool(x, (2, 2), (2, 2))
      channels = self.width * 2**level
      x = ConvNormAct(channels)(x, train=train)
      x = ConvNormAct(channels)(x, train=train)
      features.append(x)
    return features


class UNetDecoder(nn.Module):
  """U-Net decoder: four blocks from stride 32 up to stride 2; returns every block's output."""
  channels: Sequence[int] = (256, 128, 64, 32)

  @nn.compact
  def __call__(self, features: dict[str, jnp.ndarray], *, train: bool) -> list[jnp.ndarray]:
    x, outputs = features['stride32'], []
    for i, (skip_name, width) in enumerate(zip(('stride16', 'stride8', 'stride4', 'stride2'),
                                               self.channels)):
      skip = features[skip_name]
      x = jax.image.resize(x, skip.shape[:3] + (x.shape[-1],), 'bilinear')
      x = jnp.concatenate([x, skip], axis=-1)
      x = ConvNormAct(width, name=f'block{i}_conv0')(x, train=train)
      x = ConvNormAct(width, name=f'block{i}_conv1')(x, train=train)
      outputs.append(x)
    return outputs
