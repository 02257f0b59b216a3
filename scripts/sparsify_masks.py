r"""Copies a segmentation dataset folder keeping the masks of only some frames of some videos,
as a clinic traces them, so that it can be converted with ``sparse_masks=True``.

  python scripts/sparsify_masks.py --src=DIR --dst=NEW_DIR --dataset=usv_frames_table/cvc612 \
      (--every=10 | --per_video=2) [--split=train | --videos=1,5,8] [--seed=0]

``--dataset`` is the builder (and config) whose layout ``--src`` is in: any segmentation
layout (``usv_frames_table``, ``usv_davis``, ``usv_flanet``, ``usv_cine_table``). The folder
is read as conversion reads it (the layout, ``splits.csv``; ``SegmentationLayout.read_splits``),
so ``--split`` (default ``train``) is the split that config gives, e.g. CVC-612's training
videos (its fixed validation and test lists stay dense). ``--videos`` names the videos
instead. In each chosen video, among the frames that have a mask, ``--every=N`` keeps 1 in N
and ``--per_video=K`` keeps K (``min(K, frames)``), seeded by ``--seed`` and the video id
(``input_pipeline/builders/sparse.py:keep_frames``); the other masks are left out of the
copy. Every other file is copied as it is. The copy is then converted with, e.g.,
``--config.dataset.name=usv_frames_table/sparse_masks=True --config.dataset.config=cvc612
--config.dataset.manual_dir=NEW_DIR`` (docs/data.md, "Sparse masks").
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Sequence

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
from usvjax.reporting import console

console.quiet_native(sys.argv)
import tensorflow_datasets as tfds

from input_pipeline import builders  # pylint: disable=unused-import  (registers them)
from input_pipeline.builders import checks
from input_pipeline.builders import common
from input_pipeline.builders import segmentation_layout as layout
from input_pipeline.builders import sparse


def sparsify(src: str, dst: str, dataset: str, every: int = 0, per_video: int = 0,
             split: str = 'train', videos: Sequence[str] = (), seed: int = 0
             ) -> dict[str, list[int]]:
  """Copies ``src`` to ``dst`` without the masks left out (module docstring); returns
  {video id: frame numbers (0-based, in the video) whose masks were kept} of the chosen
  videos."""
  common.require_dir(src, 'dataset folder --src')
  if os.path.exists(dst):
    raise common.DatasetError(f'--dst {common.shown(dst)} exists: name a new folder.')
  builder = tfds.builder(dataset, sparse_masks=True)
  if not isinstance(builder, layout.SegmentationLayout):
    raise common.DatasetError(f'--dataset {dataset!r} is not a segmentation layout of files '
                              'on disk (usv_frames_table, usv_davis, usv_flanet, '
                              'usv_cine_table).')
  splits, problems = builder.read_splits(src)
  problems.raise_if_any()
  by_id = {v.video_id: v for members in splits.values() for v in members}
  if videos:
    unknown = [v for v in videos if v not in by_id]
    if unknown:
      raise common.DatasetError(f'--videos: {unknown[0]!r} is not a video of {dataset} in '
                                f'{common.shown(src)}{checks.suggestion(unknown[0], sorted(by_id))}.')
    chosen = [by_id[v] for v in videos]
  elif split not in splits:
    raise common.DatasetError(f'--split {split!r} is not a split of {dataset} in '
                              f'{common.shown(src)}: use one of {sorted(splits)}.')
  else:
    chosen = splits[split]
  kept, dropped = {}, []
  for video in chosen:
    traced = [n for n, mask in enumerate(video.masks) if mask is not None]
    keep = sparse.keep_frames(len(traced), video.video_id, seed, every, per_video)
    kept[video.video_id] = [n for n, k in zip(traced, keep) if k]
    dropped += [video.masks[n] for n, k in zip(traced, keep) if not k]
  shutil.copytree(src, dst, ignore=_ignore(set(map(os.path.realpath, dropped))))
  return kept


def _ignore(dropped: set[str]):
  """A ``copytree`` ignore function that leaves out the files of ``dropped`` (real paths)."""
  return lambda folder, names: [n for n in names
                                if os.path.realpath(os.path.join(folder, n)) in dropped]


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--src', required=True, help='the dataset folder')
  parser.add_argument('--dst', required=True, help='the new folder (must not exist)')
  parser.add_argument('--dataset', required=True, help='builder[/config] of the layout')
  rule = parser.add_mutually_exclusive_group(required=True)
  rule.add_argument('--every', type=int, default=0, help='keep 1 mask in N frames')
  rule.add_argument('--per_video', type=int, default=0, help='keep K masks per video')
  parser.add_argument('--split', default='train', help='the split whose videos to thin')
  parser.add_argument('--videos', default='', help='comma-separated video ids instead')
  parser.add_argument('--seed', type=int, default=0)
  args = parser.parse_args(argv)
  if max(args.every, args.per_video) < 1:
    parser.error('--every and --per_video must be >= 1.')
  console.set_up()  # TFDS's "Using custom data configuration" warning: to the log.
  try:
    kept = sparsify(args.src, args.dst, args.dataset, args.every, args.per_video, args.split,
                    [v for v in args.videos.split(',') if v], args.seed)
  except common.DatasetError as e:
    sys.exit(f'sparsify_masks: {e}')
  total = sum(len(frames) for frames in kept.values())
  print(f'{args.dst}: kept {total} masks in {len(kept)} video(s); other videos unchanged.')
  for video_id, frames in kept.items():
    print(f'  {video_id}: frames {frames}')


if __name__ == '__main__':
  main()
