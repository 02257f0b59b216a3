r"""One prepared accelerator check: every paper config's training step in float32 and
bfloat16, its inference and the streaming segmenters' per-frame step, bf16 against fp32,
and run-to-run determinism; one table and one CSV, within a time budget.

  python scripts/device_check.py [--quick] [--models=flanet,unet] [--modes=train,infer,stream]
      [--out=FILE.csv] [--budget_s=480] [--repeats=10] [--compilation_cache=DIR]

Needs only jax, flax, optax, orbax-checkpoint, numpy, ml_collections and this repository
(no TensorFlow, TFDS, cv2, sklearn or tqdm): random weights and random inputs of each
config's batch specification (``usvjax/benchmarking.py``), no data. ``--quick`` is the CPU
smoke run: the ``tiny`` variant of every config, at most 2 repeats; ``--modes``, a subset.

Per model (``MODELS``) and dtype (float32, then ``config.compute_dtype='bfloat16'``), one
row per mode:

* ``train``: the trainer's jitted step at the paper batch (``config.input.batch_size``);
  when it runs out of memory, again with the next ``config.optimizer.accumulate_steps``
  dividing the batch. ``deterministic``: the params after the same steps from the same
  state, run twice: 'bit-equal' or their largest absolute difference. ``bf16_rel_err``:
  |loss_bf16 - loss_fp32| / |loss_fp32| of the first step. ``memory_gb``: the compiled
  step's memory analysis.
* ``infer``: the forward pass in evaluation mode at ``config.input.eval_batch_size``;
  ``bf16_rel_err``: ||y_bf16 - y_fp32|| / ||y_fp32|| over every floating output.
* ``stream`` (models whose capabilities say they stream: ``start``/``step``,
  ``usvjax/core/streaming.py``): the per-frame step
  at batch 1, carrying its state; ``bf16_rel_err`` as for ``infer``, on the step's logits.

``step_ms``: median of the timed calls after ``WARMUP``; ``gflops_per_step``: XLA's cost
analysis (times ``accumulate_steps``: XLA counts a loop's body once); ``utilisation``:
achieved FLOP/s over ``benchmarking.PEAK_TFLOPS`` (float32 against the TF32 tensor-core
peak that XLA's default float32 precision uses on these GPUs; empty on a device not in the
table, e.g. a CPU); ``frames``: input frames per example (stream: 1).

Budget: before starting, each model's forward pass at batch 1 is lowered (not compiled) for
its FLOPs and its lowering time. A job is estimated at ``COMPILE_FACTOR[mode]`` x the
lowering time (compilation) plus its calls x its FLOPs (training: 3 x forward x batch) over
``UTILISATION_GUESS`` x the peak (a measured matmul rate where the table has no peak).
Repeats are the largest number (at most ``--repeats``) whose estimate fits in 90% of
``--budget_s``; where one repeat does not fit, models are dropped from the end of
``MODELS`` (the video baselines first, the five papers' methods last). After each model the
factors and rates are replaced by the measured ones and the rest is planned again on the
time left. Dropped models have rows with the note 'skipped: over budget'. The CSV is
rewritten after every job. Exit status 1 if a job failed (its note says why).
"""
from __future__ import annotations

import argparse
import csv
import gc
import importlib
import os
import statistics
import sys
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# pylint: disable=wrong-import-position
from usvjax import benchmarking
from usvjax import models
from usvjax.core import compile_cache
from usvjax.core import execution
from usvjax.core import optim
from usvjax.core import parallel
from usvjax.core import state as state_lib


class Entry(NamedTuple):
  name: str
  config: str  # configs/<config>.py
  variant: str  # The paper's; --quick replaces 'paper' with 'tiny'.


# Priority order: over budget, models are dropped from the end.
MODELS = (
    Entry('flanet', 'flanet', 'paper'), Entry('stpfnet', 'stpfnet', 'paper'),
    Entry('dsanet', 'dsanet', 'paper'), Entry('clman', 'clman', 'paper'),
    Entry('cnn_lstm', 'cnn_lstm', 'paper'), Entry('cnn_aver', 'cnn_aver', 'paper'),
    Entry('unet', 'unet', 'paper'), Entry('r2plus1d', 'video_resnet', 'paper,r2plus1d'),
    Entry('r3d', 'video_resnet', 'paper,r3d'), Entry('mc3', 'video_resnet', 'paper,mc3'),
    Entry('c3d', 'c3d', 'paper'), Entry('tsm', 'tsm', 'paper'),
    Entry('timesformer', 'timesformer', 'paper'))
