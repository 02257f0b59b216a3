"""Timing a model from its config, with neither data nor TensorFlow: example batches of the
config's batch specification, the trainer's own train step, compiled programs' FLOPs and
memory, the device's matmul rate, and medians of repeated calls.

Shared by ``experiments/benchmark.py`` (one config: speed, FLOPs, memory),
``experiments/benchmark_torch.py`` (side by side with PyTorch) and
``scripts/device_check.py`` (every paper config on an accelerator). Imports JAX, optax and
the library's TensorFlow-free core only.
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from input_pipeline import spec
from usvjax import tasks
from usvjax.core import execution
from usvjax.core import optim
from usvjax.core import parallel
from usvjax.core import state as state_lib
from usvjax.core import train_step as train_step_lib


# Dense TFLOP/s per GPU by device_kind (the first name contained in it). float32 is the TF32
# tensor-core rate: XLA's default precision runs float32 convolutions and matrix products
# on TF32 on these GPUs.
PEAK_TFLOPS = (('H100 PCIe', {'float32': 378.0, 'bfloat16': 756.0}),
               ('H100 NVL', {'float32': 417.5, 'bfloat16': 835.0}),
               ('H100', {'float32': 494.7, 'bfloat16': 989.4}),
               ('H200', {'float32': 494.7, 'bfloat16': 989.4}),
               ('A100', {'float32': 156.0, 'bfloat16': 312.0}))


def device_peak(device: jax.Device) -> dict[str, float]:
  """FLOP/s per dtype of ``device`` from ``PEAK_TFLOPS`` ({} for a device not in it)."""
  for name, peaks in PEAK_TFLOPS:
    if name in device.device_kind:
      return {d: p * 1e12 for d, p in peaks.items()}
  return {}


def variant(config: ml_collections.ConfigDict, dtype: str, remat: bool = False,
            accumulate_steps: int | None = None) -> ml_collections.ConfigDict:
  """A copy of ``config`` run in ``config.compute_dtype`` ``dtype``, with ``config.remat``
  ``remat`` and (unless None) ``config.optimizer.accumulate_steps`` ``accumulate_steps``."""
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.compute_dtype, config.remat = dtype, remat
    if accumulate_steps is not None:
      config.optimizer.accumulate_steps = accumulate_steps
  return config


def example_batch(config: ml_collections.ConfigDict, batch_size: int,
                  seed: int = 0) -> tuple[dict, int]:
  """A training batch of the config's batch specification ([batch_size, ...], every frame
  valid, sequences of ``max_frames``; ``frames`` and cached ``features`` uniform in [0, 1),
  ``masks`` 0 or 1 at random, the rest zeros), and the frames it predicts: a clip its
  target, a sequence all."""
  fields = tasks.batch_spec(config, train=True)
  length = config.input.max_frames
  batch = spec.example_batch(fields, batch_size, length)
  rng = np.random.default_rng(seed)
  for key in ('frames', 'features', 'masks'):
    if key in batch:
      values = rng.random(batch[key].shape, np.float32)
      batch[key] = (values < 0.5).astype(np.float32) if key == 'masks' else values
  per_example = 1 if fields['valid'].shape[0] is not None else length
  return jax.tree.map(jnp.asarray, batch), batch_size * per_example


def timed_compile(fn, *args) -> tuple[jax.stages.Compiled, float]:
  """(``fn`` (a jitted function) compiled for ``args``, seconds the compilation took)."""
  start = time.perf_counter()
  compiled = fn.lower(*args).compile()
  return compiled, time.perf_counter() - start


def median_seconds(fn: Callable[[], object], warmup: int, repeats: int) -> float:
  """Median wall time of ``repeats`` calls of ``fn`` after ``warmup`` untimed calls."""
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def flops(stage: jax.stages.Lowered | jax.stages.Compiled) -> float:
  """FLOPs of one call from XLA's cost analysis of a lowered or compiled program (0.0
  where the backend gives none). A loop's body is counted once: a program that scans k
  micro-batches counts one of them."""
  analysis = stage.cost_analysis()
  if isinstance(analysis, (list, tuple)):  # One entry per device program in older JAX.
    analysis = analysis[0] if analysis else None
  return float((analysis or {}).get('flops', 0.0))


def memory_bytes(compiled: jax.stages.Compiled) -> tuple[int, int]:
  """(bytes the program needs, bytes of its arguments: train state and batch)."""
  m = compiled.memory_analysis()
  return (m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes -
          m.alias_size_in_bytes), m.argument_size_in_bytes


def matmul_peak(dtype: Any, n: int = 2048) -> float:
  """Measured FLOP/s of a jitted n x n matmul in ``dtype`` (the device's practical peak)."""
  a = jnp.ones((n, n), dtype)
  matmul = jax.jit(lambda x, y: x @ y)
  seconds = median_seconds(lambda: matmul(a, a).block_until_ready(), 2, 5)
  return 2 * n**3 / seconds


class TrainStep(NamedTuple):
  """The trainer's jitted step of a config at one batch size, and what it runs on."""
  step: Any  # jit of (state, batch) -> (state, metrics); the state is donated.
  tx: optax.GradientTransformation
  mesh: jax.sharding.Mesh
  batch: dict  # [batch_size, ...] (``example_batch``), split over the mesh's 'data' axis.
  frames: int  # Frames the batch predicts.


def train_step(config: ml_collections.ConfigDict, model, batch_size: int) -> TrainStep:
  """The trainer's step (``usvjax.core.train_step``) of ``config`` at ``batch_size``: the
  model as ``execution.wrap`` runs it, the config's task, optimizer and
  ``optimizer.accumulate_steps``, over all devices."""
  mesh = parallel.create_mesh()
  batch, frames = example_batch(config, batch_size)
  batch = jax.device_put(batch, parallel.data_sharded(mesh))
  tx = optim.create_optimizer(config)
  step = train_step_lib.jit_train_step(train_step_lib.make_train_step(
      execution.wrap(model, config), tasks.create_task(config), tx, config.seed,
      config.optimizer.accumulate_steps), mesh)
  return TrainStep(step, tx, mesh, batch, frames)


def init_state(config: ml_collections.ConfigDict, model, tx: optax.GradientTransformation,
               mesh: jax.sharding.Mesh) -> state_lib.TrainState:
  """The config's initial train state, as the trainer makes it (from one example)."""
  batch = state_lib.init_batch(config, tasks.batch_spec(config, train=True))
  return state_lib.init_state(model, tx, batch, config.seed, mesh)


def training_memory(config: ml_collections.ConfigDict, model,
                    batch_size: int) -> tuple[float, float]:
  """(GB the compiled train step at ``batch_size`` needs, GB of its arguments), compiled,
  not run."""
  setup = train_step(config, model, batch_size)
  state = jax.eval_shape(lambda: init_state(config, model, setup.tx, setup.mesh))
  compiled = setup.step.lower(state, setup.batch).compile()
  return tuple(b / 1e9 for b in memory_bytes(compiled))


class Measured(NamedTuple):
  """A compiled program timed (``measure``)."""
  seconds: float  # Median wall time of a call.
  compile_s: float
  flops: float  # Per call, from the compiled program's cost analysis.
  frames: int  # Frames one call predicts.
  outputs: Any  # The first call's outputs (on the host; a threaded step's without its state).
  program: jax.stages.Compiled
  final: Any  # A threaded step's state after the last call (None otherwise).


def measure(fn, args: tuple, frames: int, warmup: int, repeats: int,
            threaded: bool = False) -> Measured:
  """Compiles the jitted ``fn`` for ``args`` and times ``repeats`` calls after ``warmup``
  (at least one, whose outputs are kept). With ``threaded``, ``fn`` is a step
  ``(state, *rest) -> (state, outputs)`` and each call continues from the previous call's
  state (a donated state is consumed)."""
  compiled, compile_s = timed_compile(fn, *args)
  args = list(args)

  def call():
    out = compiled(*args)
    if threaded:
      args[0], out = out
    return jax.block_until_ready(out)
  outputs = jax.device_get(call())
  seconds = median_seconds(call, max(warmup - 1, 0), repeats)
  return Measured(seconds, compile_s, flops(compiled), frames, outputs, compiled,
                  args[0] if threaded else None)


def relative_error(ours: Any, reference: Any) -> float:
  """||ours - reference|| / ||reference|| over every floating leaf of two like trees."""
  pairs = [(np.asarray(a, np.float64), np.asarray(b, np.float64))
           for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(reference))
           if np.issubdtype(np.asarray(b).dtype, np.floating)]
  squared = sum(float(np.sum((a - b) ** 2)) for a, b in pairs)
  return float(np.sqrt(squared / max(sum(float(np.sum(b ** 2)) for _, b in pairs), 1e-30)))


