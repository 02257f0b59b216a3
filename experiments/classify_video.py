r"""Classifies one video with a trained video classifier and shows which frames mattered.

  python -m experiments.classify_video --workdir=runs/clman --video=PATH \
      [--checkpoint=best] [--output_dir=DIR]

``--video`` is a folder of frames (natural order), a video file (anything OpenCV decodes)
or a DICOM cine loop (``.dcm``, with the optional ``requirements-dicom.txt``). The run's
own config (``<workdir>/config.py``) is used unless ``--config`` is given. Frames are
sampled and preprocessed as in evaluation (usvjax/tools/classify.py). Prints the class
probabilities and the label, and writes ``result.json``, ``frames.csv`` (per-frame
probability or attention weight where the model has one) and ``frames.png`` into
``--output_dir`` (default WORKDIR/classify_<video name>).
"""
import os

from absl import app
from absl import flags
from ml_collections import config_flags

from experiments import common
from usvjax.tools import classify

CONFIG = config_flags.DEFINE_config_file(
    'config', None, "Config of the run (default: the run's own, <workdir>/config.py).",
    lock_config=True)
WORKDIR = flags.DEFINE_string('workdir', None, 'The run directory (holds checkpoints/).')
CHECKPOINT = flags.DEFINE_string('checkpoint', 'best', "'best', 'latest' or a step.")
VIDEO = flags.DEFINE_string('video', None, 'A folder of frames, a video file or a DICOM file.')
OUTPUT_DIR = flags.DEFINE_string('output_dir', '', 'Default: WORKDIR/classify_<video name>.')
flags.mark_flags_as_required(['workdir', 'video'])


def main(argv):
  del argv
  common.start_processes()
  name = os.path.splitext(os.path.basename(os.path.normpath(VIDEO.value)))[0]
  output_dir = OUTPUT_DIR.value or os.path.join(WORKDIR.value, f'classify_{name}')
  try:
    config = common.run_config(CONFIG.value, WORKDIR.value)
    result = classify.classify_video(classify.resolve(config), WORKDIR.value, CHECKPOINT.value,
                                   VIDEO.value,
                                     output_dir)
  except common.USER_ERRORS as e:
    common.fail(e)
  probabilities = ', '.join(f'{k} {v:.3f}' for k, v in result.probabilities.items())
  print(f'{VIDEO.value}: {result.label} ({probabilities}); checkpoint step {result.step}, '
        f'{len(result.frames)} frames; wrote {output_dir}')


if __name__ == '__main__':
  app.run(main, flags_parser=common.parse_flags)
