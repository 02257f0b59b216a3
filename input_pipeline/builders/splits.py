"""Deterministic video-level splits (never by frame), optionally stratified by label."""
from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np


def split_videos(video_ids: Sequence[Hashable], fractions: Sequence[tuple[str, float]],
                 seed: int, labels: Sequence[Hashable] | None = None) -> dict[Hashable, str]:
  """Assigns each video to a split.

  Videos are permuted with ``seed`` (within each label group when ``labels`` is given, so
  that every split keeps the label ratios) and cut by cumulative ``fractions``.

  Returns:
    {video_id: split_name}.
  """
  total = sum(f for _, f in fractions)
  groups: dict[Hashable, list] = {}
  for i, video in enumerate(video_ids):
    groups.setdefault(None if labels is None else labels[i], []).append(video)
  rng = np.random.default_rng(seed)
  assignment = {}
  for group in sorted(groups, key=str):
    members = sorted(groups[group], key=str)
    members = [members[i] for i in rng.permutation(len(members))]
    bounds = np.round(np.cumsum([f / total for _, f in fractions]) * len(members)).astype(int)
    start = 0
    for (name, _), stop in zip(fractions, bounds):
      for video in members[start:stop]:
        assignment[video] = name
      start = stop
  return assignment
