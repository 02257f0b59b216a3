r"""Speed, FLOPs, device utilisation and memory of any model from its config.

  python -m experiments.benchmark --config=configs/flanet.py:paper \
      [--batch_sizes=1,8] [--train_batch_size=0] [--warmup=2] [--repeats=5] \
      [--memory_batch_size=0] [--csv=docs/results/performance_cpu.csv]

Random weights and inputs of the config's batch specification (input_pipeline/spec.py:
image_size, channels, clip_length for clips, max_frames for sequences); a segmentation
example yields one frame (its target), a classification example max_frames frames.

* Peak: the device's measured matmul rate (a jitted 2048x2048 float32 matmul, and
  bfloat16), timed in the same run, is the reference of every utilisation figure.
* Inference: eval mode, one jitted forward per --batch_sizes entry (float32). FLOPs per frame
  come from the compiled program's cost analysis (XLA's count of the program, so including
  what the model computes beyond the papers' multiply-adds); achieved FLOP/s = FLOPs / time,
  and its fraction of the float32 matmul peak.
* Streaming: a segmentation model with a state (``start``/``step``) stepped one frame at a
  time at batch 1; any other model: the batch-1 forward.
* Training: the full jitted train step (forward, the config's loss, backward, optimizer) at
  --train_batch_size (default: the config's), float32; the same FLOP and utilisation figures.
* Memory: the compiled train step at --memory_batch_size (default: the config's, i.e. the
  paper batch for ``paper``) in float32 and bfloat16 (``config.compute_dtype``), with and
  without ``config.remat``: the compiled program's memory analysis (arguments + outputs +
  temporaries - donated aliases; the arguments, train state and batch, separately),
  compiled only, never run. It is the compiler's plan for
  this device: a GPU's differs (other fusions, cuDNN workspaces) and its runtime adds some
  hundred MB.

Times are medians of --repeats runs after --warmup runs; compile times are separate.
--csv appends one row per (config, dtype, remat) to a CSV (written with its header if new);
--markdown rewrites a markdown table of all the CSV's rows.
"""
import csv
import os

import flax
import jax
import jax.numpy as jnp
from absl import app
from absl import flags
from ml_collections import config_flags

from experiments import common
from experiments import timing
from usvjax import execution
from usvjax import models
from usvjax import state as state_lib
from usvjax import streaming

CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file and variant.',
                                         lock_config=True)
BATCH_SIZES = flags.DEFINE_list('batch_sizes', ['1', '8'], 'Inference batch sizes.')
TRAIN_BATCH_SIZE = flags.DEFINE_integer('train_batch_size', 0,
                                        'Timed training batch size (0: the config\'s; -1: skip).')
MEMORY_BATCH_SIZE = flags.DEFINE_integer(
    'memory_batch_size', 0, 'Training batch size of the memory analysis (0: the config\'s; '
    '-1: skip).')
WARMUP = flags.DEFINE_integer('warmup', 2, 'Untimed runs.')
REPEATS = flags.DEFINE_integer('repeats', 5, 'Timed runs.')
CSV = flags.DEFINE_string('csv', '', 'CSV file to append the rows to.')
MARKDOWN = flags.DEFINE_string('markdown', '', 'Markdown file to (re)write with the table of '
                               'every row of --csv.')
flags.mark_flags_as_required(['config'])

COLUMNS = ('model', 'config', 'image_size', 'batch', 'dtype', 'remat', 'gflop_per_frame',
           'infer_batch', 'infer_frames_s', 'infer_peak_fraction', 'stream_frames_s',
           'train_batch', 'train_gflop_per_frame', 'train_frames_s', 'train_peak_fraction',
           'train_memory_gb', 'train_arguments_gb', 'peak_tflop_s', 'device')


def _flops(compiled) -> float:
  analysis = compiled.cost_analysis()
  analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
  return float(analysis.get('flops', 0.0))


def _memory_bytes(compiled) -> tuple[int, int]:
  """(bytes the program needs, bytes of its arguments: train state and batch)."""
  m = compiled.memory_analysis()
  return (m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes -
          m.alias_size_in_bytes), m.argument_size_in_bytes


def matmul_peak(dtype, n: int = 2048) -> float:
  """Measured FLOP/s of a jitted n x n matmul in ``dtype`` (the device's practical peak)."""
  a = jnp.ones((n, n), dtype)
  matmul = jax.jit(lambda x, y: x @ y)
  seconds = common.median_seconds(lambda: matmul(a, a).block_until_ready(), 2, 5)
  return 2 * n**3 / seconds