DTYPES = ('float32', 'bfloat16')
MODES = ('train', 'infer', 'stream')
UTILISATION_GUESS = 0.3
# Compilation (and initialisation: 'init') in multiples of the forward pass's lowering
# time, until measured; by platform.
COMPILE_FACTOR = {'gpu': {'init': 10.0, 'train': 40.0, 'infer': 12.0, 'stream': 12.0},
                  'cpu': {'init': 3.0, 'train': 12.0, 'infer': 4.0, 'stream': 4.0}}
WARMUP = 2
COLUMNS = ('model', 'config', 'dtype', 'mode', 'batch', 'accumulate_steps', 'image_size',
           'frames', 'step_ms', 'frames_per_s', 'gflops_per_step', 'utilisation',
           'bf16_rel_err', 'deterministic', 'jax_version', 'device', 'compile_s',
           'peak_tflops', 'memory_gb', 'note')


class Model(NamedTuple):
  """A model of the check, with what its estimate needs."""
  entry: Entry
  variant: str  # The config's variant run.
  config: Any
  model: Any
  frames: int  # Input frames per example.
  forward_flops: float  # One example, evaluation mode.
  lower_s: float  # Seconds the batch-1 forward pass took to lower.
  modes: tuple[str, ...]  # Of --modes, those it has ('stream' if it streams).


def load(entry: Entry, quick: bool, wanted: tuple[str, ...] = MODES) -> Model:
  """The entry's config and model, and its batch-1 forward pass lowered (never compiled)."""
  variant = entry.variant.replace('paper', 'tiny') if quick else entry.variant
  config = importlib.import_module(f'configs.{entry.config}').get_config(variant)
  model = models.create_model(config.model)
  batch, _ = benchmarking.example_batch(config, 1)
  variables = state_lib.abstract_variables(model, batch, parallel.create_mesh())
  start = time.perf_counter()
  lowered = benchmarking.forward(model).lower(variables, batch)
  streams = models.capabilities(config.model).streaming
  return Model(entry, variant, config, model, batch['frames'].shape[1],
               benchmarking.flops(lowered), time.perf_counter() - start,
               tuple(x for x in wanted if x != 'stream' or streams))


class Planner:
  """Estimates jobs (see the module docstring) and refits its factors and rates."""

  def __init__(self, platform: str, peak: dict[str, float]):
    self.factor = dict(COMPILE_FACTOR.get(platform, COMPILE_FACTOR['gpu']))
    self.rate = {d: UTILISATION_GUESS * p for d, p in peak.items()}
    self.measured: dict[str, list[float]] = {}

  def estimate(self, m: Model, repeats: int) -> float:
    c = m.config.input
    calls_flops = {'train': (2 * (WARMUP + repeats), 3 * m.forward_flops * c.batch_size),
                   'infer': (WARMUP + repeats, m.forward_flops * c.eval_batch_size),
                   'stream': (WARMUP + repeats + 1, m.forward_flops)}
    seconds = self.factor['init'] * m.lower_s
    for dtype in DTYPES:
      for mode in m.modes:
        calls, flops = calls_flops[mode]
        seconds += self.factor[mode] * m.lower_s + calls * flops / self.rate[dtype]
    return seconds

  def plan(self, todo: list[Model], seconds_left: float, max_repeats: int
           ) -> tuple[int, list[Model], float]:
    """(repeats, the models that fit, their estimate) for ``seconds_left``."""
    todo = list(todo)
    while todo:
      for repeats in range(max_repeats, 0, -1):
        total = sum(self.estimate(m, repeats) for m in todo)
        if total <= 0.9 * seconds_left:
          return repeats, todo, total
      todo.pop()
    return 1, [], 0.0

  def record(self, key: str, value: float) -> None:
    """A measured compile factor (``key`` a mode or 'init') or rate (``key`` a dtype)."""
    self.measured.setdefault(key, []).append(value)
    target = self.rate if key in self.rate else self.factor
    target[key] = statistics.median(self.measured[key])


copy = lambda tree: jax.tree.map(jnp.copy, tree)  # pylint: disable=unnecessary-lambda-assignment


