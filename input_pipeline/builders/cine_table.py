"""TFDS builder ``usv_cine_table``: segmentation of video files or DICOM cine loops listed in
a table, with masks named by frame number (what clinics export).

Put the dataset in ``manual_dir``::

  videos.csv                 columns ``path,video[,split][,group]``: the video file (mp4,
                             avi, mov, ...) or DICOM cine loop (``.dcm``, or any file with the
                             DICOM marker), relative to manual_dir; the video's id (letters,
                             digits, ``-``, ``_``, ``.``: it names its masks folder); its
                             split and its patient (group), optionally
  masks/<video>/<n>.png      the mask of frame ``n`` of the video, numbered from 0 (the
                             first decoded frame is 0; ``00012.png`` is frame 12), any image
                             format

Videos are decoded like the video table's (``video_table.iter_video``: OpenCV, or pydicom
for DICOM); a DICOM file's pixel spacing is read from its header (``dicom.py``: PixelSpacing,
else its ultrasound regions), and ``pixel_spacing.csv`` overrides it for the videos it
lists. Without the builder option ``sparse_masks`` every frame needs a mask; with
``sparse_masks=True`` only the traced frames have one (the rest are unannotated). A mask
whose number is not a frame of its video, a mask name that is not a number, a masks folder
of no listed video and a listed video without one are errors. Split cells all filled
(``train``, ``validation``, ``test``) or all blank (a seeded 70/15/15 split by group:
``splits.split_videos``); ``splits.csv`` overrides both. Examples carry ``group`` and
``frame_names`` ``<video>#<n>``. The whole dataset is checked before conversion
(docs/data.md).
"""
from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterator

import numpy as np

from input_pipeline.builders import checks
from input_pipeline.builders import common
from input_pipeline.builders import dicom
from input_pipeline.builders import segmentation_layout as layout
from input_pipeline.builders import video_table

_VIDEO_ID = re.compile(r'[A-Za-z0-9._-]+')
_LISTED_FRAMES = 8  # A missing-masks message lists this many frame numbers.


@dataclasses.dataclass
class CineTableConfig(layout.SegmentationConfig):
  """The table, its columns, the masks folder and the seeded split's fractions."""
  table: str = 'videos.csv'
  path_column: str = 'path'
  video_column: str = 'video'
  split_column: str = 'split'
  group_column: str = 'group'
  masks_dir: str = 'masks'
  fractions: tuple[tuple[str, float], ...] = (('train', 0.7), ('validation', 0.15),
                                              ('test', 0.15))
  seed: int = 0
  fps: float = 0.0  # A video file's own frame rate is stored; 0 when it gives none.