def benchmark_inference(config, model, batch_size: int) -> dict:
  batch, frames = timing.example_batch(config, batch_size)
  variables = jax.jit(lambda b: model.init(jax.random.key(0), b, train=False))(batch)
  forward = jax.jit(lambda v, b: model.apply(v, b, train=False))
  compiled, compile_s = timing.timed_compile(forward, variables, batch)
  seconds = common.median_seconds(lambda: jax.block_until_ready(compiled(variables, batch)),
                                  WARMUP.value, REPEATS.value)
  return dict(batch=batch_size, seconds=seconds, frames_s=frames / seconds,
              flops_per_frame=_flops(compiled) / frames, compile_s=compile_s)


def benchmark_streaming(config, model) -> dict:
  """Frames/s of the model's own per-frame step at batch 1 (or of the batch-1 forward)."""
  if not streaming.is_streaming(model):
    result = benchmark_inference(config, model, 1)
    return dict(result, how='batch-1 forward')
  batch, _ = timing.example_batch(config, 1)
  variables = jax.jit(lambda b: model.init(jax.random.key(0), b, train=False))(batch)
  frames = batch['frames'][:, 0]
  mask = jnp.zeros(frames.shape[:-1] + (1,), jnp.float32)
  state, _ = jax.jit(lambda v, f, m: model.apply(v, f, m, method='start'))(variables, frames,
                                                                         mask)
  step = jax.jit(lambda v, s, f: model.apply(v, s, f, method='step'))
  compiled, compile_s = timing.timed_compile(step, variables, state, frames)
  seconds = common.median_seconds(
      lambda: jax.block_until_ready(compiled(variables, state, frames)), WARMUP.value,
      REPEATS.value)
  return dict(batch=1, seconds=seconds, frames_s=1 / seconds, compile_s=compile_s,
              flops_per_frame=_flops(compiled), how='start/step')


def benchmark_training(config, model, batch_size: int) -> dict:
  step, tx, mesh, batch, frames = timing.train_step(config, model, batch_size)
  state = state_lib.init_state(model, tx, batch, config.seed, mesh)
  compiled, compile_s = timing.timed_compile(step, state, batch)
  holder = [state]

  def run():
    holder[0], metrics = compiled(holder[0], batch)
    jax.block_until_ready(metrics)
  seconds = common.median_seconds(run, WARMUP.value, REPEATS.value)
  return dict(batch=batch_size, seconds=seconds, frames_s=frames / seconds,
              flops_per_frame=_flops(compiled) / frames, compile_s=compile_s)


def training_memory(config, model, batch_size: int) -> tuple[float, float]:
  """(GB the compiled train step at ``batch_size`` needs, GB of its arguments), compiled,
  not run."""
  step, tx, mesh, batch, _ = timing.train_step(config, model, batch_size)
  state = jax.eval_shape(lambda: state_lib.init_state(model, tx, batch, config.seed, mesh))
  compiled = step.lower(state, batch).compile()
  return tuple(b / 1e9 for b in _memory_bytes(compiled))


def _variant(config, dtype: str, remat: bool):
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.compute_dtype, config.remat = dtype, remat
  return config


def _cell(value: str, spec: str) -> str:
  return format(float(value), spec) if value not in ('', None) else ''


def markdown_table(rows: list[dict]) -> str:
  """The CSV rows as a markdown table (empty cells: not measured in that row)."""
  head = ('model', 'config', 'image', 'batch', 'dtype', 'remat', 'GFLOP/frame',
          'inference frames/s (batch)', 'of peak', 'streaming frames/s',
          'training frames/s (batch)', 'of peak', 'training memory GB (arguments)')
  lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
  for r in rows:
    infer = f'{_cell(r["infer_frames_s"], ".3g")} ({r["infer_batch"]})' if r['infer_batch'] else ''
    training = (f'{_cell(r["train_frames_s"], ".3g")} ({r["train_batch"]})'
                if r['train_batch'] else '')
    memory = (f'{_cell(r["train_memory_gb"], ".1f")} ({_cell(r["train_arguments_gb"], ".2f")})'
              if r['train_memory_gb'] else 'fails')
    cells = (r['model'], r['config'].split('/')[-1], r['image_size'], r['batch'], r['dtype'],
             'on' if r['remat'] == 'True' else 'off', _cell(r['gflop_per_frame'], '.1f'), infer,
             _cell(r['infer_peak_fraction'], '.0%'), _cell(r['stream_frames_s'], '.3g'),
             training, _cell(r['train_peak_fraction'], '.0%'), memory)
    lines.append('| ' + ' | '.join(str(c) for c in cells) + ' |')
  return '\n'.join(lines) + '\n'