class Check:
  """Runs the jobs of one model and keeps the rows."""

  def __init__(self, planner: Planner, peak: dict[str, float], device: str, repeats: int):
    self.planner, self.peak, self.device, self.repeats = planner, peak, device, repeats
    self.rows: list[dict] = []
    self.failed = False

  def row(self, m: Model, dtype: str, mode: str, **values) -> dict:
    row = dict(model=m.entry.name, config=f'configs/{m.entry.config}.py:{m.variant}',
               dtype=dtype, mode=mode, image_size=m.config.input.image_size,
               frames=1 if mode == 'stream' else m.frames,
               jax_version=jax.__version__, device=self.device,
               peak_tflops=self.peak.get(dtype, 0) / 1e12 if self.peak else '', **values)
    self.rows.append(row)
    return row

  def timed(self, m: Model, dtype: str, mode: str, measured: benchmarking.Measured,
            batch: int, accumulate: int = 1, **values) -> None:
    flops = measured.flops * accumulate
    rate = flops / measured.seconds
    self.planner.record(dtype, rate)
    self.planner.record(mode, measured.compile_s / m.lower_s)
    self.row(m, dtype, mode, batch=batch, accumulate_steps=accumulate,
             step_ms=measured.seconds * 1e3, frames_per_s=measured.frames / measured.seconds,
             gflops_per_step=flops / 1e9,
             utilisation=rate / self.peak[dtype] if self.peak.get(dtype) else '',
             compile_s=measured.compile_s, **values)

  def train(self, m: Model, dtype: str, state0, reference: dict) -> None:
    batch_size, note = m.config.input.batch_size, ''
    for k in [k for k in range(1, batch_size + 1) if batch_size % k == 0]:
      config = benchmarking.variant(m.config, dtype, accumulate_steps=k)
      setup = benchmarking.train_step(config, m.model, batch_size)
      try:
        measured = benchmarking.measure(setup.step, (copy(state0), setup.batch), setup.frames,
                                        WARMUP, self.repeats, threaded=True)
        break
      except Exception as e:  # pylint: disable=broad-except  # Out of memory: accumulate.
        if not benchmarking.out_of_memory(e) or k == batch_size:
          raise
        note = f'out of memory with accumulate_steps={k}'
    params = jax.device_get(measured.final.params)
    measured = measured._replace(final=None)  # Frees the state before the second run.
    again = copy(state0)
    for _ in range(WARMUP + self.repeats):
      again, _ = measured.program(again, setup.batch)
    self.compared(m, dtype, 'train', measured, batch_size, reference, k,
                  deterministic=benchmarking.difference(params, jax.device_get(again.params)),
                  memory_gb=benchmarking.memory_bytes(measured.program)[0] / 1e9, note=note)

  def infer(self, m: Model, dtype: str, variables: dict, reference: dict) -> None:
    model = execution.wrap(m.model, benchmarking.variant(m.config, dtype))
    batch, frames = benchmarking.example_batch(m.config, m.config.input.eval_batch_size)
    measured = benchmarking.measure(benchmarking.forward(model), (variables, batch), frames,
                                    WARMUP, self.repeats)
    self.compared(m, dtype, 'infer', measured, batch['valid'].shape[0], reference)

  def stream(self, m: Model, dtype: str, variables: dict, reference: dict) -> None:
    model = execution.wrap(m.model, benchmarking.variant(m.config, dtype))
    batch, _ = benchmarking.example_batch(m.config, 1)
    state = benchmarking.stream_start(model, variables, batch)
    measured = benchmarking.measure(benchmarking.stream_step(model),
                                    (state, variables, batch['frames'][:, 0]), 1, WARMUP,
                                    self.repeats, threaded=True)
    self.compared(m, dtype, 'stream', measured, 1, reference)

  def compared(self, m: Model, dtype: str, mode: str, measured: benchmarking.Measured,
               batch: int, reference: dict, accumulate: int = 1, **values) -> None:
    """``timed``, with the outputs (training: the first step's loss) of bf16 compared with
    fp32's (``reference``, by mode)."""
    outputs = measured.outputs['loss'] if mode == 'train' else measured.outputs
    reference.setdefault(mode, outputs)
    error = benchmarking.relative_error(outputs, reference[mode]) if dtype != 'float32' else ''
    self.timed(m, dtype, mode, measured, batch, accumulate, bf16_rel_err=error, **values)

  def run(self, m: Model, write) -> None:
    """Every job of ``m``; a failed job's row names the error."""
    start, state0, error = time.perf_counter(), None, None
    try:
      state0 = jax.block_until_ready(benchmarking.init_state(
          m.config, m.model, optim.create_optimizer(m.config), parallel.create_mesh()))
      self.planner.record('init', (time.perf_counter() - start) / m.lower_s)
    except Exception as e:  # pylint: disable=broad-except  # Reported in every job's row.
      error = e
    reference: dict = {}
    for dtype in DTYPES:
      for mode in m.modes:
        try:
          if error is not None:
            raise error
          if mode == 'train':
            self.train(m, dtype, state0, reference)
          else:
            getattr(self, mode)(m, dtype, state0.variables(), reference)
        except Exception as e:  # pylint: disable=broad-except  # Reported, the check goes on.
          self.failed = True
          self.row(m, dtype, mode, note=f'error: {type(e).__name__}: {str(e).splitlines()[0]}')
        write()
    del state0
    jax.clear_caches()
    gc.collect()


