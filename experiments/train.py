r"""Trains a model from a config, resuming if the workdir holds checkpoints.

  python -m experiments.train --config=configs/unet.py:demo --workdir=runs/unet \
      [--config.optimizer.lr=3e-4 ...]

The config's runner (``config.runner``, see usvjax/runners/__init__.py) decides what is trained: one
model; a two-stage config (configs/cnn_lstm.py) trains its frame CNN, caches its features
and trains the LSTMs on them; CLMAN (configs/clman.py) pretrains contrastively, then trains
the classifier; each stage in the workdir or a sub-directory of it.

Profiling: --profile_steps=N traces N steps into <workdir>/tensorboard (docs/performance.md).

Multi-host: start one process per host with --coordinator_address=HOST:PORT
--num_processes=N --process_id=I (or set USVJAX_DISTRIBUTED=auto, or run under SLURM).
"""
from absl import app
from absl import flags
from ml_collections import config_flags

from experiments import common
from usvjax import runners

CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file and variant.',
                                         lock_config=True)
WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints and logs.')
PROFILE_STEPS = flags.DEFINE_integer(
    'profile_steps', 0, 'Trace this many training steps (from the second) with jax.profiler '
    'into <workdir>/tensorboard (TensorBoard\'s profile plugin, or Perfetto); sets '
    'config.profile_steps.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  del argv
  common.start_processes(creates_workdir=True)
  config = CONFIG.value
  if PROFILE_STEPS.value:
    config.profile_steps = PROFILE_STEPS.value
  try:
    metrics = runners.train(config, WORKDIR.value)
  except common.USER_ERRORS as e:
    common.fail(e)
  print(f'validation: {metrics}')


if __name__ == '__main__':
  app.run(main, flags_parser=common.parse_flags)