def main(argv):
  del argv
  common.start_processes()
  config = CONFIG.value
  model = models.create_model(config.model)
  device = jax.devices()[0].device_kind
  size = config.input.image_size
  print(f'{config.model.name}, {size}x{size} on {device} ({jax.device_count()} devices; '
        f'jax {jax.__version__}, flax {flax.__version__}):')
  peak = {d: matmul_peak(execution.DTYPES[d]) for d in execution.DTYPES}
  print('  matmul peak: ' + ', '.join(f'{d} {p / 1e12:.3f} TFLOP/s' for d, p in peak.items()),
        flush=True)
  row = dict(model=config.model.name, config=config_flags.get_config_filename(flags.FLAGS['config']),
             image_size=size, dtype='float32', remat=False, peak_tflop_s=peak['float32'] / 1e12,
             device=device)
  for batch_size in map(int, BATCH_SIZES.value):
    r = benchmark_inference(config, model, batch_size)
    fraction = r['flops_per_frame'] * r['frames_s'] / peak['float32']
    print(f'  inference batch {batch_size}: {r["seconds"] * 1e3:.0f} ms, {r["frames_s"]:.2f} '
          f'frames/s, {r["flops_per_frame"] / 1e9:.2f} GFLOP/frame, {fraction:.1%} of peak '
          f'(compile {r["compile_s"]:.1f} s)', flush=True)
    row.update(gflop_per_frame=r['flops_per_frame'] / 1e9, infer_batch=batch_size,
               infer_frames_s=r['frames_s'], infer_peak_fraction=fraction)
  r = benchmark_streaming(config, model)
  print(f'  streaming ({r["how"]}): {r["seconds"] * 1e3:.0f} ms per frame, '
        f'{r["frames_s"]:.2f} frames/s (compile {r["compile_s"]:.1f} s)', flush=True)
  row['stream_frames_s'] = r['frames_s']
  if TRAIN_BATCH_SIZE.value >= 0:
    r = benchmark_training(config, model, TRAIN_BATCH_SIZE.value or config.input.batch_size)
    fraction = r['flops_per_frame'] * r['frames_s'] / peak['float32']
    print(f'  training batch {r["batch"]}: {r["seconds"] * 1e3:.0f} ms per step, '
          f'{r["frames_s"]:.2f} frames/s, {r["flops_per_frame"] / 1e9:.2f} GFLOP/frame, '
          f'{fraction:.1%} of peak (compile {r["compile_s"]:.1f} s)', flush=True)
    row.update(train_batch=r['batch'], train_gflop_per_frame=r['flops_per_frame'] / 1e9,
               train_frames_s=r['frames_s'], train_peak_fraction=fraction)
  rows = []
  memory_batch = MEMORY_BATCH_SIZE.value or config.input.batch_size
  for remat in (False, True):
    for dtype in execution.DTYPES:
      variant = dict(row, dtype=dtype, remat=remat, batch=memory_batch) if (
          dtype, remat) == ('float32', False) else dict(
              model=row['model'], config=row['config'], image_size=size, dtype=dtype,
              remat=remat, batch=memory_batch, peak_tflop_s=peak[dtype] / 1e12, device=device)
      if MEMORY_BATCH_SIZE.value >= 0:
        try:
          total, arguments = training_memory(_variant(config, dtype, remat), model,
                                             memory_batch)
        except (ValueError, TypeError) as e:  # The model does not run in this dtype.
          print(f'  training memory, {dtype}, remat {remat}: fails ({e})', flush=True)
          rows.append(variant)
          continue
        variant.update(train_memory_gb=total, train_arguments_gb=arguments)
        print(f'  training memory, batch {memory_batch}, {dtype}, remat {remat}: '
              f'{total:.2f} GB ({arguments:.2f} GB arguments)', flush=True)
      rows.append(variant)
  if CSV.value:
    new = not os.path.exists(CSV.value)
    with open(CSV.value, 'a', newline='') as f:
      writer = csv.DictWriter(f, COLUMNS)
      if new:
        writer.writeheader()
      for r in rows:
        writer.writerow({k: (f'{v:.4g}' if isinstance(v, float) else v) for k, v in r.items()})
  if MARKDOWN.value:
    with open(CSV.value) as f, open(MARKDOWN.value, 'w') as out:
      out.write(markdown_table(list(csv.DictReader(f))))


if __name__ == '__main__':
  app.run(main, flags_parser=common.parse_flags)
