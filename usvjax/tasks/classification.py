"""Video classification task: cross-entropy and exact video-level metrics.

``outputs['logits']`` [B, K] are video log-probabilities (or logits). With
``config.task.frame_loss`` the loss is the mean cross-entropy of ``outputs['frame_logits']``
[B, T, K] over the valid frames with the video's label (how a frame CNN is trained);
otherwise it is the cross-entropy of the video logits, averaged over valid videos.
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
from usvjax.tasks.segmentation import decode_key


class ClassificationTask:
  """``interfaces.Task`` of video classification."""

  DEFAULTS = dict(frame_loss=False, threshold=0.5)

  def __init__(self, config: ml_collections.ConfigDict, batch_size: int,
               terms: Sequence[interfaces.LossTerm] = ()):
    del batch_size  # Any batch size works.
    self.config, self.terms = config, list(terms)

  def loss(self, outputs: dict, batch: dict) -> tuple[jnp.ndarray, dict]:
    labels, valid = batch['label'], batch['valid']
    video_valid = jnp.any(valid, axis=1)
    if self.config.frame_loss:
      frame_labels = jnp.broadcast_to(labels[:, None], valid.shape)
      loss = losses.weighted_mean(
          losses.softmax_cross_entropy(outputs['frame_logits'], frame_labels), valid)
    else:
      loss = losses.weighted_mean(losses.softmax_cross_entropy(outputs['logits'], labels),
                                  video_valid)
    parts = {}
    for term in self.terms:
      value, term_parts = term(outputs, batch)
      loss += value
      parts.update(term_parts)
    correct = (jnp.argmax(outputs['logits'], -1) == labels).astype(jnp.float32)
    return loss, dict(parts, accuracy=losses.weighted_mean(correct, video_valid))

  def eval_outputs(self, outputs: dict, batch: dict) -> dict:
    """Everything the host evaluator needs, per video (computed on device)."""
    return {'probs': jax.nn.softmax(outputs['logits'], axis=-1), 'label': batch['label'],
            'valid': jnp.any(batch['valid'], axis=1),
            'num_frames': jnp.sum(batch['valid'], axis=1), 'video_key': batch['video_key']}

  def evaluator(self) -> 'ClassificationEvaluation':
    return ClassificationEvaluation(self.config.threshold)


class ClassificationEvaluation:
  """Collects the probabilities of every valid video; metrics in ``result()`` (an
  ``interfaces.Evaluation``)."""

  def __init__(self, threshold: float):
    self.threshold = threshold
    self.rows: list[dict] = []

  def update(self, outputs: dict) -> None:
    """Adds the valid videos of one batch of ``ClassificationTask.eval_outputs``."""
    for i in np.flatnonzero(outputs['valid']):
      self.rows.append({'video_id': decode_key(outputs['video_key'][i]),
                        'label': int(outputs['label'][i]),
                        'num_frames': int(outputs['num_frames'][i]),
                        'probs': [float(p) for p in outputs['probs'][i]]})

  def arrays(self) -> tuple[np.ndarray, np.ndarray]:
    return (np.array([r['probs'] for r in self.rows]), np.array([r['label'] for r in self.rows]))

  def result(self) -> dict[str, float]:
    if not self.rows:
      raise ValueError('no videos were evaluated.')
    return metrics.classification_metrics(*self.arrays(), threshold=self.threshold)

  def video_rows(self) -> list[dict]:
    return self.rows

  def write_report(self, directory: str, metrics_: dict,
                   class_names: list[str] | None = None) -> None:
    """metrics.json, per_video.csv, ROC and PR curves and the confusion matrix."""
    reports.write_tables(directory, metrics_, self.video_rows())
    plots.classification_curves(*self.arrays(), directory, class_names, metrics_,
                                self.threshold)
