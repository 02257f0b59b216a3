"""TFDS builder ``usv_frames_table``: flat frames plus a frame-to-video table.

This is the CVC-612 (CVC-ClinicDB) layout. Put the dataset in ``manual_dir``::

  Original/<frame>.png        frames, any image format, named by frame number
  Ground Truth/<frame>.png    one mask per frame, same name stem
  sequences.csv               columns ``frame,sequence``: the video of every frame

Frames of a video are ordered by frame number. Splits are by video, never by frame:
config ``cvc612`` uses the split suggested with the data (test = {0, 6, 7, 16, 24},
validation = {2, 3, 4, 11, 15, 17}, train = the rest); config ``default`` draws a seeded
70/15/15 split of the videos.
"""
from __future__ import annotations

import csv
import dataclasses
import os

import tensorflow_datasets as tfds

from input_pipeline.builders import common
from input_pipeline.builders import splits as splits_lib

_INSTRUCTIONS = __doc__


@dataclasses.dataclass
class FramesTableConfig(tfds.core.BuilderConfig):
  """Folder names, the table, and either fixed video lists or split fractions."""
  frames_dir: str = 'Original'
  masks_dir: str = 'Ground Truth'
  table: str = 'sequences.csv'
  fixed_splits: tuple[tuple[str, tuple[str, ...]], ...] = ()  # ((split, videos), ...).
  fractions: tuple[tuple[str, float], ...] = (('train', 0.7), ('validation', 0.15),
                                              ('test', 0.15))
  seed: int = 0
  fps: float = 25.0


class UsvFramesTable(tfds.core.GeneratorBasedBuilder):
  """Video segmentation from flat frame folders and a frame-to-video table."""

  VERSION = tfds.core.Version('1.0.0')
  MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS
  BUILDER_CONFIGS = [
      FramesTableConfig(name='default'),
      FramesTableConfig(name='cvc612', fixed_splits=(
          ('test', ('0', '6', '7', '16', '24')),
          ('validation', ('2', '3', '4', '11', '15', '17')))),
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(features=common.segmentation_features(3),
                                          description=__doc__)

  def _split_generators(self, dl_manager):
    cfg = self.builder_config
    root = common.require_dir(str(dl_manager.manual_dir), 'frames-table dataset folder',
                              _INSTRUCTIONS)
    videos = _read_table(common.require_file(os.path.join(root, cfg.table), 'frame table'))
    if cfg.fixed_splits:
      assignment = {v: s for s, vs in cfg.fixed_splits for v in vs}
      unknown = sorted(set(assignment) - set(videos), key=common.natural_key)
      if unknown:
        raise common.DatasetError(f'split lists name videos {unknown} that are not in '
                                  f'{cfg.table!r}.')
      assignment = {v: assignment.get(v, 'train') for v in videos}
    else:
      assignment = splits_lib.split_videos(list(videos), cfg.fractions, cfg.seed)
    names = sorted(set(assignment.values()))
    return {name: self._generate_examples(
        root, {v: f for v, f in videos.items() if assignment[v] == name}) for name in names}

  def _generate_examples(self, root: str, videos: dict[str, list[str]]):
    cfg = self.builder_config
    frames_dir = common.require_dir(os.path.join(root, cfg.frames_dir), 'frames folder')
    masks_dir = common.require_dir(os.path.join(root, cfg.masks_dir), 'masks folder')
    frame_files = _by_stem(frames_dir)
    mask_files = _by_stem(masks_dir)
    for video, stems in videos.items():
      frames, masks = [], []
      for stem in stems:
        if stem not in frame_files:
          raise common.DatasetError(f'frame {stem!r} of video {video!r} is listed in '
                                    f'{cfg.table!r} but has no file in {frames_dir!r}.')
        if stem not in mask_files:
          raise common.DatasetError(f'frame {os.path.join(frames_dir, frame_files[stem])!r} '
                                    f'has no mask in {masks_dir!r}.')
        frames.append(os.path.join(frames_dir, frame_files[stem]))
        masks.append(os.path.join(masks_dir, mask_files[stem]))
      yield video, common.segmentation_example(frames, masks, video, cfg.fps)


def _read_table(path: str) -> dict[str, list[str]]:
  """{video: [frame stems in frame order]} from a ``frame,sequence`` CSV."""
  videos: dict[str, list[str]] = {}
  with open(path, newline='') as f:
    reader = csv.DictReader(f)
    missing = {'frame', 'sequence'} - set(reader.fieldnames or ())
    if missing:
      raise common.DatasetError(f'{path!r} lacks the column(s) {sorted(missing)}; it needs '
                                '"frame,sequence".')
    for row in reader:
      videos.setdefault(row['sequence'].strip(), []).append(row['frame'].strip())
  if not videos:
    raise common.DatasetError(f'{path!r} lists no frames.')
  return {v: sorted(stems, key=common.natural_key) for v, stems in videos.items()}


def _by_stem(directory: str) -> dict[str, str]:
  return {os.path.splitext(n)[0]: n for n in common.list_images(directory)}
