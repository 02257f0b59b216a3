"""Video classification task: cross-entropy and exact video-level metrics.

``outputs['logits']`` [B, K] are video log-probabilities (or logits). With
``config.task.frame_loss`` the loss is the mean cross-entropy of ``outputs['frame_logits']``
[B, T, K] over the valid frames with the video's label (how a frame CNN is trained);
otherwise it is the cross-entropy of the video logits, averaged over valid videos.

Decision threshold (binary): ``task.threshold`` on p(class 1), or, with
``task.threshold_rule`` 'youden' or 'sensitivity=S', a threshold chosen on the validation
split (``dataset.eval_split``) by ``evaluate`` before the test split is scored: Youden's J
(the ROC point maximising sensitivity + specificity - 1), or the largest threshold whose
validation sensitivity is at least S (the most specific one that keeps the sensitivity a
screening study asks for). The report gives the rule, the threshold and its split.
"""
from __future__ import annotations

import csv
import os
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from sklearn import metrics as skm

from usvjax.errors import ConfigError
from usvjax import interfaces
from usvjax import losses
from usvjax import metrics
from usvjax import plots
from usvjax import reports
from usvjax.tasks.segmentation import decode_key


class ClassificationTask:
  """``interfaces.Task`` of video classification."""

  DEFAULTS = dict(frame_loss=False, threshold=0.5, threshold_rule='fixed')

  def __init__(self, config: ml_collections.ConfigDict, batch_size: int,
               terms: Sequence[interfaces.LossTerm] = ()):
    del batch_size  # Any batch size works.
    self.config, self.terms = config, list(terms)
    self.threshold = config.threshold
    self.calibrates = config.threshold_rule != 'fixed'
    if self.calibrates:
      threshold_rule_target(config.threshold_rule)  # Fails early on a bad rule.

  def calibrate(self, validation: 'ClassificationEvaluation') -> dict:
    """Sets the decision threshold from a validation evaluation by ``threshold_rule``;
    returns what the report says about it."""
    probs, labels = validation.arrays()
    self.threshold = choose_threshold(probs, labels, self.config.threshold_rule)
    return {'threshold': self.threshold, 'threshold_rule': self.config.threshold_rule}

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

  def evaluator(self) -> 'ClassificationEvaluation':
    return ClassificationEvaluation(self.threshold)


def _predictions(logits: jnp.ndarray, threshold: float) -> jnp.ndarray:
  """The training log's decision, as ``metrics.class_predictions`` decides in evaluation
  (binary: p(class 1) >= threshold, so a tie is class 1; else the arg-max)."""
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


def choose_threshold(probs: np.ndarray, labels: np.ndarray, rule: str) -> float:
  """The threshold on p(class 1) that ``rule`` picks on these (validation) predictions."""
  if probs.shape[1] != 2 or len(set(labels.tolist())) != 2:
    raise ConfigError(f'config.task.threshold_rule={rule!r} needs a binary task and both '
                      'classes in the validation split.')
  fpr, tpr, thresholds = skm.roc_curve(labels, probs[:, 1], drop_intermediate=False)
  thresholds = np.minimum(thresholds, 1.0)  # The first is +inf: nothing positive.
  target = threshold_rule_target(rule)
  if target is None:
    return float(thresholds[np.argmax(tpr - fpr)])
  return float(thresholds[np.argmax(tpr >= target)])  # tpr rises: the first reaching S.


FRAME_OUTPUTS = ('frame_probs', 'frame_weights')  # Per-frame model outputs, if any.
FRAME_SCORES_FILE = 'frame_scores.csv'


class ClassificationEvaluation:
  """Collects the probabilities of every valid video; metrics in ``result()`` (an
  ``interfaces.Evaluation``)."""

  def __init__(self, threshold: float):
    self.threshold = threshold
    self.rows: list[dict] = []
    self.class_names: list[str] | None = None

  def update(self, outputs: dict) -> None:
    """Adds the valid videos of one batch of ``ClassificationTask.eval_outputs``."""
    for i in np.flatnonzero(outputs['valid']):
      frames = int(outputs['num_frames'][i])
      self.rows.append({'video_id': decode_key(outputs['video_key'][i]),
                        'label': int(outputs['label'][i]), 'num_frames': frames,
                        'probs': [float(p) for p in outputs['probs'][i]],
                        **{k: np.asarray(outputs[k][i][:frames]) for k in FRAME_OUTPUTS
                           if k in outputs}})

  def arrays(self) -> tuple[np.ndarray, np.ndarray]:
    return (np.array([r['probs'] for r in self.rows]), np.array([r['label'] for r in self.rows]))

  def result(self) -> dict[str, float]:
    if not self.rows:
      raise ConfigError('no videos were evaluated.')
    return metrics.classification_metrics(*self.arrays(), threshold=self.threshold)

  def video_rows(self, class_names: Sequence[str] | None = None) -> list[dict]:
    """Per video: id, frames, true and predicted class (index and name), and one numeric
    probability column per class (``prob_<class name>``)."""
    probs, labels = self.arrays()
    names = list(class_names or [str(k) for k in range(probs.shape[1])])
    preds = metrics.class_predictions(probs, self.threshold)
    return [{'video_id': row['video_id'], 'num_frames': row['num_frames'],
             'label': label, 'true_class': names[label], 'predicted': int(pred),
             'predicted_class': names[pred], 'correct': int(pred == label),
             **{f'prob_{name}': p for name, p in zip(names, row['probs'])}}
            for row, label, pred in zip(self.rows, labels.tolist(), preds.tolist())]

  def write_report(self, directory: str, metrics_: dict,
                   class_names: list[str] | None = None) -> None:
    """metrics.json, per_video.csv, ROC and PR curves and the confusion matrix."""
    reports.write_tables(directory, metrics_, self.video_rows(class_names))
    self.class_names = class_names
    plots.classification_curves(*self.arrays(), directory, class_names, metrics_,
                                self.threshold)

  def export(self, directory: str) -> list[str]:
    """``frame_scores.csv``: per video and frame of the sequence the model saw (position
    in the sampled sequence), the frame's class probabilities and attention weight where
    the model gives them. (The per-video probabilities are in per_video.csv.)"""
    if not any(k in row for row in self.rows for k in FRAME_OUTPUTS):
      raise ConfigError('--export: this model gives no per-frame output; the per-video '
                        'probabilities are in per_video.csv.')
    num_classes = len(self.rows[0]['probs'])
    names = list(self.class_names or [str(k) for k in range(num_classes)])
    columns = ['video_id', 'position'] + [f'frame_prob_{n}' for n in names] + ['frame_weight']
    path = os.path.join(directory, FRAME_SCORES_FILE)
    with open(path, 'w', newline='', encoding='utf-8') as f:
      writer = csv.writer(f)
      writer.writerow(columns)
      for row in self.rows:
        for t in range(row['num_frames']):
          probs = row['frame_probs'][t].tolist() if 'frame_probs' in row else [''] * num_classes
          weight = float(row['frame_weights'][t]) if 'frame_weights' in row else ''
          writer.writerow([row['video_id'], t, *probs, weight])
    return [path]
