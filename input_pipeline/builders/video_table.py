"""TFDS builder ``usv_video_table``: video classification from videos plus a label CSV.

The POCUS layout. Put the dataset in ``manual_dir``::

  labels.csv            one row per video: ``path`` (relative to manual_dir), ``label`` and,
                        optionally, ``split`` and ``group`` (the patient)
                        (configs pocus_binary and pocus_3class: ``metadata.csv`` with a
                        ``Label`` column, as POCUS ships)
  videos/...            video files (mp4, avi, mpeg, mov, gif, ...), DICOM cine loops
                        (.dcm) or frame folders

Videos are decoded with OpenCV, DICOM files with pydicom (the optional DICOM extra;
``dicom.py``); a folder path is read as its image files in natural order.
Raw labels are mapped to classes by ``label_map``; labels listed in ``skip_labels`` are left
out (counted in the log); any other label is an error that suggests the closest known one.
Split cells must all be filled (with the names of ``fractions``) or all be blank; without
them, videos are split by a seeded split stratified by label that keeps each group's
videos together (``splits.split_videos``). Examples carry ``group``: the group cell, or the
video path without a group column. Long or large videos can be thinned for storage with
``max_stored_frames`` (uniform subsampling) and ``max_stored_side`` (downscaling). Every
video is decoded once to check it before anything is converted (docs/data.md).

Configs: ``pocus_binary`` (regular vs. pathological: bacterial pneumonia, COVID-19 and
viral pneumonia), ``pocus_3class`` (regular, bacterial pneumonia, COVID-19; the 6 viral
pneumonia clips are left out), ``default`` (``labels.csv`` with columns
``path,label[,split][,group]``, labels benign/malignant or 0/1).
"""
from __future__ import annotations

import collections
import dataclasses
import os
import tempfile
from collections.abc import Iterator, Sequence
from typing import Any

import cv2
import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from input_pipeline import tf_setup  # pylint: disable=unused-import  (configures TensorFlow)
from input_pipeline.builders import checks
from input_pipeline.builders import common
from input_pipeline.builders import dicom
from input_pipeline.builders import splits as splits_lib

_INSTRUCTIONS = __doc__
# A video file that decodes to fewer than this share of the frames its header declares is
# truncated or damaged (containers that declare no count are not checked).
MIN_DECODED_SHARE = 0.9


@dataclasses.dataclass
class VideoTableConfig(tfds.core.BuilderConfig):
  """Where the table is, how its labels map to classes, and how to split and store."""
  table: str = 'labels.csv'
  path_column: str = 'path'
  label_column: str = 'label'
  split_column: str = 'split'
  group_column: str = 'group'
  class_names: tuple[str, ...] = ('benign', 'malignant')
  label_map: tuple[tuple[str, str], ...] = (('benign', 'benign'), ('malignant', 'malignant'),
                                            ('0', 'benign'), ('1', 'malignant'))
  skip_labels: tuple[str, ...] = ()
  fractions: tuple[tuple[str, float], ...] = (('train', 0.7), ('validation', 0.15),
                                              ('test', 0.15))
  seed: int = 0
  max_stored_frames: int | None = None
  max_stored_side: int | None = None


_POCUS = dict(table='metadata.csv', label_column='Label', max_stored_frames=64,
              max_stored_side=256)


@dataclasses.dataclass
class TableRow:
  """A table row: its video's key (the video table: its path), label ('' if none), split
  and group cells, and where it is (``<table> line <n>``)."""
  key: str
  label: str
  split: str
  group: str
  where: str


