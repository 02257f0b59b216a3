"""FLA-Net's localisation loss terms (Lin et al., Eq. 2), besides the mask loss.

* ``heatmap_weight`` * MSE(H_t, G^H_t), G^H_t the Gaussian at the box centre of the target
  frame (``batch['heatmaps']``, made when ``config.input.heatmap_sigma`` > 0), over the
  clips whose target is valid and annotated (``losses.scored_frames``);
* ``contrastive_weight`` * the location-based contrastive loss (``losses.location_contrastive``,
  margin ``contrastive_margin``). Positive: H_{t-1}, the model's heatmap of the previous
  frame of the same clip (``outputs['previous_heatmap']``: train on clips of 4 frames).
  Negative: H_t of the next example of the global batch (cyclically), used only when it
  comes from another video (``batch['video_hash']``), both targets annotated (the term
  trains the heatmap the annotated frames' MSE term shapes: on a sparsely annotated video
  only they carry a located lesion); the term is the mean over such
  pairs, so a batch needs at least two examples (checked when the term is made) and, in
  practice, several videos (the training stream shuffles clips across videos). Its part
  ``contrastive_pairs`` logs the fraction of examples that found a negative.
"""
from __future__ import annotations

import jax.numpy as jnp
import ml_collections

from usvjax.errors import ConfigError
from usvjax import loss_terms
from usvjax import losses


class HeatmapMSE:

  def __init__(self, weight: float):
    self.weight = weight

  def __call__(self, outputs: dict, batch: dict) -> tuple[jnp.ndarray, dict]:
    heatmap = loss_terms.require(outputs, 'heatmap', 'enable the localisation branch or set '
                                 'config.task.heatmap_weight to 0.')
    if 'heatmaps' not in batch:
      raise ConfigError('config.task.heatmap_weight > 0 needs heatmap targets: set '
                        'config.input.heatmap_sigma > 0.')
    mse = losses.weighted_mean(losses.mean_squared_error(heatmap, batch['heatmaps'][:, -1]),
                               losses.scored_frames(batch, -1))
    return self.weight * mse, {'heatmap_mse': mse}


class LocationContrastive:

  def __init__(self, weight: float, margin: float):
    self.weight, self.margin = weight, margin

  def __call__(self, outputs: dict, batch: dict) -> tuple[jnp.ndarray, dict]:
    hint = ('enable the localisation branch and train on clips of config.input.clip_length=4, '
            'or set config.task.contrastive_weight to 0.')
    heatmap = loss_terms.require(outputs, 'heatmap', hint)
    previous = loss_terms.require(outputs, 'previous_heatmap', hint)
    valid = losses.scored_frames(batch, -1)
    pairs = (valid & jnp.roll(valid, 1, axis=0)
             & (batch['video_hash'] != jnp.roll(batch['video_hash'], 1, axis=0)))
    per_example = losses.location_contrastive(heatmap, previous, jnp.roll(heatmap, 1, axis=0),
                                              self.margin)
    value = losses.weighted_mean(per_example, pairs)
    return self.weight * value, {
        'contrastive': value, 'contrastive_pairs': jnp.sum(pairs) / jnp.maximum(jnp.sum(valid), 1)}


def create(task_config: ml_collections.ConfigDict, batch_size: int) -> list:
  terms = []
  heatmap_weight = loss_terms.weight(task_config, 'heatmap_weight', 'FLA-Net')
  if heatmap_weight:
    terms.append(HeatmapMSE(heatmap_weight))
  contrastive_weight = loss_terms.weight(task_config, 'contrastive_weight', 'FLA-Net')
  if contrastive_weight:
    if batch_size < 2:
      raise ConfigError(f'config.task.contrastive_weight > 0 needs negatives from other videos '
                        f'in the batch: config.input.batch_size is {batch_size}, use >= 2.')
    terms.append(LocationContrastive(
        contrastive_weight, loss_terms.weight(task_config, 'contrastive_margin', 'FLA-Net')))
  return terms
