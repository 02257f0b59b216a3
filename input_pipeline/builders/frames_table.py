"""TFDS builder ``usv_frames_table``: flat frames plus a frame-to-video table.

This is the CVC-612 (CVC-ClinicDB) layout. Put the dataset in ``manual_dir``::

  Original/<frame>.png        frames, any image format, named by frame number
  Ground Truth/<frame>.png    one mask per frame, same name stem
  sequences.csv               columns ``frame,sequence[,group]``: the video of every frame
                              and, optionally, its patient (group)

Frames of a video are ordered by frame number. Every frame file needs exactly one row and
one mask (with the option ``sparse_masks=True``, a frame without a mask is unannotated). Splits are by video, never by frame, and keep a group's videos together:
config ``cvc612`` uses the split suggested with the data (test = {0, 6, 7, 16, 24},
validation = {2, 3, 4, 11, 15, 17}, train = the rest) and thresholds its near-binary masks
at 127 (``mask_threshold``); config ``default`` draws a seeded 70/15/15 split of the
groups (``splits.split_videos``) and needs binary masks unless ``mask_threshold`` is given.
Examples carry ``group``: the group column, or the video id without one. The whole
dataset is checked before conversion (docs/data.md).
"""
from __future__ import annotations

import dataclasses
import os

from input_pipeline.builders import checks
from input_pipeline.builders import common
from input_pipeline.builders import segmentation_layout as layout
from input_pipeline.builders import splits as splits_lib


@dataclasses.dataclass
class FramesTableConfig(layout.SegmentationConfig):
  """Folder names, the table, and either fixed video lists or split fractions."""
  frames_dir: str = 'Original'
  masks_dir: str = 'Ground Truth'
  table: str = 'sequences.csv'
  group_column: str = 'group'
  fixed_splits: tuple[tuple[str, tuple[str, ...]], ...] = ()  # ((split, videos), ...).
  fractions: tuple[tuple[str, float], ...] = (('train', 0.7), ('validation', 0.15),
                                              ('test', 0.15))
  seed: int = 0


class UsvFramesTable(layout.SegmentationLayout):
  """Video segmentation from flat frame folders and a frame-to-video table."""

  MANUAL_DOWNLOAD_INSTRUCTIONS = __doc__
  WITH_GROUP = True
  BUILDER_CONFIGS = [
      FramesTableConfig(name='default'),
      FramesTableConfig(name='cvc612', mask_threshold=127, fixed_splits=(
          ('test', ('0', '6', '7', '16', '24')),
          ('validation', ('2', '3', '4', '11', '15', '17')))),
  ]

  def _read_layout(self, root: str, problems: checks.Problems
                   ) -> dict[str, list[checks.Video]]:
    cfg = self.builder_config
    frames_dir = common.require_dir(os.path.join(root, cfg.frames_dir), 'frames folder')
    masks_dir = common.require_dir(os.path.join(root, cfg.masks_dir), 'masks folder')
    frames = checks.images_by_stem(frames_dir, problems)
    masks = checks.images_by_stem(masks_dir, problems)
    paired = set(checks.pair_masks(frames, masks, frames_dir, masks_dir, problems,
                                   cfg.sparse_masks))
    videos, groups = self._read_table(
        common.require_file(os.path.join(root, cfg.table), 'frame table'), frames, problems)
    ids = sorted(videos, key=common.natural_key)
    if cfg.fixed_splits:
      fixed = {v: s for s, vs in cfg.fixed_splits for v in vs}
      for video in sorted(fixed.keys() - set(ids), key=common.natural_key):
        problems.add('missing file', f'config {cfg.name!r} puts video {video!r} in split '
                     f'{fixed[video]!r} but {cfg.table!r} has no frame of it: add its rows.')
      assignment = {v: fixed.get(v, 'train') for v in ids}
      checks.check_groups_in_one_split(problems, assignment, groups,
                                       f'the split lists of config {cfg.name!r}')
    else:
      assignment = splits_lib.split_videos(ids, cfg.fractions, cfg.seed,
                                           groups=[groups[v] for v in ids])
    return {name: [checks.Video(common.text_id(v), [frames[s] for s in videos[v] if s in paired],
                                [masks.get(s) for s in videos[v] if s in paired],
                                common.text_id(groups[v]))
                   for v in ids if assignment[v] == name]
            for name in sorted(set(assignment.values()))}

  def _read_table(self, path: str, frames: dict[str, str], problems: checks.Problems
                  ) -> tuple[dict[str, list[str]], dict[str, str]]:
    """{video: frame stems in frame order} and {video: group} from the table; blank cells,
    frames listed twice or in two videos, rows without a file, files without a row and
    videos in two groups are problems."""
    cfg = self.builder_config
    columns, rows = common.read_table(path)
    missing = {'frame', 'sequence'} - set(columns)
    if missing:
      raise common.DatasetError(f'{common.shown(path)} lacks the column(s) {sorted(missing)}; '
                                f'it needs "frame,sequence[,{cfg.group_column}]".')
    needed = ('frame', 'sequence') + ((cfg.group_column,) if cfg.group_column in columns else ())
    videos: dict[str, list[str]] = {}
    groups: dict[str, str] = {}
    first: dict[str, tuple[int, str]] = {}  # Frame stem -> (line, video) of its first row.
    for line, row in rows:
      where = f'{cfg.table} line {line}'
      if checks.has_blank_cells(problems, where, row, needed):
        continue
      stem, video = row['frame'], row['sequence']
      group = row.get(cfg.group_column) or video
      if stem in first:
        other_line, other = first[stem]
        kind, text = (('duplicate frame', f'twice for video {common.shown(video)}')
                      if other == video else
                      ('frame in two videos', f'in video {common.shown(other)} and in video '
                       f'{common.shown(video)}'))
        problems.add(kind, f'frame {common.shown(stem)} is listed {text} ({cfg.table} lines '
                     f'{other_line} and {line}): a frame belongs to one video, once.')
        continue
      first[stem] = (line, video)
      if stem not in frames:
        problems.add('missing file', f'frame {common.shown(stem)} ({where}) has no image in '
                     f'{common.shown(os.path.join(os.path.dirname(path), cfg.frames_dir))}: '
                     'add it or delete the row.')
        continue
      videos.setdefault(video, []).append(stem)
      if groups.setdefault(video, group) != group:
        problems.add('video in two groups', f'video {common.shown(video)} is in group '
                     f'{common.shown(groups[video])} and in group {common.shown(group)} '
                     f'({where}): give all its frames one group.')
    for stem in sorted(frames.keys() - first.keys(), key=common.natural_key):
      problems.add('unlisted frame', f'frame {common.shown(frames[stem])} has no row in '
                   f'{cfg.table}: add a row (frame,sequence) or remove the file.')
    return ({v: sorted(stems, key=common.natural_key) for v, stems in videos.items()},
            groups)