class UsvVideoTable(tfds.core.GeneratorBasedBuilder):
  """Video classification from video files or frame folders and a CSV of labels."""

  VERSION = tfds.core.Version('1.1.0')
  RELEASE_NOTES = {'1.1.0': 'The whole dataset is checked before conversion; labels outside '
                            'the label map are errors; group feature and group-aware splits.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS
  BUILDER_CONFIGS = [
      VideoTableConfig(name='default'),
      VideoTableConfig(name='pocus_binary', class_names=('regular', 'pathological'),
                       label_map=(('regular', 'regular'),
                                  ('Bacterial pneumonia', 'pathological'),
                                  ('COVID-19', 'pathological'),
                                  ('Viral pneumonia', 'pathological')), **_POCUS),
      VideoTableConfig(name='pocus_3class',
                       class_names=('regular', 'bacterial_pneumonia', 'covid19'),
                       label_map=(('regular', 'regular'),
                                  ('Bacterial pneumonia', 'bacterial_pneumonia'),
                                  ('COVID-19', 'covid19')),
                       skip_labels=('Viral pneumonia',), **_POCUS),
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=common.classification_features(3, self.builder_config.class_names),
        description=__doc__)

  def _split_generators(self, dl_manager):
    cfg = self.builder_config
    root = common.require_dir(str(dl_manager.manual_dir), 'video-table dataset folder',
                              _INSTRUCTIONS)
    problems = checks.Problems(f'{self.name}/{cfg.name}', root)
    rows = self._read_rows(common.require_file(os.path.join(root, cfg.table), 'label table'),
                           problems)
    assignment = checks.split_file(root, [r.key for r in rows], problems)
    if assignment is None:
      assignment = assign_splits(rows, cfg, problems)
    elif any(r.split for r in rows):
      problems.add('split file', f'{cfg.table} has a {cfg.split_column!r} column and the '
                   f'folder has {checks.SPLIT_FILE}: keep one of them.')
    else:
      checks.check_groups_in_one_split(problems, assignment, {r.key: r.group for r in rows},
                                       checks.SPLIT_FILE)
    rows = [r for r in rows if r.key in assignment]
    for row in rows:
      problems.check('unreadable file', check_video, os.path.join(root, row.key))
    problems.raise_if_any()
    return {name: self._generate_examples(root, [r for r in rows if assignment[r.key] == name])
            for name in sorted(set(assignment.values()))}

  def _read_rows(self, path: str, problems: checks.Problems) -> list[TableRow]:
    """Every row with a known label; blank cells, unknown labels and videos listed twice
    are problems, labels in ``skip_labels`` are counted in the log."""
    cfg = self.builder_config
    columns, table = common.read_table(path)
    missing = {cfg.path_column, cfg.label_column} - set(columns)
    if missing:
      raise common.DatasetError(f'{common.shown(path)} lacks the column(s) {sorted(missing)} '
                                f'(it has {columns}).')
    needed = [cfg.path_column, cfg.label_column] + [
        c for c in (cfg.group_column,) if c in columns]
    label_map = dict(cfg.label_map)
    rows, skipped, first = [], collections.Counter(), {}
    for line, cells in table:
      where = f'{cfg.table} line {line}'
      if checks.has_blank_cells(problems, where, cells, needed):
        continue
      video, label = cells[cfg.path_column], cells[cfg.label_column]
      if label in cfg.skip_labels:
        skipped[label] += 1
        continue
      if label not in label_map:
        known = list(label_map) + list(cfg.skip_labels)
        problems.add('unknown label', f'{where}: label {common.shown(label)} of '
                     f'{common.shown(video)} is not one of {known}'
                     f'{checks.suggestion(label, known)}: fix the cell.')
        continue
      key = os.path.normpath(video)
      split = cells.get(cfg.split_column, '')
      if key in first:
        other = first[key]
        kind, text = (('video in two splits', f'in splits {other.split!r} and {split!r}: it '
                       'would leak between them')
                      if other.split != split else ('duplicate video', 'twice'))
        problems.add(kind, f'video {common.shown(video)} is listed {text} ({other.where}; '
                     f'{where}): list it once.')
        continue
      first[key] = TableRow(video, label_map[label], split, cells.get(cfg.group_column) or video,
                        where)
      rows.append(first[key])
    if skipped:
      logging.warning('%s: left out %s (config skip_labels).', path, ', '.join(
          f'{n} video(s) labelled {label!r}' for label, n in sorted(skipped.items())))
    if not rows and not problems.items:
      raise common.DatasetError(f'{common.shown(path)} has no video with a label in '
                                f'{sorted(label_map)}.')
    return rows

  def _generate_examples(self, root: str, rows: list[TableRow]):
    cfg = self.builder_config
    for row in rows:
      frames, fps = read_video(os.path.join(root, row.key))
      if cfg.max_stored_frames and len(frames) > cfg.max_stored_frames:
        keep = np.linspace(0, len(frames) - 1, cfg.max_stored_frames).round().astype(int)
        frames = frames[keep]
      if cfg.max_stored_side and max(frames.shape[1:3]) > cfg.max_stored_side:
        frames = np.stack([_shrink(f, cfg.max_stored_side) for f in frames])
      video_id = common.text_id(row.key)
      yield video_id, {'frames': frames, 'label': row.label, 'video_id': video_id,
                       'group': common.text_id(row.group), 'fps': fps}


def assign_splits(rows: Sequence[TableRow], cfg: Any, problems: checks.Problems
                  ) -> dict[str, str]:
  """{row key: split} of a table's ``rows`` (``cfg``: the table's config, with ``fractions``,
  ``seed``, ``split_column``, ``table``): the split cells if any is filled (then all must
  be, with split names of ``fractions``, and a group's videos in one split), else a seeded
  split by group, stratified by label when the rows have labels (``splits.split_videos``)."""
  names = [name for name, _ in cfg.fractions]
  if not any(r.split for r in rows):
    labels = [r.label for r in rows] if any(r.label for r in rows) else None
    return splits_lib.split_videos([r.key for r in rows], cfg.fractions, cfg.seed,
                                   labels=labels, groups=[r.group for r in rows])
  for r in rows:
    if not r.split:
      problems.add('blank cell', f'{r.where}: the {cfg.split_column!r} cell of '
                   f'{common.shown(r.key)} is blank while other rows give a split: fill it '
                   f'(one of {names}), or clear every split cell for a seeded split.')
    elif r.split not in names:
      problems.add('unknown split', f'{r.where}: split {common.shown(r.split)} of '
                   f'{common.shown(r.key)} is not one of {names}'
                   f'{checks.suggestion(r.split, names)}: fix the cell.')
  assignment = {r.key: r.split for r in rows}
  checks.check_groups_in_one_split(problems, assignment, {r.key: r.group for r in rows},
                                   f'the {cfg.split_column!r} column of {cfg.table}')
  return assignment


def read_video(path: str) -> tuple[np.ndarray, float]:
  """Decodes a video file or a folder of frames to uint8 RGB [T, H, W, 3] and its fps.

  Raises a DatasetError naming the file if it is missing, unreadable, truncated, has no
  frames or frames of different sizes (``iter_video``).
  """
  frames, fps = iter_video(path)
  return np.stack(list(frames)), fps


def check_video(path: str) -> None:
  """Decodes every frame of a video (one at a time) to check it (``iter_video``)."""
  frames, _ = iter_video(path)
  collections.deque(frames, maxlen=0)


def iter_video(path: str) -> tuple[Iterator[np.ndarray], float]:
  """The frames (uint8 RGB [H, W, 3], decoded one at a time) of a video file, a DICOM file
  (``dicom.is_dicom``) or a folder of frames, and its fps (0 for a folder).

  A missing path, an unreadable or truncated frame, a video without frames, frames of
  different sizes, or a file that decodes to fewer than MIN_DECODED_SHARE of the frames
  its header declares is a DatasetError naming the file (raised while iterating).
  """
  if os.path.isdir(path):
    frames = (common.read_rgb(os.path.join(path, n)) for n in common.list_images(path))
    fps, declared = 0.0, 0
  elif dicom.is_dicom(path):
    frames, info = dicom.iter_frames(path)
    fps, declared = info.fps, info.num_frames
  else:
    common.require_file(path, 'video')
    capture = _open_capture(path)
    fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
    declared = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    frames = _decode(capture)

  def checked():
    count, shape = 0, None
    for frame in frames:
      if shape is not None and frame.shape != shape:
        raise common.DatasetError(f'video {common.shown(path)} has frames of different sizes '
                                  f'({shape[1]}x{shape[0]}, then {frame.shape[1]}x'
                                  f'{frame.shape[0]} at frame {count}): resize them to one.')
      count, shape = count + 1, frame.shape
      yield frame
    if not count:
      raise common.DatasetError(f'video {common.shown(path)} has no readable frames: the file '
                                'is empty, corrupt or in a format OpenCV cannot decode.')
    if count < MIN_DECODED_SHARE * declared:
      raise common.DatasetError(f'video {common.shown(path)} decodes to {count} of the '
                                f'{declared} frames its header declares: the file is truncated '
                                'or damaged. Replace or re-encode it.')
  return checked(), fps


def _open_capture(path: str) -> cv2.VideoCapture:
  """An OpenCV capture of ``path``. OpenCV crashes on a file name that is not valid UTF-8,
  so such a file is opened through a temporary link with a plain name."""
  try:
    path.encode('utf-8')
  except UnicodeEncodeError:
    with tempfile.TemporaryDirectory() as tmp:
      link = os.path.join(tmp, 'video')
      os.symlink(os.path.abspath(path), link)
      return cv2.VideoCapture(link)  # The file is open now; the link may go.
  return cv2.VideoCapture(path)


def _decode(capture) -> Iterator[np.ndarray]:
  try:
    while True:
      ok, frame = capture.read()
      if not ok:
        return
      yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
  finally:
    capture.release()


def _shrink(frame: np.ndarray, max_side: int) -> np.ndarray:
  h, w = frame.shape[:2]
  scale = max_side / max(h, w)
  return cv2.resize(frame, (max(1, round(w * scale)), max(1, round(h * scale))),
                    interpolation=cv2.INTER_AREA)