class UsvCineTable(layout.SegmentationLayout):
  """Video segmentation from video files or DICOM cine loops and masks by frame number."""

  MANUAL_DOWNLOAD_INSTRUCTIONS = __doc__
  WITH_GROUP = True
  ONE_FILE_PER_VIDEO = True
  BUILDER_CONFIGS = [CineTableConfig(name='default')]

  def _read_layout(self, root: str, problems: checks.Problems
                   ) -> dict[str, list[checks.Video]]:
    cfg = self.builder_config
    if cfg.window is not None:
      raise common.DatasetError(f'{self.name}: pixel_min/pixel_max do not apply to video '
                                'files and DICOM cine loops (8-bit frames): leave them out.')
    rows = self._read_rows(common.require_file(os.path.join(root, cfg.table), 'video table'),
                           problems)
    assignment = video_table.assign_splits([row for row, _ in rows], cfg, problems)
    masks_root = common.require_dir(os.path.join(root, cfg.masks_dir), 'masks folder')
    out: dict[str, list[checks.Video]] = {}
    for row, path in rows:
      video = self._video(root, row, path, os.path.join(masks_root, row.key), problems)
      if video is not None and row.key in assignment:
        out.setdefault(assignment[row.key], []).append(video)
    listed = {row.key for row, _ in rows}
    for name in sorted(os.listdir(masks_root), key=common.natural_key):
      if name not in listed and os.path.isdir(os.path.join(masks_root, name)):
        problems.add('orphan mask', f'masks folder {common.shown(os.path.join(masks_root, name))}'
                     f' is of no video in {cfg.table}: add its row or remove the folder.')
    return out

  def _read_rows(self, path: str, problems: checks.Problems
                 ) -> list[tuple[video_table.TableRow, str]]:
    """(row, video file path) of every row; blank cells, bad or repeated video ids and
    files listed twice are problems."""
    cfg = self.builder_config
    columns, table = common.read_table(path)
    missing = {cfg.path_column, cfg.video_column} - set(columns)
    if missing:
      raise common.DatasetError(f'{common.shown(path)} lacks the column(s) {sorted(missing)}; '
                                f'it needs "path,video[,split][,group]" (it has {columns}).')
    needed = [cfg.path_column, cfg.video_column] + [
        c for c in (cfg.group_column,) if c in columns]
    rows, first = [], {}
    for line, cells in table:
      where = f'{cfg.table} line {line}'
      if checks.has_blank_cells(problems, where, cells, needed):
        continue
      video, file = cells[cfg.video_column], cells[cfg.path_column]
      if not _VIDEO_ID.fullmatch(video):
        problems.add('bad video id', f'{where}: video id {common.shown(video)} may hold only '
                     'letters, digits, "-", "_" and ".": rename it (and its masks folder).')
        continue
      for key, kind in ((video, 'video id'), (os.path.normpath(file), 'file')):
        if key in first:
          problems.add('duplicate video', f'{kind} {common.shown(key)} is in two rows '
                       f'({first[key]}; {where}): list each video once.')
      if video in first or os.path.normpath(file) in first:
        continue
      first[video] = first[os.path.normpath(file)] = where
      rows.append((video_table.TableRow(video, '', cells.get(cfg.split_column, ''),
                                        cells.get(cfg.group_column) or video, where), file))
    return rows

  def _video(self, root: str, row: video_table.TableRow, path: str, mask_dir: str,
             problems: checks.Problems) -> checks.Video | None:
    """The video of ``row`` with its masks by frame number, or None after recording why
    it cannot be read."""
    source = os.path.join(root, path)
    decoded = problems.check('unreadable file', video_table.iter_video, source)
    length = decoded and problems.check('unreadable file', lambda: sum(1 for _ in decoded[0]))
    if not length:
      return None
    if not os.path.isdir(mask_dir):
      problems.add('missing file', f'video {common.shown(row.key)} ({row.where}) has no masks '
                   f'folder {common.shown(mask_dir)}: add it (masks named by frame number).')
      return None
    masks = self._masks(mask_dir, length, source, problems)
    untraced = [n for n in range(length) if n not in masks]
    if untraced and not self.builder_config.sparse_masks:
      listed = ', '.join(map(str, untraced[:_LISTED_FRAMES])) + (
          ', ...' if len(untraced) > _LISTED_FRAMES else '')
      problems.add('missing mask', f'video {common.shown(row.key)} ({row.where}) has masks on '
                   f'{length - len(untraced)} of its {length} frames; frames {listed} have no '
                   f'mask in {common.shown(mask_dir)}: add them, or '
                   f'{checks.sparse_hint(problems)}.')
    spacing = (dicom.iter_frames(source)[1].pixel_spacing_mm if dicom.is_dicom(source)
               else None)
    return checks.Video(
        row.key, [f'{source}#{n}' for n in range(length)],
        [masks.get(n) for n in range(length)], row.group, spacing, source=source,
        frame_names=[f'{row.key}#{n}' for n in range(length)], fps=decoded[1])

  def _masks(self, mask_dir: str, length: int, source: str, problems: checks.Problems
             ) -> dict[int, str]:
    """{frame number: mask path} of a video of ``length`` frames; names that are not
    numbers, numbers past the video and two files of one number are problems."""
    out: dict[int, str] = {}
    for stem, path in checks.images_by_stem(mask_dir, problems).items():
      if not stem.isdigit():
        problems.add('bad mask name', f'mask {common.shown(path)} is not named by a frame '
                     'number (0 is the first frame): rename it, e.g. 12.png.')
      elif int(stem) >= length:
        problems.add('orphan mask', f'mask {common.shown(path)} is frame {int(stem)} but '
                     f'{common.shown(source)} has {length} frames (0 to {length - 1}; masks '
                     'are numbered from 0): fix its number or remove it.')
      elif int(stem) in out:
        problems.add('two files for one frame', f'{common.shown(out[int(stem)])} and '
                     f'{common.shown(path)} are both frame {int(stem)}: remove one.')
      else:
        out[int(stem)] = path
    return out

  def _read_frames(self, video: checks.Video) -> Iterator[np.ndarray]:
    return video_table.iter_video(video.source)[0]
