"""Summaries of per-frame and per-video values: ratios, means over defined values, bootstrap
intervals and paired tests.

* ``ratio``: a ratio whose numerator and denominator are both 0 is 1 (the empty-mask rule
  of the segmentation metrics, and a specificity without negatives).
* ``defined_mean``: the mean of the finite values (a boundary distance is NaN where it is
  undefined).
* ``video_bootstrap_ci``: 95% confidence intervals of the frame means, by a percentile
  bootstrap over videos (frames of one video are not independent): videos are resampled
  with replacement (9999 resamples, seed 0), and each resample's statistic is weighted by
  the videos' frame counts, as the headline mean is. ``paired_bootstrap`` is the same over
  per-video differences of two methods on the same videos, with a two-sided p-value;
  ``paired_auc_bootstrap`` the same for the AUC difference of two binary classifiers.
* ``resample_counts``: the draws of a cluster bootstrap as counts, how many times each
  item (a video) is drawn when its units (patients; a video is its own unit where none is
  known) are resampled with replacement (9999 resamples, seed 0), so a statistic of the
  resampled items is the same statistic weighted by the counts (the classification
  intervals, ``metrics.classification.bootstrap_intervals``); ``percentile_interval`` its
  95% percentile interval.
"""
from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np
from scipy import stats

BOOTSTRAP_RESAMPLES = 9999
BOOTSTRAP_SEED = 0


def ratio(numerator: float, denominator: float) -> float:
  """``numerator / denominator``, 1 where the denominator is 0 (so 0 / 0 is perfect)."""
  return 1.0 if denominator == 0 else numerator / denominator


def defined_mean(values: Sequence[float] | np.ndarray) -> float:
  """The mean of the finite ``values`` (NaN when there is none): the boundary distances'
  mean over the frames where they are defined."""
  values = np.asarray(values, np.float64)
  finite = values[np.isfinite(values)]
  return float(np.mean(finite)) if finite.size else float('nan')


def _weighted_mean(values: np.ndarray, weights: np.ndarray, axis: int = -1) -> np.ndarray:
  return np.sum(values * weights, axis=axis) / np.sum(weights, axis=axis)


def _bootstrap(values: np.ndarray, weights: np.ndarray):
  """scipy's percentile bootstrap of the weighted mean over videos (None for < 2 videos)."""
  if len(values) < 2:
    return None
  return stats.bootstrap((values, weights), _weighted_mean, paired=True, vectorized=True,
                         n_resamples=BOOTSTRAP_RESAMPLES, method='percentile',
                         rng=np.random.default_rng(BOOTSTRAP_SEED))


def video_bootstrap_ci(values: np.ndarray, weights: np.ndarray) -> list[float]:
  """[lo, hi], the 95% percentile-bootstrap interval of sum(w v) / sum(w) when videos are
  resampled: ``values`` [V] per-video means, ``weights`` [V] their frame counts (videos of
  weight 0 are left out). [nan, nan] with fewer than two videos."""
  values, weights = np.asarray(values, np.float64), np.asarray(weights, np.float64)
  keep = weights > 0
  result = _bootstrap(values[keep], weights[keep])
  if result is None:
    return [float('nan'), float('nan')]
  return [float(result.confidence_interval.low), float(result.confidence_interval.high)]


def paired_bootstrap(differences: np.ndarray, weights: np.ndarray) -> dict[str, float]:
  """Paired bootstrap over videos of a metric's difference between two methods.

  Args:
    differences: [V] per-video differences (method minus reference) on the same videos.
    weights: [V] the videos' frame counts (the headline mean's weights).

  Returns:
    ``difference`` (the weighted mean), ``ci95_lo`` / ``ci95_hi`` (percentile bootstrap)
    and ``p`` (two-sided: twice the share of resampled means on the far side of 0, at most
    1; NaN, like the interval, with fewer than two videos).
  """
  differences = np.asarray(differences, np.float64)
  weights = np.asarray(weights, np.float64)
  out = {'difference': float(_weighted_mean(differences, weights))}
  result = _bootstrap(differences, weights)
  if result is None:
    return dict(out, ci95_lo=float('nan'), ci95_hi=float('nan'), p=float('nan'))
  means = result.bootstrap_distribution
  p = min(1.0, 2 * min(np.mean(means <= 0), np.mean(means >= 0)))
  return dict(out, ci95_lo=float(result.confidence_interval.low),
              ci95_hi=float(result.confidence_interval.high), p=float(p))


