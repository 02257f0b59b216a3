"""Exact, host-side segmentation metrics, per frame and accumulated over a split.

A frame is a **lesion frame** when its ground truth holds a lesion pixel, else a
**lesion-free frame**. Per frame (``prob`` in [0, 1], ``gt`` in {0, 1}; a pixel is predicted
lesion when ``prob > threshold``, 0.5 by default), from the pixel counts TP, FP, FN:

* Dice = 2TP / (2TP + FP + FN), IoU (Jaccard) = TP / (TP + FP + FN),
  precision = TP / (TP + FP), recall = TP / (TP + FN). (The harmonic mean of one frame's
  precision and recall is its Dice, so it is not reported.)
* **Undefined ratios, one rule** (every overlap ratio, per frame, per video and pooled, in
  every report): a ratio whose denominator is 0 is 1 when there is nothing to find and
  nothing is found (TP = FP = FN = 0: a lesion-free frame predicted empty) and 0 otherwise,
  a miss. So an empty prediction on a lesion frame has precision 0 (not 1) as well as
  Dice, IoU and recall 0; a lesion predicted on a lesion-free frame has recall 0 as well as
  Dice, IoU and precision 0; a lesion-free frame predicted empty scores 1 in all four.

Summaries over a split (``SegmentationEvaluator.result()``):

* ``lesion_dice``, ``lesion_iou``, ``lesion_precision``, ``lesion_recall``: means over the
  lesion frames (NaN without one). ``lesion_dice`` is the headline and the default
  ``best_metric`` of segmentation (configs/common.py): a model that predicts nothing scores
  0 on it, however many lesion-free frames the split has. It does not see false alarms on
  lesion-free frames; ``empty_fp_rate`` does.
* ``empty_fp_rate``: the share of lesion-free frames with any predicted lesion pixel;
  ``empty_predicted_area``: their mean predicted share of the frame (both NaN without a
  lesion-free frame). ``lesion_empty_prediction_rate``: the share of lesion frames where
  nothing is predicted; a report warns at its top when it exceeds one half.
* ``pooled_dice`` / ``pooled_iou`` / ``pooled_precision`` / ``pooled_recall``: the ratios of
  the counts summed over every frame (the rule above where a sum is 0); they weigh frames
  by lesion size and count false alarms on lesion-free frames.
* ``mean_<metric>``: means over every scored frame. ``mean_dice`` keeps its earlier
  definition for comparability (a lesion-free frame predicted empty counts 1, so a split of
  mostly empty masks gives a high mean Dice to a model that finds nothing; it no longer
  leads any table); ``empty_gt_fraction`` is the share of lesion-free frames.
* MAE = mean |prob - gt|; S-measure (alpha 0.5), mean E-measure (mean over the 256
  thresholds) and weighted F-measure (beta^2 = 1) from pysodmetrics with
  ``normalize=False`` (probabilities as they are). On empty masks they keep pysodmetrics'
  conventions, which are the published evaluators' (S = 1 - mean prob on an empty mask,
  weighted F = 0 on an empty mask).
* ``*_paper`` (``mae_paper``, ``s_measure_paper``, ``e_measure_paper``,
  ``weighted_f_paper``, averaged as ``mean_*_paper``): the same on each frame's map min-max
  normalised first, (prob - min) / (max - min + 1e-8), as the released FLA-Net
  (jhl-Det/FLA-Net ``eval_w_hm.py``) and DSANet (ZhouL2001/DSANet ``trainV4.py``)
  evaluations do (a constant map becomes 0): the values to set beside the papers' MAE,
  S-alpha and E-phi (docs/segmentation.md). The released pipeline also stores the maps as
  8-bit PNGs before scoring; these do not.
* ``max_f``: the maximum over thresholds of the frame-averaged F-measure curve
  (pysodmetrics, beta^2 = 0.3, the salient-object convention of the video papers).
* ``max_f_mean_pr``: the F-measure of FLA-Net's released evaluator (jhl-Det/FLA-Net,
  ``Code/utils/evaluator.py``, ``Eval_fmeasure``), the only F in the authors' code and so
  our reading of the "F1-score" of Lin et al., Tables 2 and 3 (0.815 beside Dice 0.789):
  at each of 255 thresholds th = linspace(0, 1 - 1e-10, 255), a pixel is lesion when
  ``prob >= th``; precision P and recall R of every frame are averaged over the frames
  first, F(th) = (1 + b2) P R / (b2 P + R) with b2 = 0.3 (0 where P = R = 0), and the
  result is the maximum over th. Unlike ``max_f`` it averages P and R, not F. It keeps the
  released code's rule, the one exception to the rule above: a ratio with a zero
  denominator is 0, also on a lesion-free frame predicted empty.
* Boundary metrics (``usvjax.metrics.distances``: ``hd95`` in MONAI's form, MedPy's
  ``hd95_pooled`` and ``assd``, the normalised surface Dice ``nsd``; ``*_mm`` where the
  pixel spacing is known): means over the frames with a lesion in the ground truth or the
  prediction, a frame where exactly one is empty penalised with its diagonal (NSD 0) and
  counted in ``distance_penalised_frames``; ``num_distance_frames`` frames in all.
  ``nsd_tolerance_px`` (and ``nsd_tolerance_mm``) give the tolerances used.

Confidence intervals over videos (``confidence_intervals``) come from
``statistics.video_bootstrap_ci``; the names of the metrics from ``keys``.
"""
from __future__ import annotations

