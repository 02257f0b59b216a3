"""Sparse masks: videos traced on some of their frames (the builder option ``sparse_masks``).

``check_annotated`` is the conversion's check that there is something to train and score
on; ``keep_frames`` is the seeded rule that picks the frames whose masks are kept, shared
by the synthetic sparse configs (``usv_synthetic``) and ``scripts/sparsify_masks.py``:

* ``every=N``: 1 frame in N, frames ``o, o + N, o + 2N, ...`` with the offset ``o`` drawn
  in ``[0, min(N, T))`` (so a video shorter than N keeps one frame);
* ``per_video=K``: ``min(K, T)`` distinct frames drawn uniformly.

Draws use ``numpy.random.default_rng([seed, crc32(video id)])``: the same frames for a
video whatever other videos the dataset holds or their order.
"""
from __future__ import annotations

import zlib

import numpy as np
from absl import logging

from input_pipeline.builders import checks
from input_pipeline.builders.common import shown


def keep_frames(num_frames: int, video_id: str, seed: int, every: int = 0,
                per_video: int = 0) -> np.ndarray:
  """bool [num_frames]: the frames of ``video_id`` whose masks are kept, by exactly one of
  ``every`` (1 frame in N) or ``per_video`` (K frames) > 0 (module docstring)."""
  if (every > 0) == (per_video > 0):
    raise ValueError(f'give one of every={every} and per_video={per_video} (> 0).')
  rng = np.random.default_rng(
      [seed, zlib.crc32(video_id.encode('utf-8', 'surrogateescape'))])
  keep = np.zeros(num_frames, bool)
  if not num_frames:
    return keep
  if every:
    keep[int(rng.integers(min(every, num_frames)))::every] = True
  else:
    keep[rng.choice(num_frames, min(per_video, num_frames), replace=False)] = True
  return keep


def check_annotated(problems: checks.Problems, splits: dict[str, list[checks.Video]]
                    ) -> None:
  """A split without an annotated frame (a frame with a mask), and a training video
  without one, are problems: neither could be trained or scored. Logs the annotated share
  of every split that has unannotated frames."""
  for split, videos in sorted(splits.items()):
    counts = [(sum(m is not None for m in v.masks), len(v.masks), v) for v in videos]
    annotated, total = sum(c[0] for c in counts), sum(c[1] for c in counts)
    if annotated < total:
      logging.info('%s: split %r: %d of %d frames annotated (have a mask).',
                   problems.dataset, split, annotated, total)
    if total and not annotated:
      problems.add('no annotated frame', f'split {split!r} has no frame with a mask in any '
                   f'of its {len(videos)} video(s): trace some of its frames (a split is '
                   'scored on its annotated frames only).')
    elif split == 'train':
      for count, length, video in counts:
        if length and not count:
          problems.add('no annotated frame', f'training video {shown(video.video_id)} has '
                       'no mask on any of its frames: trace at least one, or move the video '
                       'to another split or out of the dataset (a training clip is scored on '
                       'an annotated frame).')
