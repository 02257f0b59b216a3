"""Video classification metrics (scikit-learn): accuracy, precision, sensitivity (recall),
specificity, F1, AUC (ROC), AP and the expected calibration error (ECE).

Binary: the positive class is 1 and a video is positive when p(class 1) >= threshold.
Multi-class: the prediction is the arg-max, precision, sensitivity, specificity and F1 are
macro averages over classes (one-vs-rest), AUC is one-vs-rest macro, AP the macro average
over classes.

ECE (Guo et al. 2017, top-label): each video's confidence is its largest class probability
and it is correct when that class (the arg-max, whatever the decision threshold) is its
label; the videos fall into ``ECE_BINS`` = 15 equal-width confidence bins over [0, 1] (the
last closed), and ECE = sum over bins of (videos in the bin / N) * |accuracy - mean
confidence| of the bin (``reliability_bins``; the reliability diagram draws the same bins).

Temperature scaling (Guo et al. 2017): probabilities p become softmax(log p / T), which
is softmax(logits / T) (log p and the logits differ by a constant per video); ``T`` is
fitted on validation videos by minimising their negative log-likelihood
(``fit_temperature``: scipy's bounded Brent search over log T in [log 0.05, log 20]).
T > 1 softens over-confident predictions; the arg-max, and a binary task's ranking (AUC),
do not change. k-fold cross-validation has no validation split: ``cross_fitted_temperatures``
fits fold i's T on the held-out predictions of every other fold (each made by its own
fold's model), so that no label of fold i sets the temperature applied to it.

``bootstrap_intervals``: 95% percentile-bootstrap intervals (``<metric>_ci95``: [lo, hi])
of accuracy, precision, sensitivity, specificity, F1, AUC and AP, by video or, given each
video's patient, by patient (a cluster bootstrap: a patient's videos are drawn together;
``statistics.resample_counts``, 9999 resamples, seed 0). The predictions stay fixed (the
threshold is not re-chosen); each resample is scored as the videos it draws, weighted by
how often it draws them, with the same one-vs-rest and macro rules as above. A resample
where a metric is undefined is left out of that metric's interval: precision when nothing
is predicted positive, sensitivity without positives, F1 when there are neither positives
nor positive predictions, specificity without negatives, AUC and AP without both classes
(multi-class: for any class).
"""
from __future__ import annotations

import numpy as np
from scipy import optimize
from sklearn import metrics as skm

from usvjax.metrics import statistics

# The metrics ``bootstrap_intervals`` gives an interval of, as ``<metric>_ci95``.
CI_KEYS = ('accuracy', 'precision', 'sensitivity', 'specificity', 'f1', 'auc', 'ap')
_CHUNK = 1000  # Resamples scored at once (bounds memory at [_CHUNK, N] per array).
ECE_BINS = 15
_LOG_T_RANGE = (float(np.log(0.05)), float(np.log(20.0)))  # fit_temperature's search.


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
      'ece': expected_calibration_error(probs, labels),
      'num_videos': len(labels),
  }
  out.update(_ranking_metrics(probs, labels))
  return {k: float(v) for k, v in out.items()}


