"""TFDS builder ``usv_davis``: video segmentation in the DAVIS-2017 layout.

This is the layout UVBLS200 (STPFNet) ships in. Put the dataset in ``manual_dir``::

  JPEGImages/<resolution>/<video>/00000.jpg ...
  Annotations/<resolution>/<video>/00000.png ...   (one mask per frame)
  ImageSets/<year>/train.txt, val.txt, test.txt   (one video name per line)

Each ``ImageSets/*/<split>.txt`` becomes a split. Annotation PNGs may be palette images
with object ids; every non-zero id is lesion.
"""
from __future__ import annotations

import dataclasses
import glob
import os

import tensorflow_datasets as tfds

from input_pipeline.builders import common

_INSTRUCTIONS = __doc__


@dataclasses.dataclass
class DavisConfig(tfds.core.BuilderConfig):
  resolution: str = '480p'
  fps: float = 25.0


class UsvDavis(tfds.core.GeneratorBasedBuilder):
  """Ultrasound video segmentation stored in the DAVIS-2017 layout."""

  VERSION = tfds.core.Version('1.0.0')
  MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS
  BUILDER_CONFIGS = [DavisConfig(name='480p'),
                     DavisConfig(name='full', resolution='Full-Resolution')]

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(features=common.segmentation_features(3),
                                          description=__doc__)

  def _split_generators(self, dl_manager):
    root = common.require_dir(str(dl_manager.manual_dir), 'DAVIS dataset folder',
                              _INSTRUCTIONS)
    lists = sorted(glob.glob(os.path.join(root, 'ImageSets', '*', '*.txt')))
    if not lists:
      raise common.DatasetError(f'no split lists ImageSets/<year>/<split>.txt under {root!r}.')
    splits = {}
    for path in lists:
      with open(path) as f:
        videos = [line.strip() for line in f if line.strip()]
      splits[os.path.splitext(os.path.basename(path))[0]] = self._generate_examples(root, videos)
    return splits

  def _generate_examples(self, root: str, videos: list[str]):
    res = self.builder_config.resolution
    for video in videos:
      frames, masks = common.frames_with_masks(os.path.join(root, 'JPEGImages', res, video),
                                               os.path.join(root, 'Annotations', res, video), video)
      yield video, common.segmentation_example(frames, masks, video, self.builder_config.fps)
