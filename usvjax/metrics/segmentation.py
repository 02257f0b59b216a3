"""Exact, host-side segmentation metrics, per frame and accumulated over a split.

Per frame (``prob`` in [0, 1], ``gt`` in {0, 1}; a pixel is predicted lesion when
``prob > threshold``, threshold 0.5 by default):

* Dice = 2TP / (2TP + FP + FN), IoU (Jaccard) = TP / (TP + FP + FN),
  precision = TP / (TP + FP), recall = TP / (TP + FN), MAE = mean |prob - gt|. (The
  harmonic mean of one frame's precision and recall is its Dice, so it is not reported.)
* **Empty-mask rule**: every ratio whose numerator and denominator are both 0 is 1
  (nothing to find and nothing found is a perfect frame); so a frame with an empty mask
  scores 1 if nothing is predicted and Dice = IoU = precision = 0 otherwise.
* S-measure (alpha 0.5), mean E-measure (mean over the 256 thresholds) and weighted
  F-measure (beta^2 = 1) come from pysodmetrics with ``normalize=False`` (probabilities
  are used as they are, not min-max stretched per frame). On empty masks they keep
  pysodmetrics' own conventions (an empty prediction there scores S = 1 and weighted F = 0).
* Results are averaged over frames (``mean_*``) and, separately, pooled over the dataset
  (``pooled_dice`` / ``pooled_iou`` / ``pooled_precision`` / ``pooled_recall`` from the
  summed TP, FP, FN); ``max_f`` is the maximum over thresholds of the frame-averaged
  F-measure curve (beta^2 = 0.3, the salient-object convention of the video papers).
* ``max_f_mean_pr``: the F-measure of FLA-Net's released evaluator (jhl-Det/FLA-Net,
  ``Code/utils/evaluator.py``, ``Eval_fmeasure``), the only F in the authors' code and so
  our reading of the "F1-score" of Lin et al., Tables 2 and 3 (0.815 beside Dice 0.789):
  at each of 255 thresholds th = linspace(0, 1 - 1e-10, 255), a pixel is lesion when
  ``prob >= th``; precision P and recall R of every frame are averaged over the frames
  first, F(th) = (1 + b2) P R / (b2 P + R) with b2 = 0.3 (0 where P = R = 0), and the
  result is the maximum over th. Unlike ``max_f`` it averages P and R, not F; and as
  there, a ratio with a zero denominator is 0 (no empty-mask rule: a frame where nothing
  is predicted has precision 0). Differences from the released pipeline: our
  probabilities are not min-max stretched per frame nor stored as 8-bit PNGs first.
* ``empty_gt_fraction``: the share of scored frames whose ground truth is empty. Every
  report carries it because an empty prediction on an empty mask scores Dice 1: a split of
  mostly empty masks gives a high mean Dice to a model that finds nothing (the pooled Dice
  does not).
* Boundary distances, from MedPy (``medpy.metric.binary``, 0.5.2): ``hd95``, the 95th
  percentile of the symmetric surface distances between the predicted and the true lesion
  (their one-pixel borders, 4-connected erosion), and ``assd``, the mean of those
  distances (MedPy's: the surface distances of both directions pooled, then averaged), in
  pixels of the scored frame; ``hd95_mm`` and ``assd_mm`` in millimetres where the frame's
  pixel spacing (row, column) is known (``spacing``). **Empty-mask convention**: a
  surface distance is undefined on a frame whose ground truth or prediction is empty (NaN
  in its row); such frames are left out of the means ``hd95`` / ``assd`` and counted in
  ``surface_distance_undefined_frames``; the mean of a split without any defined frame is
  NaN. (Dice and IoU score those frames by the empty-mask rule above.)

Confidence intervals over videos (``confidence_intervals``) come from
``statistics.video_bootstrap_ci``; the names of the metrics from ``keys``.
"""
from __future__ import annotations

import numpy as np
import py_sod_metrics
from medpy.metric import binary as medpy_binary

from usvjax.errors import ConfigError
from usvjax.metrics import keys
from usvjax.metrics import statistics

