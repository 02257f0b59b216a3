r"""Predicts every image, folder of frames, video file and DICOM file of a folder.

  python -m experiments.predict --workdir=runs/unet --input=cases/ [--output=DIR] \
      [--checkpoint=best]
  python -m experiments.predict --model=exports/unet --input=cases/ --output=DIR

With ``--workdir`` the run's checkpoint is restored (its own config unless ``--config``);
with ``--model`` an export of ``experiments.export`` runs instead (no checkpoint or config
needed). Segmentation writes masks (0/255 PNGs at the source's resolution) and overlays
named after their sources, and ``predictions.csv`` (frames, frames with a lesion);
classification writes ``predictions.csv`` with ``prob_<class>`` per source and the
predicted class. Default ``--output``: WORKDIR/predict_<input name> (MODEL/predict_<input
name> with ``--model``). See usvjax/export/predict.py.
"""
import os

from absl import app
from absl import flags
from ml_collections import config_flags

from experiments import common
from usvjax import export
from usvjax.export import functions
from usvjax.export import predict
from usvjax.errors import ConfigError

CONFIG = config_flags.DEFINE_config_file(
    'config', None, "Config of the run (default: the run's own, <workdir>/config.py).",
    lock_config=True)
WORKDIR = flags.DEFINE_string('workdir', '', 'The run directory (holds checkpoints/).')
CHECKPOINT = flags.DEFINE_string('checkpoint', 'best', "'best', 'latest' or a step.")
MODEL = flags.DEFINE_string('model', '', 'An export directory (experiments.export) to run '
                            'instead of the run.')
INPUT = flags.DEFINE_string('input', None, 'A folder of images, frame folders, videos, DICOMs.')
OUTPUT = flags.DEFINE_string('output', '', 'Default: WORKDIR (or MODEL)/predict_<input name>.')
flags.mark_flags_as_required(['input'])


def main(argv):
  del argv
  if bool(WORKDIR.value) == bool(MODEL.value):
    common.fail(ConfigError('pass one of --workdir=RUN and --model=EXPORT_DIR.'))
  common.start_processes()
  name = os.path.basename(os.path.normpath(INPUT.value))
  output = OUTPUT.value or os.path.join(WORKDIR.value or MODEL.value, f'predict_{name}')
  try:
    if MODEL.value:
      model = export.load(MODEL.value)
    else:
      config = common.run_config(CONFIG.value, WORKDIR.value)
      model = functions.in_process(functions.prepare(functions.resolve(config), WORKDIR.value,
                                                     CHECKPOINT.value))
    path = predict.predict_folder(model, INPUT.value, output)
  except common.USER_ERRORS as e:
    common.fail(e)
  print(f'{model.metadata["model"]}: predicted {INPUT.value}; wrote {path} and the files '
        f'beside it')


if __name__ == '__main__':
  app.run(main, flags_parser=common.parse_flags)
