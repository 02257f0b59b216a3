r"""Segments one video, frame by frame, with a trained segmentation checkpoint.

  python -m experiments.segment_video --workdir=runs/stpf \
      --video=PATH [--first_mask=MASK.png [--first_frame=K]] [--output_dir=DIR] \
      [--checkpoint=best]

``--video`` is a video file (anything OpenCV decodes: .mp4, .avi, ...) or a folder of
frames (natural order: frame2 before frame10). Frames are read and segmented one at a time
(``usvjax.core.streaming``): STPFNet carries its bounded memory from frame to frame and needs
the first frame's mask (``--first_mask``, a PNG the size of the frames, lesion > 0); clip
models (U-Net, FLA-Net, DSANet) keep the last clip_length frames. ``--first_frame=K`` starts
at frame K (0-based; the traced frame of a sparsely annotated video, whose mask is
``--first_mask``): the frames before it are not segmented.

Writes to ``--output_dir`` (default WORKDIR/segment_<video name>): ``masks/<frame>.png``
(0/255 at the video's resolution), ``overlay.mp4`` (predicted contour in red), and
``latency.csv`` (seconds per frame; the first frames include compilation). Prints the
frames per second after the first two frames.
"""
from __future__ import annotations

import os

from absl import app
from absl import flags
from ml_collections import config_flags

from experiments import common
from usvjax.tools import segment

CONFIG = config_flags.DEFINE_config_file(
    'config', None, "Config of the run (default: the run's own, <workdir>/config.py).",
    lock_config=True)
WORKDIR = flags.DEFINE_string('workdir', None, 'The run directory (holds checkpoints/).')
CHECKPOINT = flags.DEFINE_string('checkpoint', 'best', "'best', 'latest' or a step.")
VIDEO = flags.DEFINE_string('video', None, 'A video file or a folder of frames.')
FIRST_MASK = flags.DEFINE_string('first_mask', '', "The first frame's mask (PNG); needed "
                                 'by STPFNet.')
FIRST_FRAME = flags.DEFINE_integer('first_frame', 0, 'The frame (0-based) segmenting starts '
                                   'at, the one --first_mask traces; earlier frames are '
                                   'skipped.')
OUTPUT_DIR = flags.DEFINE_string('output_dir', '', 'Default: WORKDIR/segment_<video name>.')
flags.mark_flags_as_required(['workdir', 'video'])


def main(argv):
  del argv
  common.start_processes()
  name = os.path.splitext(os.path.basename(os.path.normpath(VIDEO.value)))[0]
  output_dir = OUTPUT_DIR.value or os.path.join(WORKDIR.value, f'segment_{name}')
  try:
    config = common.run_config(CONFIG.value, WORKDIR.value)
    result = segment.segment_video(segment.resolve(config), WORKDIR.value, CHECKPOINT.value,
                                   VIDEO.value, FIRST_MASK.value, output_dir,
                                   FIRST_FRAME.value)
  except common.USER_ERRORS as e:
    common.fail(e)
  print(f'checkpoint step {result.step}: {result.num_frames} frames segmented, '
        f'{result.frames_per_second:.2f} frames/s after the first two; wrote {output_dir}')


if __name__ == '__main__':
  app.run(main, flags_parser=common.parse_flags)
