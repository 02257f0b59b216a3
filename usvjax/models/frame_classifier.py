"""Frame CNN with probability averaging: the "CNN_Aver" baseline of Cui et al. (Table 3).

A 2-D CNN classifies every frame of a sequence independently; the video's class
probabilities are the mean of the per-frame softmax probabilities over its real frames
(``valid``), p_video = sum_t valid_t softmax(f(x_t)) / sum_t valid_t. Padded frames are
computed (their shapes are static) but never contribute.

Input ``frames`` [B, T, H, W, C], ``valid`` [B, T] bool. Outputs ``frame_logits``
[B, T, K] and ``logits`` [B, K] = log p_video (so softmax(logits) = p_video).
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from usvjax.models import layers
from usvjax.models.backbones import resnet


def masked_mean(values: jnp.ndarray, valid: jnp.ndarray, axis: int = 1) -> jnp.ndarray:
  """Mean of ``values`` over ``axis`` counting only ``valid`` entries (0 if none)."""
  weights = valid.astype(values.dtype).reshape(valid.shape + (1,) * (values.ndim - valid.ndim))
  total = jnp.sum(values * weights, axis=axis)
  return total / jnp.maximum(jnp.sum(weights, axis=axis), 1.0)


class FrameEncoder(nn.Module):
  """Per-frame features [B, T, D] of frames [B, T, H, W, C], one 2-D CNN for every frame.

  ``backbone`` 'conv' (a small conv encoder: ``width``, ``levels``) or a ResNet name from
  ``backbones.resnet.ARCHITECTURES`` (``backbone_width`` multiplies its channels; frames
  are ImageNet-normalised, grey frames repeated to 3 channels). Features are globally
  average-pooled.
  """
  backbone: str = 'conv'
  width: int = 16
  levels: int = 4
  backbone_width: float = 1.0

  @nn.compact
  def __call__(self, frames: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    b, t = frames.shape[:2]
    x = frames.reshape((b * t,) + frames.shape[2:])
    if self.backbone == 'conv':
      x = layers.ConvEncoder(self.width, self.levels, name='backbone')(x * 2.0 - 1.0, train=train)
      x = jnp.mean(x[-1], axis=(1, 2))
    else:
      x = jnp.broadcast_to(x, x.shape[:-1] + (3,)) if x.shape[-1] == 1 else x
      x = resnet.ResNet(self.backbone, width=self.backbone_width, name='backbone')(
          resnet.imagenet_normalize(x), train=train)['pooled']
    return x.reshape(b, t, -1)


def average_frame_probabilities(frame_logits: jnp.ndarray, valid: jnp.ndarray) -> jnp.ndarray:
  """log of the mean softmax over the valid frames: [B, T, K], [B, T] -> [B, K]."""
  probs = masked_mean(jax.nn.softmax(frame_logits), valid)
  return jnp.log(jnp.maximum(probs, 1e-12))


class VideoClassifierBase(nn.Module):
  """Fields of the video classifiers that encode frames with a ``FrameEncoder``."""
  num_classes: int = 2
  backbone: str = 'conv'
  width: int = 16
  levels: int = 4
  backbone_width: float = 1.0

  def frame_features(self, batch: dict[str, jnp.ndarray], train: bool) -> jnp.ndarray:
    """``batch['features']`` [B, T, D] if given (cached), else the encoded frames."""
    if 'features' in batch:
      return batch['features']
    return FrameEncoder(self.backbone, self.width, self.levels, self.backbone_width,
                        name='encoder')(batch['frames'], train=train)


class FrameClassifier(VideoClassifierBase):
  """Frame CNN (see ``FrameEncoder``) + a linear classifier per frame, probabilities averaged."""

  @nn.compact
  def __call__(self, batch: dict[str, jnp.ndarray], *, train: bool) -> dict[str, jnp.ndarray]:
    features = self.frame_features(batch, train)
    frame_logits = nn.Dense(self.num_classes)(features)
    return {'frame_logits': frame_logits,
            'logits': average_frame_probabilities(frame_logits, batch['valid'])}
