r"""Inference speed of a whole model from its config: frames/s after compilation.

  python -m experiments.benchmark --config=configs/flanet.py:paper \
      [--batch_sizes=1,8] [--warmup=2] [--repeats=5]

Random weights and inputs of the config's shapes (image_size, channels, clip_length for
segmentation, max_frames for classification), eval mode, one jitted forward per batch
size; compile time is reported separately. A segmentation example yields one frame (its
target), a classification example max_frames frames.
"""
import time

import flax
import jax
import jax.numpy as jnp
from absl import app
from absl import flags
from ml_collections import config_flags

from experiments import common
from usvjax import models

CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file and variant.',
                                         lock_config=True)
BATCH_SIZES = flags.DEFINE_list('batch_sizes', ['1', '8'], 'Batch sizes to time.')
WARMUP = flags.DEFINE_integer('warmup', 2, 'Untimed runs.')
REPEATS = flags.DEFINE_integer('repeats', 5, 'Timed runs.')
flags.mark_flags_as_required(['config'])


def example_batch(config, batch_size: int) -> tuple[dict, int]:
  """A batch of the config's input shapes and the number of frames it predicts."""
  cfg = config.input
  length = cfg.clip_length if cfg.task == 'segmentation' else cfg.max_frames
  frames = jnp.zeros((batch_size, length, cfg.image_size, cfg.image_size, cfg.channels))
  batch = {'frames': frames, 'valid': jnp.ones((batch_size, length), bool)}
  return batch, batch_size * (1 if cfg.task == 'segmentation' else length)


def main(argv):
  del argv
  config = CONFIG.value
  model = models.create_model(config.model)
  forward = jax.jit(lambda v, b: model.apply(v, b, train=False))
  print(f'{config.model.name}, {config.input.image_size}x{config.input.image_size} on '
        f'{jax.devices()[0].device_kind} ({jax.device_count()} devices; jax {jax.__version__}, '
        f'flax {flax.__version__}):')
  for batch_size in map(int, BATCH_SIZES.value):
    batch, frames = example_batch(config, batch_size)
    variables = jax.jit(lambda b: model.init(jax.random.key(0), b, train=False))(batch)
    start = time.perf_counter()
    compiled = forward.lower(variables, batch).compile()
    compile_s = time.perf_counter() - start
    seconds = common.median_seconds(
        lambda: jax.block_until_ready(compiled(variables, batch)),  # pylint: disable=cell-var-from-loop
        WARMUP.value, REPEATS.value)
    print(f'  batch {batch_size}: {seconds * 1e3:.0f} ms per batch, {frames / seconds:.2f} '
          f'frames/s (compile {compile_s:.1f} s)')


if __name__ == '__main__':
  app.run(main, flags_parser=common.parse_flags)