def difference(first: Any, second: Any) -> str:
  """'bit-equal', or the largest absolute difference of two like trees of arrays."""
  largest = max(float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))
                for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(second)))
  return 'bit-equal' if largest == 0 else f'{largest:.3g}'


def out_of_memory(error: Exception) -> bool:
  """Whether ``error`` is XLA's out-of-memory error (raised at compilation or at a call)."""
  text = str(error)
  return 'RESOURCE_EXHAUSTED' in text or 'out of memory' in text.lower()


def forward(model):
  """jit of the model's forward pass in evaluation mode: (variables, batch) -> outputs."""
  return jax.jit(lambda variables, batch: model.apply(variables, batch, train=False))


def stream_start(model, variables: dict, batch: dict):
  """A streaming model's state (``usvjax.core.streaming``) after ``start`` on the first frame
  of the batch's clips [B, H, W, C] with its mask: what ``stream_step`` continues from."""
  state, _ = jax.jit(lambda v, f, m: model.apply(v, f, m, method='start'))(
      variables, batch['frames'][:, 0], batch['masks'][:, 0])
  return state


def stream_step(model):
  """jit of a streaming model's ``step`` as a threaded step (``measure``):
  (state, variables, frame [B, H, W, C]) -> (state, logits [B, H, W, 1])."""
  return jax.jit(lambda state, variables, frame: model.apply(variables, state, frame,
                                                             method='step'))
