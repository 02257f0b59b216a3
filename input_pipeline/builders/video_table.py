"""TFDS builder ``usv_video_table``: video classification from videos plus a label CSV.

The POCUS layout. Put the dataset in ``manual_dir``::

  metadata.csv          one row per video: ``path`` (relative to manual_dir), a label
                        column and, optionally, a ``split`` column
  videos/...            video files (mp4, avi, mpeg, mov, gif, ...) or frame folders

Videos are decoded with OpenCV; a folder path is read as its image files in natural order.
Without a split column, videos are split by a seeded split stratified by label.
Raw labels are mapped to classes by ``label_map`` (rows whose label is not in the map are
skipped, and the count is logged). Long or large videos can be thinned for storage with
``max_stored_frames`` (uniform subsampling) and ``max_stored_side`` (downscaling).

Configs: ``pocus_binary`` (regular vs. pathological: bacterial pneumonia, COVID-19 and
viral pneumonia), ``pocus_3class`` (regular, bacterial pneumonia, COVID-19; the 6 viral
pneumonia clips are left out), ``default`` (columns ``path,label[,split]``, classes benign
and malignant).
"""
from __future__ import annotations

import csv
from collections.abc import Iterator
import dataclasses
import os

import cv2
import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from input_pipeline.builders import common
from input_pipeline.builders import splits as splits_lib

_INSTRUCTIONS = __doc__


@dataclasses.dataclass
class VideoTableConfig(tfds.core.BuilderConfig):
  """Where the table is, how its labels map to classes, and how to split and store."""
  table: str = 'labels.csv'
  path_column: str = 'path'
  label_column: str = 'label'
  split_column: str = 'split'
  class_names: tuple[str, ...] = ('benign', 'malignant')
  label_map: tuple[tuple[str, str], ...] = (('benign', 'benign'), ('malignant', 'malignant'),
                                            ('0', 'benign'), ('1', 'malignant'))
  fractions: tuple[tuple[str, float], ...] = (('train', 0.7), ('validation', 0.15),
                                              ('test', 0.15))
  seed: int = 0
  max_stored_frames: int | None = None
  max_stored_side: int | None = None


_POCUS = dict(table='metadata.csv', label_column='Label', max_stored_frames=64,
              max_stored_side=256)


class UsvVideoTable(tfds.core.GeneratorBasedBuilder):
  """Video classification from video files or frame folders and a CSV of labels."""

  VERSION = tfds.core.Version('1.0.0')
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
                                  ('COVID-19', 'covid19')), **_POCUS),
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=common.classification_features(3, self.builder_config.class_names),
        description=__doc__)

  def _split_generators(self, dl_manager):
    cfg = self.builder_config
    root = common.require_dir(str(dl_manager.manual_dir), 'video-table dataset folder',
                              _INSTRUCTIONS)
    rows = self._read_rows(common.require_file(os.path.join(root, cfg.table), 'label table'))
    if all(split for _, _, split in rows):
      assignment = {path: split for path, _, split in rows}
    else:
      assignment = splits_lib.split_videos([p for p, _, _ in rows], cfg.fractions, cfg.seed,
                                           labels=[label for _, label, _ in rows])
    return {name: self._generate_examples(
        root, [(p, label) for p, label, _ in rows if assignment[p] == name])
            for name in sorted(set(assignment.values()))}

  def _read_rows(self, path: str) -> list[tuple[str, str, str]]:
    """(video path, class name, split or '') for every row with a mapped label."""
    cfg = self.builder_config
    label_map = dict(cfg.label_map)
    with open(path, newline='') as f:
      reader = csv.DictReader(f)
      missing = {cfg.path_column, cfg.label_column} - set(reader.fieldnames or ())
      if missing:
        raise common.DatasetError(f'{path!r} lacks the column(s) {sorted(missing)}.')
      rows, skipped = [], 0
      for row in reader:
        label = label_map.get(row[cfg.label_column].strip())
        if label is None:
          skipped += 1
          continue
        rows.append((row[cfg.path_column].strip(), label,
                     (row.get(cfg.split_column) or '').strip()))
    if skipped:
      logging.info('%s: skipped %d rows whose label is not in the label map.', path, skipped)
    if not rows:
      raise common.DatasetError(f'{path!r} has no row with a label in {sorted(label_map)}.')
    return rows

  def _generate_examples(self, root: str, rows: list[tuple[str, str]]):
    cfg = self.builder_config
    for relative_path, label in rows:
      path = os.path.join(root, relative_path)
      frames, fps = read_video(path)
      if cfg.max_stored_frames and len(frames) > cfg.max_stored_frames:
        keep = np.linspace(0, len(frames) - 1, cfg.max_stored_frames).round().astype(int)
        frames = frames[keep]
      if cfg.max_stored_side and max(frames.shape[1:3]) > cfg.max_stored_side:
        frames = np.stack([_shrink(f, cfg.max_stored_side) for f in frames])
      yield relative_path, {'frames': frames, 'label': label, 'video_id': relative_path,
                            'fps': fps}


def read_video(path: str) -> tuple[np.ndarray, float]:
  """Decodes a video file or a folder of frames to uint8 RGB [T, H, W, 3] and its fps.

  Raises a DatasetError naming the file if it is missing, unreadable or has no frames.
  """
  frames, fps = iter_video(path)
  frames = list(frames)
  if len({f.shape for f in frames}) != 1:
    raise common.DatasetError(f'video {path!r} has frames of different sizes.')
  return np.stack(frames), fps


def iter_video(path: str) -> tuple[Iterator[np.ndarray], float]:
  """The frames (uint8 RGB [H, W, 3], decoded one at a time) of a video file or a folder of
  frames, and its fps (0 for a folder). A missing path, an unreadable frame or a video
  without frames is a DatasetError naming the file."""
  if os.path.isdir(path):
    names = common.list_images(path)
    frames = (common.read_rgb(os.path.join(path, n)) for n in names)
    fps = 0.0
  else:
    common.require_file(path, 'video')
    capture = cv2.VideoCapture(path)
    fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
    frames = _decode(capture)

  def checked():
    count = 0
    for frame in frames:
      count += 1
      yield frame
    if not count:
      raise common.DatasetError(f'video {path!r} has no readable frames: the file is empty, '
                                'corrupt or in a format OpenCV cannot decode.')
  return checked(), fps


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
