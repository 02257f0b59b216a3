"""Image U-Net (Ronneberger et al., 2015): the per-frame, "image-based" baseline.

It segments the target frame of a clip (the last frame, ``frames[:, -1]``) and ignores the
others, so it is the reference that temporal methods must beat.

Input ``batch['frames']`` float32 [B, T, H, W, C] in [0, 1] (H, W divisible by
2**(levels-1)); output ``{'logits': [B, H, W, 1]}`` (pre-sigmoid lesion logits).
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from usvjax.models import layers


class UNet(nn.Module):
  width: int = 16
  levels: int = 4

  @nn.compact
  def __call__(self, batch: dict[str, jnp.ndarray], *, train: bool) -> dict[str, jnp.ndarray]:
    x = batch['frames'][:, -1]
    skips = layers.ConvEncoder(self.width, self.levels)(x * 2.0 - 1.0, train=train)
    x = skips[-1]
    for skip in reversed(skips[:-1]):
      b, h, w, c = skip.shape
      x = jax.image.resize(x, (b, h, w, x.shape[-1]), 'bilinear')
      x = jnp.concatenate([x, skip], axis=-1)
      x = layers.ConvNormAct(c)(x, train=train)
      x = layers.ConvNormAct(c)(x, train=train)
    return {'logits': nn.Conv(1, (1, 1))(x)}