import numpy as np
import py_sod_metrics

from usvjax.errors import ConfigError
from usvjax.metrics import distances
from usvjax.metrics import keys
from usvjax.metrics import statistics

# The released FLA-Net evaluator's thresholds and F-measure weight (``max_f_mean_pr``).
F_THRESHOLDS = np.linspace(0.0, 1.0 - 1e-10, 255)
F_BETA2 = 0.3
# The released FLA-Net and DSANet evaluations' min-max normalisation: (p - min) / (max - min + eps).
PAPER_EPS = 1e-8
# Default NSD tolerances (config.task.nsd_tolerance_px / nsd_tolerance_mm).
NSD_TOLERANCE_PX = 2.0
NSD_TOLERANCE_MM = 1.0


def confusion(prob: np.ndarray, gt: np.ndarray, threshold: float = 0.5) -> tuple[int, int, int]:
  """(TP, FP, FN) pixel counts of ``prob > threshold`` against the binary ``gt``."""
  pred = prob > threshold
  gt = gt.astype(bool)
  tp = int(np.count_nonzero(pred & gt))
  return tp, int(np.count_nonzero(pred & ~gt)), int(np.count_nonzero(~pred & gt))


def overlap_metrics(tp: int, fp: int, fn: int) -> dict[str, float]:
  """Dice, IoU, precision and recall from pixel counts, with the undefined-ratio rule: a
  zero denominator gives 1 when TP = FP = FN = 0, else 0 (module docstring)."""
  perfect = tp + fp + fn == 0

  def ratio(numerator: int, denominator: int) -> float:
    return (1.0 if perfect else 0.0) if denominator == 0 else numerator / denominator

  return {'dice': ratio(2 * tp, 2 * tp + fp + fn), 'iou': ratio(tp, tp + fp + fn),
          'precision': ratio(tp, tp + fp), 'recall': ratio(tp, tp + fn)}


def paper_normalised(prob: np.ndarray) -> np.ndarray:
  """[H, W] -> [H, W]: (prob - min) / (max - min + 1e-8), the released evaluations'
  per-frame min-max normalisation (a constant map becomes 0)."""
  return (prob - prob.min()) / (prob.max() - prob.min() + PAPER_EPS)


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


def structure_metrics(prob: np.ndarray, gt: np.ndarray) -> dict[str, float]:
  """MAE, S-measure, mean E-measure and weighted F-measure (pysodmetrics) of one frame's
  float [H, W] map in [0, 1] and bool [H, W] ground truth."""
  s, e, w = py_sod_metrics.Smeasure(), py_sod_metrics.Emeasure(), py_sod_metrics.WeightedFmeasure()
  for metric in (s, e, w):
    metric.step(prob, gt, normalize=False)
  return {'mae': float(np.mean(np.abs(prob - gt))), 's_measure': float(s.get_results()['sm']),
          'e_measure': float(np.mean(e.get_results()['em']['curve'])),
          'weighted_f': float(w.get_results()['wfm'])}