# The released FLA-Net evaluator's thresholds and F-measure weight (``max_f_mean_pr``).
F_THRESHOLDS = np.linspace(0.0, 1.0 - 1e-10, 255)
F_BETA2 = 0.3


def confusion(prob: np.ndarray, gt: np.ndarray, threshold: float = 0.5) -> tuple[int, int, int]:
  """(TP, FP, FN) pixel counts of ``prob > threshold`` against the binary ``gt``."""
  pred = prob > threshold
  gt = gt.astype(bool)
  tp = int(np.count_nonzero(pred & gt))
  return tp, int(np.count_nonzero(pred & ~gt)), int(np.count_nonzero(~pred & gt))


def overlap_metrics(tp: int, fp: int, fn: int) -> dict[str, float]:
  """Dice, IoU, precision and recall from pixel counts, with the empty-mask rule."""
  return {
      'dice': statistics.ratio(2 * tp, 2 * tp + fp + fn),
      'iou': statistics.ratio(tp, tp + fp + fn),
      'precision': statistics.ratio(tp, tp + fp),
      'recall': statistics.ratio(tp, tp + fn),
  }


def precision_recall_curve(prob: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """One frame's precision and recall of ``prob >= th`` at each th of ``F_THRESHOLDS``
  (as FLA-Net's released evaluator: 0 where the denominator is 0): [H, W] -> 2 x [255]."""
  # A pixel is predicted at the thresholds below its rank: those th_i with i < rank.
  rank = np.searchsorted(F_THRESHOLDS, np.ravel(prob), side='right')
  gt = np.ravel(gt).astype(bool)
  size = len(F_THRESHOLDS) + 1
  predicted = np.cumsum(np.bincount(rank, minlength=size)[::-1])[::-1][1:]
  tp = np.cumsum(np.bincount(rank[gt], minlength=size)[::-1])[::-1][1:]
  precision = np.divide(tp, predicted, out=np.zeros(tp.shape), where=predicted > 0)
  recall = tp / gt.sum() if gt.any() else np.zeros(tp.shape)
  return precision, recall


def f_measure(precision: np.ndarray, recall: np.ndarray, beta2: float = F_BETA2) -> np.ndarray:
  """(1 + beta2) P R / (beta2 P + R), 0 where P = R = 0."""
  denominator = beta2 * precision + recall
  return np.divide((1 + beta2) * precision * recall, denominator,
                   out=np.zeros(np.shape(denominator)), where=denominator > 0)


def surface_distances(pred: np.ndarray, gt: np.ndarray,
                      spacing: tuple[float, float] | None = None) -> dict[str, float]:
  """HD95 and ASSD (MedPy) of one frame's bool [H, W] prediction and ground truth: in
  pixels, and in mm with ``spacing`` (row, column mm per pixel); NaN where either mask is
  empty, mm values NaN without ``spacing``."""
  out = dict.fromkeys(keys.DISTANCE_KEYS + keys.DISTANCE_MM_KEYS, float('nan'))
  if not (pred.any() and gt.any()):
    return out
  out['hd95'] = float(medpy_binary.hd95(pred, gt))
  out['assd'] = float(medpy_binary.assd(pred, gt))
  if spacing is not None:
    out['hd95_mm'] = float(medpy_binary.hd95(pred, gt, voxelspacing=spacing))
    out['assd_mm'] = float(medpy_binary.assd(pred, gt, voxelspacing=spacing))
  return out


class SegmentationEvaluator:
  """Accumulates per-frame metrics over a dataset; ``result()`` summarises them."""

  def __init__(self, threshold: float = 0.5):
    self.threshold = threshold
    self.rows: list[dict] = []
    self.totals = np.zeros(3, np.int64)
    self.with_spacing = False  # Whether any frame came with its pixel spacing.
    self.pr_sums = np.zeros((2, len(F_THRESHOLDS)))  # Summed precision and recall curves.
    self._fmeasure = py_sod_metrics.FmeasureV2(
        {'fm': py_sod_metrics.FmeasureHandler(with_dynamic=True, with_adaptive=False,
                                              beta=0.3)})

  def update(self, prob: np.ndarray, gt: np.ndarray,
             spacing: tuple[float, float] | None = None, **info) -> dict:
    """Adds one frame: ``prob`` float [H, W], ``gt`` [H, W] in {0, 1}, ``spacing`` its
    pixel size in mm (row, column) if known; returns its row."""
    prob = np.asarray(prob, np.float64)
    gt_bool = np.asarray(gt) > 0.5
    counts = confusion(prob, gt_bool, self.threshold)
    self.totals += counts
    row = dict(info, **overlap_metrics(*counts))
    row.update(surface_distances(prob > self.threshold, gt_bool, spacing))
    self.with_spacing |= spacing is not None
    row['mae'] = float(np.mean(np.abs(prob - gt_bool)))
    row['empty_gt'] = not gt_bool.any()
    row.update(_structure_metrics(prob, gt_bool))
    self._fmeasure.step(prob, gt_bool, normalize=False)
    self.pr_sums += precision_recall_curve(prob, gt_bool)
    self.rows.append(row)
    return row

  def result(self) -> dict[str, float]:
    """The means over frames, the pooled overlaps, both maximum F-measures, the boundary
    distances' defined means and the counts (module docstring)."""
    if not self.rows:
      raise ConfigError('no frames were evaluated.')
    out = {f'mean_{k}': float(np.mean([r[k] for r in self.rows]))
           for k in keys.SEGMENTATION_KEYS}
    pooled = overlap_metrics(*self.totals)
    out.update({f'pooled_{k}': float(pooled[k]) for k in keys.POOLED_KEYS})
    out['max_f'] = float(np.max(self._fmeasure.get_results()['fm']['dynamic']))
    out['max_f_mean_pr'] = float(np.max(f_measure(*self.pr_sums / len(self.rows))))
    out['empty_gt_fraction'] = float(np.mean([r['empty_gt'] for r in self.rows]))
    out['num_frames'] = len(self.rows)
    for key in keys.DISTANCE_KEYS + (keys.DISTANCE_MM_KEYS if self.with_spacing else ()):
      out[key] = statistics.defined_mean([r[key] for r in self.rows])
    out['surface_distance_undefined_frames'] = int(np.sum(np.isnan(
        [r['hd95'] for r in self.rows])))
    return out

  def confidence_intervals(self) -> dict[str, list[float]]:
    """{'<metric>_ci95': [lo, hi]} of the headline metrics (``keys.CI_KEYS`` that
    ``result()`` reports): per-video bootstrap (``statistics.video_bootstrap_ci``) of the
    frame-weighted mean; the boundary distances weight each video by its frames where they
    are defined."""
    videos: dict = {}
    for i, row in enumerate(self.rows):
      videos.setdefault(row.get('video_id', i), []).append(row)
    out = {}
    for key in keys.CI_KEYS:
      if key in keys.DISTANCE_MM_KEYS and not self.with_spacing:
        continue
      frame_key = key.removeprefix('mean_')
      values = [np.array([r[frame_key] for r in rows], np.float64) for rows in videos.values()]
      counts = np.array([np.isfinite(v).sum() for v in values])
      means = np.array([statistics.defined_mean(v) for v in values])
      out[f'{key}_ci95'] = statistics.video_bootstrap_ci(np.nan_to_num(means), counts)
    return out


def _structure_metrics(prob: np.ndarray, gt: np.ndarray) -> dict[str, float]:
  """S-measure, mean E-measure and weighted F-measure of one frame (pysodmetrics)."""
  s, e, w = py_sod_metrics.Smeasure(), py_sod_metrics.Emeasure(), py_sod_metrics.WeightedFmeasure()
  for metric in (s, e, w):
    metric.step(prob, gt, normalize=False)
  return {'s_measure': float(s.get_results()['sm']),
          'e_measure': float(np.mean(e.get_results()['em']['curve'])),
          'weighted_f': float(w.get_results()['wfm'])}
