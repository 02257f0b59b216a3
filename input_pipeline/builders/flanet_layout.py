"""TFDS builder ``usv_flanet``: video segmentation in FLA-Net's released layout.

Put the dataset in ``manual_dir``::

  img_list/<video>/<frame>.png|jpg     frames
  mask_list/<video>/<frame>.png        one mask per frame, same name stem
  train_list.csv, test_list.csv        video names in the first column; a first row that
                                       names no folder and reads video, videos, name,
                                       video_name, video_id or id is a header
  bbox.json                            optional; not read: boxes are recomputed from the
                                       masks, so they always agree with them

Each ``<split>_list.csv`` becomes a split; masks follow ``common``'s conventions (option
``mask_threshold``); with ``sparse_masks=True`` only the traced frames need a mask. Video folders that no list names are logged and left out. The whole
dataset is checked before conversion (docs/data.md).
"""
from __future__ import annotations

import glob
import os

from input_pipeline.builders import checks
from input_pipeline.builders import common
from input_pipeline.builders import segmentation_layout as layout

_HEADERS = ('video', 'videos', 'name', 'video_name', 'video_id', 'id')
_SUFFIX = '_list.csv'


class UsvFlanet(layout.SegmentationLayout):
  """Ultrasound video segmentation stored in FLA-Net's layout."""

  MANUAL_DOWNLOAD_INSTRUCTIONS = __doc__
  BUILDER_CONFIGS = [layout.SegmentationConfig(name='default', fps=0.0)]

  def _read_layout(self, root: str, problems: checks.Problems
                   ) -> dict[str, list[checks.Video]]:
    frames_root = common.require_dir(os.path.join(root, 'img_list'), 'frames folder img_list')
    lists = sorted(glob.glob(os.path.join(glob.escape(root), '*' + _SUFFIX)))
    if not lists:
      raise common.DatasetError(f'no split lists (train_list.csv, test_list.csv) in '
                                f'{common.shown(root)}.')
    entries = {}
    for path in lists:
      rows = common.read_rows(path)
      if (rows and rows[0][1][0].lower() in _HEADERS
          and not os.path.isdir(os.path.join(frames_root, rows[0][1][0]))):
        rows = rows[1:]
      entries[os.path.basename(path)[:-len(_SUFFIX)]] = [
          (cells[0], f'{os.path.basename(path)} line {line}') for line, cells in rows]
    return layout.videos_in_folders(
        frames_root, common.require_dir(os.path.join(root, 'mask_list'), 'masks folder mask_list'),
        entries, problems, self.builder_config.sparse_masks)
