r"""Exports a trained run's inference functions for use outside usvjax.

  python -m experiments.export --workdir=runs/unet --output=exports/unet \
      [--checkpoint=best] [--platforms=cpu,cuda] [--nosaved_model]

Writes into ``--output``: ``predict.jaxexport`` (and ``start``/``step.jaxexport`` for a
streaming segmenter), serialized ``jax.export`` programs (StableHLO) with the weights
inside; ``saved_model/``, the same functions as a TF SavedModel (``jax2tf``, native
serialization) for TF Serving and the TFLite/ONNX converters; ``export.json``:
preprocessing, threshold, class names, input and output shapes (``b``: any batch size),
the streaming state's layout and the run's provenance. ``usvjax.export.load(DIR)`` runs
the programs with only jax and numpy installed (see docs/segmentation.md, "Export and
batch prediction").
"""
from absl import app
from absl import flags
from ml_collections import config_flags

from experiments import common
from usvjax.export import functions
from usvjax.export import writer

CONFIG = config_flags.DEFINE_config_file(
    'config', None, "Config of the run (default: the run's own, <workdir>/config.py).",
    lock_config=True)
WORKDIR = flags.DEFINE_string('workdir', None, 'The run directory (holds checkpoints/).')
CHECKPOINT = flags.DEFINE_string('checkpoint', 'best', "'best', 'latest' or a step.")
OUTPUT = flags.DEFINE_string('output', None, 'The directory to write the export into.')
PLATFORMS = flags.DEFINE_list('platforms', ['cpu', 'cuda'],
                              'Platforms the programs are lowered for (cpu, cuda, rocm, tpu).')
SAVED_MODEL = flags.DEFINE_bool('saved_model', True, 'Also write the TF SavedModel.')
flags.mark_flags_as_required(['workdir', 'output'])


def main(argv):
  del argv
  common.start_processes()
  try:
    config = common.run_config(CONFIG.value, WORKDIR.value)
    prepared = functions.prepare(functions.resolve(config), WORKDIR.value, CHECKPOINT.value)
    metadata = writer.export_run(prepared, OUTPUT.value, PLATFORMS.value, SAVED_MODEL.value)
  except common.USER_ERRORS as e:
    common.fail(e)
  shapes = {name: f['inputs'][0]['shape'] for name, f in metadata['functions'].items()}
  print(f'{metadata["model"]} (checkpoint step {metadata["provenance"]["step"]}): exported '
        f'{shapes} for {",".join(metadata["platforms"])} into {OUTPUT.value}')


if __name__ == '__main__':
  app.run(main, flags_parser=common.parse_flags)
