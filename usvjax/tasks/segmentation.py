"""Video segmentation task, device side: the loss on the target frame and what evaluation
brings to the host.

The target frame is the last frame of a clip (index -1). ``outputs['logits']`` is
[B, H, W, 1]. The loss is the mask loss of the target frame (``losses.mask_loss``: BCE,
soft Dice, soft IoU, wBCE and wIoU weighted by ``config.task``), averaged over the
examples whose target is valid and annotated (``losses.scored_frames``: an unannotated
frame's stored mask is no target; 0 when no example has one), plus the model's own loss terms (``usvjax.loss_terms``: DSANet's
auxiliary frames, FLA-Net's heatmap and location-contrastive terms), whose parts are
logged by name. With ``config.task.consistency_weight`` > 0 the task has a ``teacher``
(``usvjax.loss_terms.mean_teacher``: a mean teacher on the unannotated frames), whose
consistency term joins them.

Evaluation scores only the annotated targets (their ``valid`` is ``scored_frames``). The
logged training ``dice`` is the mean over the scored target frames of their Dice at logit 0 (a
lesion-free frame predicted empty counts 1, the rule of ``usvjax.metrics.segmentation``).
The host side (exact per-frame metrics at the frames' own size, reports, overlays, mask
export) is ``segmentation_evaluation.SegmentationEvaluation``, made by ``evaluator()``
with ``config.task.threshold`` and the normalised surface Dice's tolerances
``nsd_tolerance_px`` and ``nsd_tolerance_mm``.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import ml_collections

from usvjax import interfaces
from usvjax import losses
from usvjax.loss_terms import mean_teacher

if TYPE_CHECKING:
  from usvjax.tasks.segmentation_evaluation import SegmentationEvaluation


class SegmentationTask:
  """``interfaces.Task`` of video segmentation."""

  def __init__(self, config: ml_collections.ConfigDict, batch_size: int,
               terms: Sequence[interfaces.LossTerm] = ()):
    del batch_size  # The loss terms check what they need.
    self.config, self.terms = config, list(terms)
    self.teacher = mean_teacher.create(config)  # Run by the train step; None at weight 0.
    if self.teacher is not None:
      self.terms.append(self.teacher)

  def loss(self, outputs: dict, batch: dict) -> tuple[jnp.ndarray, dict]:
    logits, target = outputs['logits'], batch['masks'][:, -1]
    weights = losses.scored_frames(batch, -1)
    total, parts = losses.mask_loss(logits, target, weights, self.config)
    for term in self.terms:
      value, term_parts = term(outputs, batch)
      total += value
      parts.update(term_parts)
    hard = (logits > 0).astype(jnp.float32)
    inter = jnp.sum(hard * target, axis=(1, 2, 3))
    size = jnp.sum(hard, axis=(1, 2, 3)) + jnp.sum(target, axis=(1, 2, 3))
    batch_dice = losses.weighted_mean(jnp.where(size > 0, 2 * inter / jnp.maximum(size, 1), 1.0),
                                      weights)
    return total, dict(parts, dice=batch_dice)

  def eval_outputs(self, outputs: dict, batch: dict) -> dict:
    """Everything the host evaluator needs, per example (computed on device)."""
    return {'probs': jax.nn.sigmoid(outputs['logits'][..., 0]),
            'masks': batch['masks'][:, -1, ..., 0], 'valid': losses.scored_frames(batch, -1),
            'frame_index': batch['frame_index'], 'video_key': batch['video_key']}

  def evaluator(self) -> SegmentationEvaluation:
    # Imported here: the host side needs TensorFlow, OpenCV and the metrics; the step does not.
    from usvjax.tasks import segmentation_evaluation  # pylint: disable=g-import-not-at-top
    return segmentation_evaluation.SegmentationEvaluation(
        self.config.threshold, self.config.nsd_tolerance_px, self.config.nsd_tolerance_mm)
