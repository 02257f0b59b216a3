"""The mask loss on frames before the target, for models that predict them too.

``outputs['aux_logits']`` [B, K, H, W, 1] are the predictions of the K frames before the
target (the clip's frames T-1-K .. T-2); each gets the same mask loss as the target frame
(``losses.mask_loss`` with the shared weights of ``config.task``), times
``config.task.aux_weight``, averaged over the clips whose frame is valid and annotated
(``losses.scored_frames``; 0 when none is). DSANet (Zhou et al., Eq. 6): K = 2, frames t-2 and t-1.
STPFNet (Tu et al.): K = T-2, the frames predicted before the last of a training clip.
"""
from __future__ import annotations

import jax.numpy as jnp
import ml_collections

from usvjax import losses
from usvjax import loss_terms


class AuxiliaryFrames:

  def __init__(self, task_config: ml_collections.ConfigDict, aux_weight: float):
    self.config, self.aux_weight = task_config, aux_weight

  def __call__(self, outputs: dict, batch: dict) -> tuple[jnp.ndarray, dict]:
    aux = loss_terms.require(outputs, 'aux_logits', 'set config.task.aux_weight to 0.')
    total, parts = 0.0, {}
    for k in range(aux.shape[1]):
      frame = k - aux.shape[1] - 1  # t-2, t-1 for two auxiliary frames.
      frame_total, frame_parts = losses.mask_loss(aux[:, k], batch['masks'][:, frame],
                                                  losses.scored_frames(batch, frame), self.config,
                                                  f'aux{k}_')
      total += self.aux_weight * frame_total
      parts.update(frame_parts)
    return total, parts


def create(task_config: ml_collections.ConfigDict, batch_size: int) -> list:
  del batch_size
  aux_weight = loss_terms.weight(task_config, 'aux_weight', 'auxiliary-frame')
  return [AuxiliaryFrames(task_config, aux_weight)] if aux_weight else []
