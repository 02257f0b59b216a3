"""Video segmentation task: the loss on the target frame and exact per-frame metrics.

The target frame is the last frame of a clip (index -1). ``outputs['logits']`` is
[B, H, W, 1]. The loss is the mask loss of the target frame (``losses.mask_loss``: BCE,
soft Dice, soft IoU, wBCE and wIoU weighted by ``config.task``), averaged over the valid
examples of the batch, plus the model's own loss terms (``usvjax.loss_terms``: DSANet's
auxiliary frames, FLA-Net's heatmap and location-contrastive terms), whose parts are
logged by name.
"""
from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from usvjax import interfaces
from usvjax import losses
from usvjax import metrics
from usvjax import plots
from usvjax import reports


class SegmentationTask:
  """``interfaces.Task`` of video segmentation."""

  DEFAULTS = dict(bce_weight=1.0, dice_weight=1.0, iou_weight=0.0, wbce_weight=0.0,
                  wiou_weight=0.0, threshold=0.5)

  def __init__(self, config: ml_collections.ConfigDict, batch_size: int,
               terms: Sequence[interfaces.LossTerm] = ()):
    del batch_size  # The loss terms check what they need.
    self.config, self.terms = config, list(terms)

  def loss(self, outputs: dict, batch: dict) -> tuple[jnp.ndarray, dict]:
    logits, target = outputs['logits'], batch['masks'][:, -1]
    weights = batch['valid'][:, -1]
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
            'masks': batch['masks'][:, -1, ..., 0], 'frames': batch['frames'][:, -1],
            'valid': batch['valid'][:, -1], 'frame_index': batch['frame_index'],
            'video_key': batch['video_key']}

  def evaluator(self) -> 'SegmentationEvaluation':
    return SegmentationEvaluation(self.config.threshold)


class SegmentationEvaluation:
  """Per-frame metrics for every valid example; per-video means in ``video_rows()``
  (an ``interfaces.Evaluation``)."""

  def __init__(self, threshold: float, max_videos: int = 4, max_frames: int = 6):
    self.metrics = metrics.SegmentationEvaluator(threshold)
    self.max_videos, self.max_frames = max_videos, max_frames
    # {video_id: [(frame_index, frame [H, W, C], mask [H, W], prob [H, W]), ...]} for plots.
    self.examples: dict[str, list[tuple]] = {}

  @property
  def rows(self) -> list[dict]:
    return self.metrics.rows

  def update(self, outputs: dict) -> None:
    """Adds the valid examples of one batch of ``SegmentationTask.eval_outputs``."""
    for i in np.flatnonzero(outputs['valid']):
      video, index = decode_key(outputs['video_key'][i]), int(outputs['frame_index'][i])
      self.metrics.update(outputs['probs'][i], outputs['masks'][i], video_id=video,
                          frame_index=index)
      self._keep_example(video, index, outputs['frames'][i], outputs['masks'][i],
                         outputs['probs'][i])

  def _keep_example(self, video: str, *example) -> None:
    if video not in self.examples and len(self.examples) >= self.max_videos:
      return
    kept = self.examples.setdefault(video, [])
    if len(kept) < self.max_frames:
      kept.append(example)

  def result(self) -> dict[str, float]:
    return self.metrics.result()

  def write_report(self, directory: str, metrics_: dict,
                   class_names: list[str] | None = None) -> None:
    """metrics.json, per_video.csv and one overlay PNG per kept video."""
    del class_names
    reports.write_tables(directory, metrics_, self.video_rows())
    plots.overlays(self.examples, directory, self.max_videos)

  def video_rows(self) -> list[dict]:
    videos: dict[str, list[dict]] = {}
    for row in self.rows:
      videos.setdefault(row['video_id'], []).append(row)
    return [{'video_id': v, 'num_frames': len(rows),
             **{k: float(np.mean([r[k] for r in rows])) for k in metrics.SEGMENTATION_KEYS}}
            for v, rows in videos.items()]


def decode_key(key: np.ndarray) -> str:
  """A video id from its zero-padded uint8 encoding (see input_pipeline.pipeline)."""
  return bytes(np.asarray(key, np.uint8)).rstrip(b'\0').decode('utf-8', 'replace')
