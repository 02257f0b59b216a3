"""Shared pieces of the benchmark commands: example batches of a config, timed compilation,
the trainer's own jitted train step."""
import time

import jax
import jax.numpy as jnp
import ml_collections

from input_pipeline import pipeline
from input_pipeline import spec
from usvjax import execution
from usvjax import optim
from usvjax import parallel
from usvjax import tasks
from usvjax import train_step as train_step_lib


def example_batch(config: ml_collections.ConfigDict, batch_size: int) -> tuple[dict, int]:
  """A training batch of the config's batch specification (every frame valid; sequences
  of ``max_frames``), and the frames it predicts: a clip its target, a sequence all."""
  fields = pipeline.batch_spec(config, train=True)
  length = config.input.max_frames
  batch = jax.tree.map(jnp.asarray, spec.example_batch(fields, batch_size, length))
  per_example = 1 if fields['valid'].shape[0] is not None else length
  return batch, batch_size * per_example


def timed_compile(fn, *args) -> tuple[object, float]:
  """(``fn`` (a jitted function) compiled for ``args``, seconds the compilation took)."""
  start = time.perf_counter()
  compiled = fn.lower(*args).compile()
  return compiled, time.perf_counter() - start


def train_step(config: ml_collections.ConfigDict, model, batch_size: int):
  """(jitted train step, optimizer, mesh, batch, frames per batch) of ``config`` at
  ``batch_size``: the trainer's step (``usvjax.train``), with the config's task and
  optimizer."""
  mesh = parallel.create_mesh()
  batch, frames = example_batch(config, batch_size)
  batch = jax.device_put(batch, parallel.data_sharded(mesh))
  tx = optim.create_optimizer(config)
  step = train_step_lib.jit_train_step(train_step_lib.make_train_step(
      execution.wrap(model, config), tasks.create_task(config), tx, config.seed,
      config.optimizer.accumulate_steps), mesh)
  return step, tx, mesh, batch, frames
