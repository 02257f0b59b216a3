"""A small TimeSformer (Bertasius, Wang and Torresani, ICML 2021; CLMAN Table 4) with divided
space-time attention.

Each frame is cut into ``patch`` x ``patch`` patches, embedded linearly to ``dim``; a class
token is prepended and a learned spatial position embedding added to every frame's tokens,
a learned time embedding (``num_frames`` of them: the longest video) to the patch tokens.
Each of ``depth`` blocks (pre-norm, ``heads`` heads) does, as the released code:

1. temporal attention: each patch position attends over the frames,
   z_patch <- z_patch + W_t MSA_time(LN(z_patch)) (W_t a linear layer, zero-initialised
   in every block but the first, as released);
2. spatial attention: in each frame, the class token and that frame's patches attend to
   each other; the class token's result is averaged over the frames,
   z <- z + MSA_space(LN(z));
3. z <- z + MLP(LN(z)) (``mlp_ratio`` x ``dim`` hidden units, GELU).

The logits are a linear layer on the final LayerNorm of the class token. ``paper`` is
ViT-S/16 (dim 384, depth 12, 6 heads: 30.5M parameters, ViT-S's 22M and the temporal
attention), "small" as issue 20 asks; the released TimeSformer is ViT-B/16
(``--config.model.dim=768 --config.model.heads=12``).

The attention's key projection keeps its bias, as the released model's qkv projection
does, although the softmax over keys cancels it (each query's scores shift by one
constant): its gradient is zero.

**Padding.** Padded frames are masked out of temporal attention (they are no key of any
query) and out of the class token's average over frames; nothing else mixes frames, and
there is no BatchNorm. So each video of a padded batch gets, in training and inference,
exactly the logits of the video alone.

Input ``frames`` [B, T, H, W, 1 or 3] in [0, 1] (ImageNet-normalised here; H and W
multiples of ``patch``), ``valid`` [B, T] with T <= ``num_frames``. Outputs ``logits``
[B, K] and ``pooled`` [B, dim] (the class token).
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from usvjax.errors import ConfigError
from usvjax.models import frame_classifier
from usvjax.models import video_layers
from usvjax.models.backbones import resnet


class DividedBlock(nn.Module):
  """One block of divided space-time attention on (class token [B, D], patches
  [B, T, N, D]) with ``valid`` [B, T]."""
  heads: int
  mlp_ratio: int = 4
  zero_temporal_fc: bool = True

  @nn.compact
  def __call__(self, cls: jnp.ndarray, patches: jnp.ndarray, valid: jnp.ndarray
               ) -> tuple[jnp.ndarray, jnp.ndarray]:
    dim = patches.shape[-1]
    # Temporal: [B, N, T, D], keys limited to the real frames.
    y = nn.LayerNorm(name='temporal_norm')(patches).transpose(0, 2, 1, 3)
    mask = nn.make_attention_mask(valid, valid)[:, None]  # [B, 1, 1, T, T].
    y = nn.MultiHeadDotProductAttention(self.heads, name='temporal_attention')(y, y, mask=mask)
    init = nn.initializers.zeros if self.zero_temporal_fc else nn.linear.default_kernel_init
    y = nn.Dense(dim, kernel_init=init, name='temporal_fc')(y)
    patches = patches + y.transpose(0, 2, 1, 3)
    # Spatial: per frame, the class token and the frame's patches.
    b, t, n, _ = patches.shape
    tokens = jnp.concatenate([jnp.broadcast_to(cls[:, None, None], (b, t, 1, dim)), patches], 2)
    y = nn.LayerNorm(name='spatial_norm')(tokens)
    y = nn.MultiHeadDotProductAttention(self.heads, name='spatial_attention')(y, y)
    cls = cls + frame_classifier.masked_mean(y[:, :, 0], valid)
    patches = patches + y[:, :, 1:]
    # MLP on every token.
    tokens = jnp.concatenate([cls[:, None], patches.reshape(b, t * n, dim)], axis=1)
    y = nn.Dense(dim * self.mlp_ratio, name='mlp_in')(nn.LayerNorm(name='mlp_norm')(tokens))
    tokens = tokens + nn.Dense(dim, name='mlp_out')(nn.gelu(y))
    return tokens[:, 0], tokens[:, 1:].reshape(b, t, n, dim)


class TimeSformer(nn.Module):
  """TimeSformer with divided space-time attention; see the module docstring."""
  num_classes: int = 2
  patch: int = 16
  dim: int = 384
  depth: int = 12
  heads: int = 6
  mlp_ratio: int = 4
  num_frames: int = 16

  @nn.compact
  def __call__(self, batch: dict[str, jnp.ndarray], *, train: bool) -> dict[str, jnp.ndarray]:
    del train  # No dropout, no BatchNorm.
    frames, valid = batch['frames'], batch['valid']
    b, t, h, w, _ = frames.shape
    if t > self.num_frames or h % self.patch or w % self.patch:
      raise ConfigError(f'TimeSformer: {t} frames of {h}x{w} need config.model.num_frames >= '
                        f'{t} and an image size that is a multiple of config.model.patch='
                        f'{self.patch}.')
    x = video_layers.video_input(frames, valid, resnet.IMAGENET_MEAN, resnet.IMAGENET_STD)
    x = nn.Conv(self.dim, (self.patch, self.patch), self.patch, padding='VALID',
                name='patch_embed')(x.reshape((b * t, h, w, 3)))
    patches = x.reshape(b, t, -1, self.dim)
    init = nn.initializers.truncated_normal(0.02)
    space = self.param('space_embed', init, (patches.shape[2] + 1, self.dim))
    time = self.param('time_embed', init, (self.num_frames, self.dim))
    cls = self.param('cls_token', init, (self.dim,)) + space[0]
    cls = jnp.broadcast_to(cls, (b, self.dim))
    patches = patches + space[1:] + time[:t, None]
    for i in range(self.depth):
      cls, patches = DividedBlock(self.heads, self.mlp_ratio, zero_temporal_fc=i > 0,
                                  name=f'block{i}')(cls, patches, valid)
    pooled = nn.LayerNorm(name='norm')(cls)
    return {'pooled': pooled, 'logits': nn.Dense(self.num_classes, name='head')(pooled)}