def print_table(rows: list[dict]) -> None:
  def _format(value: Any, spec: str) -> str:
    return format(value, spec) if isinstance(value, float) else str(value or '')
  head = ('model', 'dtype', 'mode', 'batch', 'acc', 'step_ms', 'frames/s', 'GFLOP/step',
          'util', 'bf16_err', 'deterministic', 'note')
  cells = [(r['model'], r['dtype'], r['mode'], r.get('batch', ''), r.get('accumulate_steps', ''),
            _format(r.get('step_ms'), '.1f'), _format(r.get('frames_per_s'), '.3g'),
            _format(r.get('gflops_per_step'), '.3g'), _format(r.get('utilisation'), '.1%'),
            _format(r.get('bf16_rel_err'), '.2e'), r.get('deterministic', ''),
            r.get('note', '')) for r in rows]
  widths = [max(len(str(x)) for x in column) for column in zip(head, *cells)]
  for line in [head] + cells:
    print('  '.join(str(x).ljust(w) for x, w in zip(line, widths)).rstrip())


def write_csv(path: str, rows: list[dict]) -> None:
  with open(path, 'w', newline='') as f:
    writer = csv.DictWriter(f, COLUMNS)
    writer.writeheader()
    for r in rows:
      writer.writerow({k: (f'{v:.4g}' if isinstance(v, float) else v) for k, v in r.items()})


def main(argv: list[str] | None = None) -> int:
  start = time.perf_counter()
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--quick', action='store_true', help='CPU smoke run: tiny configs.')
  parser.add_argument('--models', default='', help='Comma-separated subset of MODELS.')
  parser.add_argument('--modes', default=','.join(MODES), help='Comma-separated, of MODES.')
  parser.add_argument('--out', default='device_check.csv', help='CSV to write.')
  parser.add_argument('--budget_s', type=float, default=480.0, help='Wall-time budget.')
  parser.add_argument('--repeats', type=int, default=10, help='Most timed calls per job.')
  parser.add_argument('--compilation_cache', default=compile_cache.default_dir(),
                      help="JAX's persistent compilation cache (usvjax/core/compile_cache.py; "
                      "'' turns it off): a rerun on the same machine compiles less.")
  args = parser.parse_args(argv)
  names = [n for n in args.models.split(',') if n]
  unknown = sorted(set(names) - {e.name for e in MODELS})
  if unknown:
    parser.error(f'--models: unknown {unknown}; choose from {[e.name for e in MODELS]}.')
  wanted = tuple(x for x in MODES if x in args.modes.split(','))
  if set(args.modes.split(',')) - set(wanted):
    parser.error(f'--modes={args.modes}: choose from {list(MODES)}.')
  if args.compilation_cache:
    compile_cache.turn_on(args.compilation_cache)
  repeats = min(args.repeats, 2) if args.quick else args.repeats
  device = jax.devices()[0]
  peak = benchmarking.device_peak(device)
  rates = peak or {d: benchmarking.matmul_peak(execution.DTYPES[d], 1024) for d in DTYPES}
  print(f'{device.device_kind} ({jax.device_count()} devices), jax {jax.__version__}; '
        f'budget {args.budget_s:.0f} s', flush=True)
  todo = [load(e, args.quick, wanted) for e in MODELS if not names or e.name in names]
  planner = Planner(device.platform, rates)
  check = Check(planner, peak, device.device_kind, repeats)
  def write():
    write_csv(args.out, check.rows)
  while todo:
    left = args.budget_s - (time.perf_counter() - start)
    check.repeats, fitting, estimate = planner.plan(todo, left, repeats)
    for m in todo[len(fitting):]:
      for dtype in DTYPES:
        for mode in m.modes:
          check.row(m, dtype, mode, note='skipped: over budget')
    print(f'plan: {len(fitting)} of {len(todo)} models, {check.repeats} repeats, estimated '
          f'{estimate:.0f} s of {left:.0f} s left', flush=True)
    if not fitting:
      break
    m, todo = fitting[0], fitting[1:]
    check.run(m, write)
    print(f'  {m.entry.name}: done at {time.perf_counter() - start:.0f} s', flush=True)
  write()
  print_table(check.rows)
  print(f'{len(check.rows)} rows in {args.out}; {time.perf_counter() - start:.0f} s')
  return 1 if check.failed else 0


if __name__ == '__main__':
  sys.exit(main())