def _auc(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
  """ROC AUC of each row (Mann-Whitney U with average ranks for ties): [R, V] -> [R];
  NaN for a row with one class only."""
  ranks = stats.rankdata(scores, axis=-1)
  positives = labels.sum(-1)
  negatives = labels.shape[-1] - positives
  with np.errstate(invalid='ignore', divide='ignore'):
    return ((ranks * labels).sum(-1) - positives * (positives + 1) / 2) / (positives * negatives)


def paired_auc_bootstrap(probs: np.ndarray, reference: np.ndarray,
                         labels: np.ndarray) -> dict[str, float]:
  """Paired bootstrap over videos of the AUC difference between two binary classifiers
  scored on the same videos.

  Args:
    probs: [V] p(class 1) of the method.
    reference: [V] p(class 1) of the reference method, same videos in the same order.
    labels: [V] 0/1.

  Returns:
    ``difference`` (AUC minus the reference's), ``ci95_lo`` / ``ci95_hi`` (percentile
    bootstrap: videos resampled with replacement, the same draw for both methods;
    resamples with one class only are left out) and ``p`` (two-sided, as
    ``paired_bootstrap``); NaN without both classes.
  """
  probs, reference = np.asarray(probs, np.float64), np.asarray(reference, np.float64)
  labels = np.asarray(labels, np.float64)
  difference = float(_auc(labels, probs) - _auc(labels, reference))
  if np.isnan(difference):
    return dict(difference=difference, ci95_lo=difference, ci95_hi=difference, p=difference)
  index = np.random.default_rng(BOOTSTRAP_SEED).integers(
      0, len(labels), (BOOTSTRAP_RESAMPLES, len(labels)))
  draws = _auc(labels[index], probs[index]) - _auc(labels[index], reference[index])
  draws = draws[np.isfinite(draws)]
  lo, hi = percentile_interval(draws)
  p = min(1.0, 2 * min(np.mean(draws <= 0), np.mean(draws >= 0)))
  return dict(difference=difference, ci95_lo=lo, ci95_hi=hi, p=float(p))


def resample_counts(units: Sequence[Hashable], resamples: int = BOOTSTRAP_RESAMPLES,
                    seed: int = BOOTSTRAP_SEED) -> np.ndarray:
  """[resamples, N] int: how many times each of N items is drawn when the distinct
  ``units`` (one per item: the patient of each video) are resampled with replacement, as
  many as there are units; an item is drawn as often as its unit. Units are numbered in
  sorted order, so the draws depend only on the units and the seed."""
  _, index = np.unique(np.asarray(units, dtype=object).astype(str), return_inverse=True)
  num_units = int(index.max()) + 1
  draws = np.random.default_rng(seed).integers(0, num_units, (resamples, num_units))
  offsets = num_units * np.arange(resamples)[:, None]
  counts = np.bincount((draws + offsets).ravel(), minlength=resamples * num_units)
  return counts.reshape(resamples, num_units)[:, index]


def percentile_interval(draws: np.ndarray) -> list[float]:
  """[lo, hi]: the 2.5th and 97.5th percentiles (linear interpolation) of the finite
  ``draws`` (a resample where the statistic is undefined is NaN and left out); [nan, nan]
  when none is finite."""
  draws = np.asarray(draws, np.float64)
  draws = draws[np.isfinite(draws)]
  if not draws.size:
    return [float('nan'), float('nan')]
  return [float(v) for v in np.percentile(draws, [2.5, 97.5])]
