"""Video classification metrics (scikit-learn): accuracy, precision, sensitivity (recall),
specificity, F1, AUC (ROC) and AP.

Binary: the positive class is 1 and a video is positive when p(class 1) >= threshold.
Multi-class: the prediction is the arg-max, precision, sensitivity, specificity and F1 are
macro averages over classes (one-vs-rest), AUC is one-vs-rest macro, AP the macro average
over classes.
"""
from __future__ import annotations

import numpy as np
from sklearn import metrics as skm

from usvjax.metrics import statistics


def class_predictions(probs: np.ndarray, threshold: float = 0.5) -> np.ndarray:
  """Predicted classes of [N, K] probabilities: p(class 1) >= threshold when K = 2, else
  the arg-max."""
  probs = np.asarray(probs)
  if probs.shape[1] == 2:
    return (probs[:, 1] >= threshold).astype(int)
  return probs.argmax(axis=1)


def classification_metrics(probs: np.ndarray, labels: np.ndarray,
                           threshold: float = 0.5) -> dict[str, float]:
  """Metrics of video predictions (``keys.CLASSIFICATION_KEYS`` and ``num_videos``).

  Args:
    probs: [N, K] class probabilities (rows sum to 1).
    labels: [N] integer labels in [0, K).
    threshold: binary decision threshold on p(class 1); ignored when K > 2.
  """
  probs, labels = np.asarray(probs, np.float64), np.asarray(labels)
  num_classes = probs.shape[1]
  preds = class_predictions(probs, threshold)
  classes = list(range(num_classes))
  matrix = skm.confusion_matrix(labels, preds, labels=classes)
  specificity = []
  for k in classes:
    negatives = matrix.sum() - matrix[k].sum()
    true_negatives = negatives - (matrix[:, k].sum() - matrix[k, k])
    specificity.append(statistics.ratio(true_negatives, negatives))
  average = 'binary' if num_classes == 2 else 'macro'
  out = {
      'accuracy': skm.accuracy_score(labels, preds),
      'precision': skm.precision_score(labels, preds, average=average, labels=classes,
                                       zero_division=0),
      'sensitivity': skm.recall_score(labels, preds, average=average, labels=classes,
                                      zero_division=0),
      'specificity': specificity[1] if num_classes == 2 else float(np.mean(specificity)),
      'f1': skm.f1_score(labels, preds, average=average, labels=classes, zero_division=0),
      'num_videos': len(labels),
  }
  out.update(_ranking_metrics(probs, labels))
  return {k: float(v) for k, v in out.items()}


def _ranking_metrics(probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
  """AUC and AP; NaN when the labels hold a single class (both are undefined then)."""
  num_classes = probs.shape[1]
  if len(np.unique(labels)) < 2:
    return {'auc': float('nan'), 'ap': float('nan')}
  if num_classes == 2:
    return {'auc': skm.roc_auc_score(labels, probs[:, 1]),
            'ap': skm.average_precision_score(labels, probs[:, 1])}
  onehot = np.eye(num_classes)[labels]
  return {'auc': skm.roc_auc_score(labels, probs, multi_class='ovr', average='macro',
                                   labels=list(range(num_classes))),
          'ap': skm.average_precision_score(onehot, probs, average='macro')}
