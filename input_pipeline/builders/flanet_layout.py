"""TFDS builder ``usv_flanet``: video segmentation in FLA-Net's released layout.

Put the dataset in ``manual_dir``::

  img_list/<video>/<frame>.png|jpg     frames
  mask_list/<video>/<frame>.png        one mask per frame, same name stem
  train_list.csv, test_list.csv        video names in the first column (a header row is
                                       recognised and skipped)
  bbox.json                            optional; not read: boxes are recomputed from the
                                       masks, so they always agree with them

Each ``<split>_list.csv`` becomes a split.
"""
from __future__ import annotations

import csv
import glob
import os

import tensorflow_datasets as tfds

from input_pipeline.builders import common

_INSTRUCTIONS = __doc__


class UsvFlanet(tfds.core.GeneratorBasedBuilder):
  """Ultrasound video segmentation stored in FLA-Net's layout."""

  VERSION = tfds.core.Version('1.0.0')
  MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(features=common.segmentation_features(3),
                                          description=__doc__)

  def _split_generators(self, dl_manager):
    root = common.require_dir(str(dl_manager.manual_dir), 'FLA-Net dataset folder',
                              _INSTRUCTIONS)
    frames_root = common.require_dir(os.path.join(root, 'img_list'), 'frames folder img_list')
    lists = sorted(glob.glob(os.path.join(root, '*_list.csv')))
    if not lists:
      raise common.DatasetError(f'no split lists (train_list.csv, test_list.csv) in {root!r}.')
    return {os.path.basename(p)[:-len('_list.csv')]:
                self._generate_examples(root, _read_video_list(p, frames_root))
            for p in lists}

  def _generate_examples(self, root: str, videos: list[str]):
    for video in videos:
      frames, masks = common.frames_with_masks(os.path.join(root, 'img_list', video),
                                               os.path.join(root, 'mask_list', video), video)
      yield video, common.segmentation_example(frames, masks, video, fps=0.0)


def _read_video_list(path: str, frames_root: str) -> list[str]:
  with open(path, newline='') as f:
    names = [row[0].strip() for row in csv.reader(f) if row and row[0].strip()]
  if names and not os.path.isdir(os.path.join(frames_root, names[0])):
    names = names[1:]  # Header row.
  return names
