r"""Speed of any model from its config: inference frames/s and training examples/s.

  python -m experiments.benchmark --config=configs/flanet.py:paper \
      [--batch_sizes=1,8] [--train_batch_size=0] [--warmup=2] [--repeats=5]

Random weights and inputs of the config's batch specification (input_pipeline/spec.py:
image_size, channels, clip_length for clips, max_frames for sequences). Inference: eval mode, one jitted forward per
batch size (batch 1 = streaming); a segmentation example yields one frame (its target), a
classification example max_frames frames. Training: the full jitted train step (forward,
the config's loss, backward, optimizer) at --train_batch_size (default: the config's).
Times are medians of --repeats runs after --warmup runs; compile times are separate.
"""
import time

import flax
import jax
import jax.numpy as jnp
from absl import app
from absl import flags
from ml_collections import config_flags

from experiments import common
from input_pipeline import pipeline
from input_pipeline import spec
from usvjax import models
from usvjax import optim
from usvjax import parallel
from usvjax import state as state_lib
from usvjax import tasks
from usvjax import train

CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file and variant.',
                                         lock_config=True)
BATCH_SIZES = flags.DEFINE_list('batch_sizes', ['1', '8'], 'Inference batch sizes.')
TRAIN_BATCH_SIZE = flags.DEFINE_integer('train_batch_size', 0,
                                        'Training batch size (0: the config\'s; -1: skip).')
WARMUP = flags.DEFINE_integer('warmup', 2, 'Untimed runs.')
REPEATS = flags.DEFINE_integer('repeats', 5, 'Timed runs.')
flags.mark_flags_as_required(['config'])


def example_batch(config, batch_size: int) -> tuple[dict, int]:
  """A training batch of the config's batch specification (every frame valid; sequences
  of ``max_frames``), and the frames it predicts: a clip its target, a sequence all."""
  fields = pipeline.batch_spec(config, train=True)
  length = config.input.max_frames
  batch = jax.tree.map(jnp.asarray, spec.example_batch(fields, batch_size, length))
  per_example = 1 if fields['valid'].shape[0] is not None else length
  return batch, batch_size * per_example


def _timed_compile(fn, *args):
  start = time.perf_counter()
  compiled = fn.lower(*args).compile()
  return compiled, time.perf_counter() - start


def benchmark_inference(config, model, batch_size: int) -> str:
  batch, frames = example_batch(config, batch_size)
  variables = jax.jit(lambda b: model.init(jax.random.key(0), b, train=False))(batch)
  forward = jax.jit(lambda v, b: model.apply(v, b, train=False))
  compiled, compile_s = _timed_compile(forward, variables, batch)
  seconds = common.median_seconds(lambda: jax.block_until_ready(compiled(variables, batch)),
                                  WARMUP.value, REPEATS.value)
  return (f'  inference batch {batch_size}: {seconds * 1e3:.0f} ms, {frames / seconds:.2f} '
          f'frames/s (compile {compile_s:.1f} s)')


def benchmark_training(config, model, batch_size: int) -> str:
  mesh = parallel.create_mesh()
  batch, _ = example_batch(config, batch_size)
  batch = jax.device_put(batch, parallel.data_sharded(mesh))
  tx = optim.create_optimizer(config)
  state = state_lib.init_state(model, tx, batch, config.seed, mesh)
  step = train.jit_train_step(
      train.make_train_step(model, tasks.create_task(config), tx, config.seed), mesh)
  compiled, compile_s = _timed_compile(step, state, batch)
  holder = [state]

  def run():
    holder[0], metrics = compiled(holder[0], batch)
    jax.block_until_ready(metrics)
  seconds = common.median_seconds(run, WARMUP.value, REPEATS.value)
  return (f'  training batch {batch_size}: {seconds * 1e3:.0f} ms per step, '
          f'{batch_size / seconds:.2f} examples/s (compile {compile_s:.1f} s)')


def main(argv):
  del argv
  common.start_processes()
  config = CONFIG.value
  model = models.create_model(config.model)
  print(f'{config.model.name}, {config.input.image_size}x{config.input.image_size} on '
        f'{jax.devices()[0].device_kind} ({jax.device_count()} devices; jax {jax.__version__}, '
        f'flax {flax.__version__}):')
  for batch_size in map(int, BATCH_SIZES.value):
    print(benchmark_inference(config, model, batch_size), flush=True)
  if TRAIN_BATCH_SIZE.value >= 0:
    print(benchmark_training(config, model, TRAIN_BATCH_SIZE.value or config.input.batch_size))


if __name__ == '__main__':
  app.run(main, flags_parser=common.parse_flags)
