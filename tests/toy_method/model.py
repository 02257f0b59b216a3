"""A sixth method, written the way a user adds one: its model and its own loss term
(registered, with what it takes, by the package's one line: ``toy_method/__init__.py``).

``ToySegmenter`` segments the target frame t from the frame and its change since frame
t-1 (so it reads clips of at least two frames: ``min_frames=2``), and says how much lesion
it sees (``outputs['area']`` [B], the mean probability). Its loss term ``AreaPrior`` pulls
that towards ``config.task.area_target`` with weight ``config.task.area_weight``:
(area - target)^2 averaged over the valid examples.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from usvjax import losses


class ToySegmenter(nn.Module):
  features: int = 4

  @nn.compact
  def __call__(self, batch: dict, *, train: bool) -> dict:
    del train
    frames = batch['frames']  # [B, T, H, W, C], T >= 2.
    x = jnp.concatenate([frames[:, -1], frames[:, -1] - frames[:, -2]], axis=-1)
    x = nn.relu(nn.Conv(self.features, (3, 3))(x))
    logits = nn.Conv(1, (3, 3))(x)
    return {'logits': logits, 'area': jnp.mean(jax.nn.sigmoid(logits), axis=(1, 2, 3))}


class AreaPrior:

  def __init__(self, weight: float, target: float):
    self.weight, self.target = weight, target

  def __call__(self, outputs: dict, batch: dict) -> tuple[jnp.ndarray, dict]:
    value = losses.weighted_mean((outputs['area'] - self.target) ** 2, batch['valid'][:, -1])
    return self.weight * value, {'area_prior': value}


def loss_terms(task_config: ml_collections.ConfigDict, batch_size: int) -> list:
  del batch_size
  return [AreaPrior(task_config.area_weight, task_config.area_target)]