def reliability_bins(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(count, mean confidence, accuracy), [bins] each, of the equal-width confidence bins
  (module docstring); a bin without videos has NaN confidence and accuracy."""
  probs, labels = np.asarray(probs, np.float64), np.asarray(labels)
  confidence, correct = probs.max(axis=1), probs.argmax(axis=1) == labels
  which = np.minimum((confidence * bins).astype(int), bins - 1)
  count = np.bincount(which, minlength=bins).astype(np.float64)
  with np.errstate(invalid='ignore'):
    mean_confidence = np.bincount(which, confidence, minlength=bins) / count
    accuracy = np.bincount(which, correct, minlength=bins) / count
  return count, mean_confidence, accuracy


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray,
                               bins: int = ECE_BINS) -> float:
  """ECE of [N, K] probabilities against [N] labels (module docstring)."""
  count, confidence, accuracy = reliability_bins(probs, labels, bins)
  filled = count > 0
  return float(np.sum(count[filled] * np.abs(accuracy[filled] - confidence[filled]))
               / count.sum())


def temperature_scaled(probs: np.ndarray, temperature: float) -> np.ndarray:
  """softmax(log p / T) of [N, K] probabilities (module docstring); T = 1 returns them."""
  probs = np.asarray(probs, np.float64)
  if temperature == 1.0:
    return probs
  logits = np.log(np.maximum(probs, np.finfo(np.float32).tiny)) / temperature
  logits -= logits.max(axis=1, keepdims=True)
  scaled = np.exp(logits)
  return scaled / scaled.sum(axis=1, keepdims=True)


def negative_log_likelihood(probs: np.ndarray, labels: np.ndarray) -> float:
  """Mean -log p(label) of [N, K] probabilities."""
  chosen = np.asarray(probs, np.float64)[np.arange(len(labels)), np.asarray(labels)]
  return float(-np.mean(np.log(np.maximum(chosen, np.finfo(np.float64).tiny))))


def fit_temperature(probs: np.ndarray, labels: np.ndarray) -> float:
  """The temperature minimising the NLL of ``temperature_scaled(probs, T)`` (module
  docstring)."""
  found = optimize.minimize_scalar(
      lambda log_t: negative_log_likelihood(temperature_scaled(probs, np.exp(log_t)), labels),
      bounds=_LOG_T_RANGE, method='bounded', options={'xatol': 1e-6})
  return float(np.exp(found.x))


def cross_fitted_temperatures(fold_probs: list[np.ndarray],
                              fold_labels: list[np.ndarray]) -> list[float]:
  """Per fold i of k-fold cross-validation, ``fit_temperature`` of the held-out
  probabilities ([N_j, K]) and labels ([N_j]) of every fold j != i put together."""
  if len(fold_probs) < 2:
    raise ValueError(f'{len(fold_probs)} fold(s): cross-fitting needs at least 2.')
  return [fit_temperature(np.concatenate(fold_probs[:i] + fold_probs[i + 1:]),
                          np.concatenate(fold_labels[:i] + fold_labels[i + 1:]))
          for i in range(len(fold_probs))]


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


def bootstrap_intervals(probs: np.ndarray, labels: np.ndarray, threshold: float = 0.5,
                        units: np.ndarray | None = None) -> dict:
  """{'<metric>_ci95': [lo, hi]} for ``CI_KEYS`` (module docstring), with
  ``bootstrap_unit`` ('patient' where some videos share a unit, else 'video') and
  ``bootstrap_units`` (how many units were resampled).

  Args:
    probs: [N, K] class probabilities of N videos.
    labels: [N] integer labels.
    threshold: the binary decision threshold (as ``classification_metrics``).
    units: [N] what is resampled: each video's patient (default: the video itself).
  """
  probs, labels = np.asarray(probs, np.float64), np.asarray(labels)
  units = np.arange(len(labels)) if units is None else units
  counts = statistics.resample_counts(units)
  preds = class_predictions(probs, threshold)
  draws = [weighted_metrics(probs, labels, preds, counts[i:i + _CHUNK])
           for i in range(0, len(counts), _CHUNK)]
  distinct = len(set(np.asarray(units).tolist()))
  return dict({f'{key}_ci95': statistics.percentile_interval(
      np.concatenate([d[key] for d in draws])) for key in CI_KEYS},
              bootstrap_unit='patient' if distinct < len(labels) else 'video',
              bootstrap_units=distinct)


def weighted_metrics(probs: np.ndarray, labels: np.ndarray, preds: np.ndarray,
                     weights: np.ndarray) -> dict[str, np.ndarray]:
  """``CI_KEYS`` of N videos weighted by each row of ``weights`` [R, N] (integer weights:
  the metric of the videos repeated that often), [R] each; NaN where undefined (module
  docstring). ``preds`` [N] are the class predictions of ``probs`` [N, K]."""
  weights = np.asarray(weights, np.float64)
  num_classes = probs.shape[1]
  with np.errstate(invalid='ignore', divide='ignore'):
    out = {'accuracy': (weights * (preds == labels)).sum(1) / weights.sum(1)}
    per_class = [_one_vs_rest(labels == k, preds == k, probs[:, k], weights)
                 for k in ([1] if num_classes == 2 else range(num_classes))]
  for key in CI_KEYS[1:]:
    out[key] = np.mean([c[key] for c in per_class], axis=0)  # NaN if any class's is.
  return out


def _one_vs_rest(positive: np.ndarray, predicted: np.ndarray, scores: np.ndarray,
                 weights: np.ndarray) -> dict[str, np.ndarray]:
  """Precision, sensitivity, specificity, F1, AUC and AP of one class against the rest, [R] each."""
  tp = weights @ (positive & predicted)
  fn = weights @ (positive & ~predicted)
  fp = weights @ (~positive & predicted)
  tn = weights @ (~positive & ~predicted)
  out = {'precision': tp / (tp + fp), 'sensitivity': tp / (tp + fn), 'specificity': tn / (tn + fp),
         'f1': 2 * tp / (2 * tp + fp + fn)}
  # Tied scores form one threshold: group the videos by score, in ascending order.
  order = np.argsort(scores, kind='stable')
  _, starts = np.unique(scores[order], return_index=True)
  pos = np.add.reduceat(weights[:, order] * positive[order], starts, axis=1)
  every = np.add.reduceat(weights[:, order], starts, axis=1)
  neg = every - pos
  total_pos, total_neg = pos.sum(1), neg.sum(1)
  both = (total_pos > 0) & (total_neg > 0)
  # AUC (Mann-Whitney): each positive beats the negatives below its score, ties count 1/2.
  below = np.cumsum(neg, axis=1) - neg
  out['auc'] = np.where(both, (pos * (below + neg / 2)).sum(1) / (total_pos * total_neg),
                        np.nan)
  # AP: sum over thresholds of the recall gained times the precision at that threshold.
  pos_above = total_pos[:, None] - np.cumsum(pos, axis=1) + pos
  every_above = every.sum(1)[:, None] - np.cumsum(every, axis=1) + every
  precision = np.divide(pos_above, every_above, out=np.zeros_like(pos),
                        where=every_above > 0)
  out['ap'] = np.where(both, (pos * precision).sum(1) / total_pos, np.nan)
  return out