class SegmentationEvaluator:
  """Accumulates per-frame metrics over a dataset; ``result()`` summarises them.

  Args:
    threshold: a pixel is predicted lesion where ``prob > threshold``.
    nsd_tolerance_px: the tolerance of ``nsd`` in pixels of the scored frame.
    nsd_tolerance_mm: the tolerance of ``nsd_mm`` in mm (frames with a pixel spacing).
  """

  def __init__(self, threshold: float = 0.5, nsd_tolerance_px: float = NSD_TOLERANCE_PX,
               nsd_tolerance_mm: float = NSD_TOLERANCE_MM):
    self.threshold = threshold
    self.tolerances = (float(nsd_tolerance_px), float(nsd_tolerance_mm))
    self.rows: list[dict] = []
    self.with_spacing = False  # Whether any frame came with its pixel spacing.
    self.pr_sums = np.zeros((2, len(F_THRESHOLDS)))  # Summed precision and recall curves.
    self._fmeasure = py_sod_metrics.FmeasureV2(
        {'fm': py_sod_metrics.FmeasureHandler(with_dynamic=True, with_adaptive=False,
                                              beta=0.3)})

  def update(self, prob: np.ndarray, gt: np.ndarray,
             spacing: tuple[float, float] | None = None, **info) -> dict:
    """Adds one frame: ``prob`` float [H, W], ``gt`` [H, W] in {0, 1}, ``spacing`` its
    pixel size in mm (row, column) if known; returns its row (``info`` and every per-frame
    metric, ``lesion``, ``predicted_area`` and the pixel counts ``tp``, ``fp``, ``fn``)."""
    prob = np.asarray(prob, np.float64)
    gt_bool = np.asarray(gt) > 0.5
    pred = prob > self.threshold
    counts = confusion(prob, gt_bool, self.threshold)
    row = dict(info, **overlap_metrics(*counts), **dict(zip(('tp', 'fp', 'fn'), counts)))
    row.update(distances.frame_distances(pred, gt_bool, *self.tolerances, spacing))
    self.with_spacing |= spacing is not None
    row['lesion'] = bool(gt_bool.any())
    row['predicted_area'] = float(np.mean(pred))
    row.update(structure_metrics(prob, gt_bool))
    row.update({f'{k}_paper': v
                for k, v in structure_metrics(paper_normalised(prob), gt_bool).items()})
    self._fmeasure.step(prob, gt_bool, normalize=False)
    self.pr_sums += precision_recall_curve(prob, gt_bool)
    self.rows.append(row)
    return row

  def frame_values(self, key: str) -> np.ndarray:
    """[frames] values of a summary ``key`` (``mean_<k>``, ``lesion_<k>`` or a boundary
    metric), NaN on the frames outside its frame set."""
    if key.startswith('lesion_'):
      name = key.removeprefix('lesion_')
      return np.array([r[name] if r['lesion'] else np.nan for r in self.rows], np.float64)
    return np.array([r[key.removeprefix('mean_')] for r in self.rows], np.float64)

  def result(self) -> dict[str, float]:
    """The summaries of the module docstring: frame means (all, lesion), pooled overlaps,
    the lesion-free frames' false alarms, both maximum F-measures, the boundary metrics and
    the counts."""
    if not self.rows:
      raise ConfigError('no frames were evaluated.')
    lesion = np.array([r['lesion'] for r in self.rows])
    area = np.array([r['predicted_area'] for r in self.rows])
    mean = statistics.defined_mean
    out = {f'mean_{k}': mean(self.frame_values(k)) for k in keys.SEGMENTATION_KEYS}
    out.update({f'lesion_{k}': mean(self.frame_values(f'lesion_{k}'))
                for k in keys.LESION_KEYS})
    pooled = overlap_metrics(*np.sum([[r['tp'], r['fp'], r['fn']] for r in self.rows], 0))
    out.update({f'pooled_{k}': float(pooled[k]) for k in keys.POOLED_KEYS})
    out['empty_fp_rate'] = mean(area[~lesion] > 0)
    out['empty_predicted_area'] = mean(area[~lesion])
    out[keys.MISSED_KEY] = mean(area[lesion] == 0)
    out['max_f'] = float(np.max(self._fmeasure.get_results()['fm']['dynamic']))
    out['max_f_mean_pr'] = float(np.max(f_measure(*self.pr_sums / len(self.rows))))
    out['empty_gt_fraction'] = float(np.mean(~lesion))
    out['scored_frames'], out['num_lesion_frames'] = len(self.rows), int(lesion.sum())
    for key in keys.DISTANCE_KEYS + (keys.DISTANCE_MM_KEYS if self.with_spacing else ()):
      out[key] = mean(self.frame_values(key))
    out['num_distance_frames'] = int(np.isfinite(self.frame_values('hd95')).sum())
    out['distance_penalised_frames'] = sum(r['distance_penalised'] for r in self.rows)
    out['nsd_tolerance_px'] = self.tolerances[0]
    if self.with_spacing:
      out['nsd_tolerance_mm'] = self.tolerances[1]
    return out

  def confidence_intervals(self) -> dict[str, list[float]]:
    """{'<metric>_ci95': [lo, hi]} of ``keys.CI_KEYS`` that ``result()`` reports: the
    per-video bootstrap (``statistics.video_bootstrap_ci``) of the frame-weighted mean, each
    video weighted by its frames in the metric's frame set (lesion frames for
    ``lesion_*``, distance frames for the boundary metrics); ``pooled_dice`` weights each
    video's pooled Dice by its 2TP + FP + FN, so that the weighted mean is the pooled Dice."""
    videos: dict = {}
    for i, row in enumerate(self.rows):
      videos.setdefault(row.get('video_id', i), []).append(i)
    out = {}
    for key in keys.CI_KEYS:
      if key in keys.DISTANCE_MM_KEYS and not self.with_spacing:
        continue
      if key == 'pooled_dice':
        sums = [np.sum([[self.rows[i][c] for c in ('tp', 'fp', 'fn')] for i in v], 0)
                for v in videos.values()]
        means = np.array([overlap_metrics(*s)['dice'] for s in sums])
        counts = np.array([2 * s[0] + s[1] + s[2] for s in sums])
      else:
        values = self.frame_values(key)
        counts = np.array([np.isfinite(values[v]).sum() for v in videos.values()])
        means = np.array([statistics.defined_mean(values[v]) for v in videos.values()])
      out[f'{key}_ci95'] = statistics.video_bootstrap_ci(np.nan_to_num(means), counts)
    return out
