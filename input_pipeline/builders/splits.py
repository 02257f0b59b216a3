"""Deterministic video-level splits (never by frame): stratified by label, grouped by patient.

``split_videos`` holds the splits out one at a time, smallest fraction first, with
scikit-learn's ``StratifiedGroupKFold`` (shuffled with ``seed``): a split of fraction p of
what is left is the fold, of round(left / p) folds of the remaining videos, whose size is
closest to p of all videos; the largest split keeps the rest. So

* all videos of one group (patient) land in one split;
* each split keeps the label ratios as far as the groups allow;
* fractions come out within a fold's rounding: 70/15/15 gives 71.4/14.3/14.3 (folds of
  1/7 and 1/6 of what is left); 80/10/10 and 60/20/20 are exact; k splits of fraction 1/k
  are k-fold cross-validation (fold sizes within one video when groups are single videos).

A group whose videos carry different labels (a patient with a benign and a malignant
lesion) is accepted: ``StratifiedGroupKFold`` stratifies on each group's label counts, so
such a group never stops the assignment, only makes the ratios rougher. It is logged, and
so is a split that ends up without a label the data has (its AUC, sensitivity or
specificity are then undefined).
"""
from __future__ import annotations

import warnings
from collections.abc import Hashable, Sequence

import numpy as np
from absl import logging
from sklearn.model_selection import StratifiedGroupKFold


def split_videos(video_ids: Sequence[Hashable], fractions: Sequence[tuple[str, float]],
                 seed: int, labels: Sequence[Hashable] | None = None,
                 groups: Sequence[Hashable] | None = None) -> dict[Hashable, str]:
  """Assigns each video to a split.

  Args:
    video_ids: unique video ids.
    fractions: ``(split name, weight)`` pairs; each split gets about weight / sum of
      weights of the videos.
    seed: fixes the assignment (the order of ``video_ids`` does not matter).
    labels: one label per video, to stratify on; None: no stratification.
    groups: one group (patient) per video, kept in one split; None: each video alone.

  Returns:
    {video_id: split_name}.
  """
  total = sum(w for _, w in fractions)
  if not fractions or total <= 0 or any(w < 0 for _, w in fractions):
    raise ValueError(f'split fractions {list(fractions)} must be >= 0 with a positive sum.')
  if len(set(video_ids)) != len(video_ids):
    raise ValueError('split_videos: video ids must be unique.')
  for name, values in (('labels', labels), ('groups', groups)):
    if values is not None and len(values) != len(video_ids):
      raise ValueError(f'split_videos: {len(values)} {name} for {len(video_ids)} videos.')
  order = sorted(range(len(video_ids)), key=lambda i: str(video_ids[i]))
  y = np.array(['' if labels is None else str(labels[i]) for i in order])
  g = np.array([str(video_ids[i] if groups is None else groups[i]) for i in order])
  _log_mixed_groups(y, g)
  names = np.empty(len(order), object)
  left, share_left = np.arange(len(order)), 1.0
  by_size = sorted(fractions, key=lambda f: f[1])
  for name, weight in by_size[:-1]:
    share = weight / total
    if share > 0 and len(left):
      taken = _hold_out(y[left], g[left], round(share_left / share), share * len(order), seed)
      names[left[taken]] = name
      left, share_left = left[~taken], share_left - share
  names[left] = by_size[-1][0]
  _log_missing_labels(y, names, fractions)
  return {video_ids[i]: str(name) for i, name in zip(order, names)}


def _hold_out(y: np.ndarray, g: np.ndarray, num_folds: int, target: float, seed: int
              ) -> np.ndarray:
  """Which videos form the StratifiedGroupKFold fold whose size is closest to ``target``.

  scikit-learn needs at least 2 folds, no more than groups, and no more than videos of
  the largest class; with fewer than 2 possible folds nothing is held out.
  """
  num_folds = min(max(num_folds, 2), len(set(g)), max(np.unique(y, return_counts=True)[1]))
  if num_folds < 2:
    return np.zeros(len(y), bool)
  splitter = StratifiedGroupKFold(n_splits=num_folds, shuffle=True, random_state=seed)
  with warnings.catch_warnings():
    # "The least populated class has fewer members than n_splits": a small class cannot
    # be in every fold; _log_missing_labels says what that means for the splits.
    warnings.simplefilter('ignore', UserWarning)
    folds = [members for _, members in splitter.split(np.zeros(len(y)), y, g)]
  taken = np.zeros(len(y), bool)
  taken[min(folds, key=lambda members: abs(len(members) - target))] = True
  return taken


def _log_mixed_groups(y: np.ndarray, g: np.ndarray) -> None:
  mixed = sorted(group for group in set(g) if len(set(y[g == group])) > 1)
  if mixed:
    logging.warning('%d group(s) hold videos of different labels (kept together; the '
                    'split is stratified on their label counts): %s', len(mixed),
                    ', '.join(mixed[:20]))


def _log_missing_labels(y: np.ndarray, names: np.ndarray,
                        fractions: Sequence[tuple[str, float]]) -> None:
  present = {str(label) for label in y}
  for name, weight in fractions:
    in_split = {str(label) for label in y[names == name]}
    if weight > 0 and not in_split:
      logging.warning('split %r gets no video: too few groups for the fractions %s.', name,
                      [f for _, f in fractions])
    elif weight > 0 and len(present) > 1 and present - in_split:
      logging.warning('split %r has no video labelled %s: too few groups of that label to '
                      'give every split one.', name, sorted(present - in_split))
