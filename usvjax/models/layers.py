"""Small shared Linen layers: conv + norm + ReLU, and a plain convolutional encoder."""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp


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
