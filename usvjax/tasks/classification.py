"""Video classification task, device side: cross-entropy, and what evaluation brings to the
host.

``outputs['logits']`` [B, K] are video log-probabilities (or logits). With
``config.task.frame_loss`` the loss is the mean cross-entropy of ``outputs['frame_logits']``
[B, T, K] over the valid frames with the video's label (how a frame CNN is trained);
otherwise it is the cross-entropy of the video logits, averaged over valid videos.

Decision threshold (binary): ``task.threshold`` on p(class 1), or, with
``task.threshold_rule`` 'youden' or 'sensitivity=S', a threshold chosen on the validation
split (``dataset.eval_split``) by ``evaluate`` before the test split is scored: Youden's J
(the ROC point maximising sensitivity + specificity - 1), or the largest threshold whose
validation sensitivity is at least S (the most specific one that keeps the sensitivity a
screening study asks for). The report gives the rule, the threshold and its split, and the
validation sensitivity and specificity at that threshold (``validation_sensitivity``,
``validation_specificity``; the report's own are those of the split it scores).

Temperature (``evaluate --calibrate``): ``calibrate(validation, fit_temperature=True)`` fits
T on the validation videos (``metrics.classification.fit_temperature``) and every later
evaluation reports softmax(log p / T); a threshold rule then chooses on the scaled
probabilities. ``temperature`` is 1 (no scaling) unless fitted or set from the run's
``calibration.json``.

The host side (exact video-level metrics, the threshold's choice, reports, curves, frame
scores) is ``classification_evaluation``, made by ``evaluator()``.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import ml_collections

from usvjax.errors import ConfigError
from usvjax import interfaces
from usvjax import losses

if TYPE_CHECKING:
  from usvjax.tasks.classification_evaluation import ClassificationEvaluation


class ClassificationTask:
  """``interfaces.Task`` of video classification."""

  def __init__(self, config: ml_collections.ConfigDict, batch_size: int,
               terms: Sequence[interfaces.LossTerm] = ()):
    del batch_size  # Any batch size works.
    self.config, self.terms = config, list(terms)
    self.threshold = config.threshold
    self.temperature = 1.0
    self.calibrates = config.threshold_rule != 'fixed'
    if self.calibrates:
      threshold_rule_target(config.threshold_rule)  # Fails early on a bad rule.

  def calibrate(self, validation: ClassificationEvaluation,
                fit_temperature: bool = False) -> dict:
    """Fits the temperature (``fit_temperature``) and sets the decision threshold by
    ``threshold_rule`` (unless 'fixed') from a validation evaluation; returns what the
    report says about them."""
    # Host side (scikit-learn); loaded already, as ``validation`` is one of its evaluations.
    from usvjax.tasks import classification_evaluation  # pylint: disable=g-import-not-at-top
    out = {}
    if fit_temperature:
      out = validation.fit_temperature()
      self.temperature = out['temperature']
    if self.calibrates:
      probs, labels = validation.arrays()
      self.threshold = classification_evaluation.choose_threshold(probs, labels,
                                                                  self.config.threshold_rule)
      validation.threshold = self.threshold
      at = validation.result()
      out.update(threshold=self.threshold, threshold_rule=self.config.threshold_rule,
                 validation_sensitivity=at['sensitivity'],
                 validation_specificity=at['specificity'])
    return out

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
    correct = (_predictions(outputs['logits'], self.config.threshold) == labels
               ).astype(jnp.float32)
    return loss, dict(parts, accuracy=losses.weighted_mean(correct, video_valid))

  def eval_outputs(self, outputs: dict, batch: dict) -> dict:
    """Everything the host evaluator needs, per video (computed on device), with the
    model's per-frame outputs where it has them (``frame_logits`` as probabilities,
    ``frame_weights``) for ``evaluate --export``."""
    out = {'probs': jax.nn.softmax(outputs['logits'], axis=-1), 'label': batch['label'],
           'valid': jnp.any(batch['valid'], axis=1),
           'num_frames': jnp.sum(batch['valid'], axis=1), 'video_key': batch['video_key']}
    if 'frame_logits' in outputs:
      out['frame_probs'] = jax.nn.softmax(outputs['frame_logits'], axis=-1)
    if 'frame_weights' in outputs:
      out['frame_weights'] = outputs['frame_weights']
    return out

  def evaluator(self) -> ClassificationEvaluation:
    # Imported here: the host side needs scikit-learn and the plots; the step does not.
    from usvjax.tasks import classification_evaluation  # pylint: disable=g-import-not-at-top
    return classification_evaluation.ClassificationEvaluation(self.threshold, self.temperature)


def _predictions(logits: jnp.ndarray, threshold: float) -> jnp.ndarray:
  """The training log's decision, as ``metrics.classification.class_predictions`` decides
  in evaluation (binary: p(class 1) >= threshold, so a tie is class 1; else the arg-max)."""
  if logits.shape[-1] == 2:
    return (jax.nn.softmax(logits, axis=-1)[:, 1] >= threshold).astype(jnp.int32)
  return jnp.argmax(logits, -1)


def threshold_rule_target(rule: str) -> float | None:
  """None for 'youden', S for 'sensitivity=S'; a clear error for anything else."""
  if rule == 'youden':
    return None
  name, _, value = rule.partition('=')
  try:
    target = float(value)
  except ValueError:
    target = -1.0
  if name != 'sensitivity' or not 0 < target <= 1:
    raise ConfigError(f"config.task.threshold_rule={rule!r}: use 'fixed', 'youden' or "
                      "'sensitivity=S' with 0 < S <= 1 (e.g. 'sensitivity=0.9').")
  return target
