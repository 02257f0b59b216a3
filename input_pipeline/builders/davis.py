"""TFDS builder ``usv_davis``: video segmentation in the DAVIS-2017 layout.

This is the layout UVBLS200 (STPFNet) ships in. Put the dataset in ``manual_dir``::

  JPEGImages/<resolution>/<video>/00000.jpg ...
  Annotations/<resolution>/<video>/00000.png ...   (one mask per frame, same name stem)
  ImageSets/<year>/train.txt, val.txt, test.txt   (one video name per line)

Each ``ImageSets/*/<split>.txt`` becomes a split (one list per split name, whatever the
year); DAVIS's ``val.txt`` is the split ``validation`` (``config.dataset.eval_split``'s
default), so ``val.txt`` and ``validation.txt`` are two lists of one split. Annotation PNGs may be palette images with object ids: every non-zero id is
lesion; other masks follow ``common``'s conventions (option ``mask_threshold``); with the
option ``sparse_masks=True`` only the traced frames need a mask (``segmentation_layout``). Video
folders that no list names are logged and left out. The whole dataset is checked before
conversion (docs/data.md).
"""
from __future__ import annotations

import dataclasses
import glob
import os

from input_pipeline.builders import checks
from input_pipeline.builders import common
from input_pipeline.builders import segmentation_layout as layout


_SPLIT_NAMES = {'val': 'validation'}  # DAVIS's list name -> the project's split name.


@dataclasses.dataclass
class DavisConfig(layout.SegmentationConfig):
  resolution: str = '480p'


class UsvDavis(layout.SegmentationLayout):
  """Ultrasound video segmentation stored in the DAVIS-2017 layout."""

  MANUAL_DOWNLOAD_INSTRUCTIONS = __doc__
  BUILDER_CONFIGS = [DavisConfig(name='480p'),
                     DavisConfig(name='full', resolution='Full-Resolution')]

  def _read_layout(self, root: str, problems: checks.Problems
                   ) -> dict[str, list[checks.Video]]:
    res = self.builder_config.resolution
    lists = sorted(glob.glob(os.path.join(glob.escape(root), 'ImageSets', '*', '*.txt')))
    if not lists:
      raise common.DatasetError(f'no split lists ImageSets/<year>/<split>.txt under '
                                f'{common.shown(root)}.')
    entries: dict[str, list[tuple[str, str]]] = {}
    list_of: dict[str, str] = {}
    for path in lists:
      split = os.path.splitext(os.path.basename(path))[0]
      split = _SPLIT_NAMES.get(split, split)
      where = os.path.relpath(path, root)
      if split in list_of:
        problems.add('two lists for one split', f'{common.shown(list_of[split])} and '
                     f'{common.shown(where)} both list split {split!r}: keep one.')
        continue
      list_of[split] = where
      entries[split] = [(cells[0], f'{where} line {line}')
                        for line, cells in common.read_rows(path)]
    return layout.videos_in_folders(
        common.require_dir(os.path.join(root, 'JPEGImages', res), 'frames folder'),
        common.require_dir(os.path.join(root, 'Annotations', res), 'masks folder'),
        entries, problems, self.builder_config.sparse_masks)
