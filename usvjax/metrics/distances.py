"""Boundary metrics of one frame's predicted and true lesion, on one frame set for every
method.

**Surfaces.** A mask's border is the set of its pixels that a 4-connected erosion removes
(MedPy's ``connectivity=1``; a lesion touching the image edge has border pixels there). The
directed surface distances d(A -> B) are, for each border pixel of A, the Euclidean distance
from its centre to the nearest border pixel of B (scipy's exact distance transform, scaled
by the pixel spacing in mm where it is known). Percentiles are numpy's (linear rule).

* ``hd95``: the 95th-percentile Hausdorff distance as MONAI computes it
  (``monai.metrics.compute_hausdorff_distance(percentile=95, directed=False)``) and as most
  of the segmentation literature reports it: the larger of the two directed 95th
  percentiles, max(P95(d(P -> G)), P95(d(G -> P))).
* ``hd95_pooled``: MedPy's form (``medpy.metric.binary.hd95``, 0.5.2): the 95th percentile
  of both directions' distances pooled. It is never larger than ``hd95`` and equals it when
  the two directions agree; usvjax reported this one as ``hd95`` before issue 42.
* ``assd``: MedPy's average symmetric surface distance (``medpy.metric.binary.assd``): the
  mean of both directions' distances pooled.
* ``nsd``: normalised surface Dice (Nikolov et al., "Clinically applicable segmentation of
  head and neck anatomy for radiotherapy", arXiv:1809.04430, 2021) at a tolerance tau: the
  share of both borders' pixels within tau of the other border,
  (|{p in dP : d(p, dG) <= tau}| + |{g in dG : d(g, dP) <= tau}|) / (|dP| + |dG|), border
  pixels counted as MONAI's ``compute_surface_dice(use_subvoxels=False)`` does (DeepMind's
  surface-distance package weights surface elements by their length instead). No pinned
  dependency implements it (MedPy, pysodmetrics and the scikit-image that scikit-learn
  brings have none; MONAI is not a dependency), so it is computed here from the same
  distance transforms. ``nsd`` takes tau in pixels, ``nsd_mm`` in mm.

**Frame set and penalty (the one rule).** Every frame whose ground truth or prediction holds
a lesion is scored; so every lesion frame is scored, for every method. Where exactly one of
the two masks is empty (a missed lesion, or a lesion predicted on a lesion-free frame) the
frame is *penalised*: its distances are its diagonal, sqrt(H^2 + W^2) pixels (and
sqrt((H s_row)^2 + (W s_col)^2) mm with spacing (s_row, s_col)), longer than any distance
inside the frame, and its ``nsd`` is 0. A penalised frame can therefore only raise a mean
distance (and lower the mean NSD). A frame where both masks are empty has no boundary to
measure: its values are NaN and it is left out of the means (it is a correct lesion-free
frame, scored by ``empty_fp_rate`` instead).
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from usvjax.metrics import keys

_CROSS = ndimage.generate_binary_structure(2, 1)  # 4-connected erosion, as MedPy's default.


def border(mask: np.ndarray) -> np.ndarray:
  """The border pixels of a bool [H, W] mask: those its 4-connected erosion removes."""
  return mask & ~ndimage.binary_erosion(mask, structure=_CROSS)


def directed_distances(source: np.ndarray, target: np.ndarray,
                       spacing: tuple[float, float] | None = None) -> np.ndarray:
  """d(source -> target): [border pixels of ``source``] distances to the nearest border
  pixel of ``target`` (bool [H, W] masks, both non-empty), in mm with ``spacing``."""
  return ndimage.distance_transform_edt(~border(target), sampling=spacing)[border(source)]


def boundary_metrics(pred: np.ndarray, gt: np.ndarray, tolerance: float,
                     spacing: tuple[float, float] | None = None) -> dict[str, float]:
  """{'hd95', 'hd95_pooled', 'assd', 'nsd'} of bool [H, W] ``pred`` and ``gt`` in one unit
  (pixels, or mm with ``spacing``; ``tolerance`` of the NSD in the same unit), with the
  penalty where one mask is empty and NaN where both are (module docstring)."""
  if not (pred.any() or gt.any()):
    return dict.fromkeys(keys.DISTANCE_KEYS, float('nan'))
  if not (pred.any() and gt.any()):
    rows, cols = (1.0, 1.0) if spacing is None else spacing
    diagonal = float(np.hypot(pred.shape[0] * rows, pred.shape[1] * cols))
    return {'hd95': diagonal, 'hd95_pooled': diagonal, 'assd': diagonal, 'nsd': 0.0}
  to_gt = directed_distances(pred, gt, spacing)
  to_pred = directed_distances(gt, pred, spacing)
  pooled = np.concatenate([to_gt, to_pred])
  return {'hd95': float(max(np.percentile(to_gt, 95), np.percentile(to_pred, 95))),
          'hd95_pooled': float(np.percentile(pooled, 95)), 'assd': float(np.mean(pooled)),
          'nsd': float(np.mean(pooled <= tolerance))}


def frame_distances(pred: np.ndarray, gt: np.ndarray, tolerance_px: float,
                    tolerance_mm: float,
                    spacing: tuple[float, float] | None = None) -> dict[str, float | bool]:
  """One frame's row of boundary metrics: ``keys.DISTANCE_KEYS`` in pixels (NSD at
  ``tolerance_px``), ``keys.DISTANCE_MM_KEYS`` in mm with ``spacing`` (row, column mm per
  pixel; NSD at ``tolerance_mm``; NaN without it) and ``distance_penalised`` (exactly one
  of the bool [H, W] masks is empty)."""
  out: dict[str, float | bool] = dict(boundary_metrics(pred, gt, tolerance_px))
  mm = (boundary_metrics(pred, gt, tolerance_mm, spacing) if spacing is not None else
        dict.fromkeys(keys.DISTANCE_KEYS, float('nan')))
  out.update({f'{k}_mm': v for k, v in mm.items()})
  out['distance_penalised'] = bool(pred.any()) != bool(gt.any())
  return out
