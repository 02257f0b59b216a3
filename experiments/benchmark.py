r"""Speed, FLOPs, device utilisation and memory of any model from its config.

  python -m experiments.benchmark --config=configs/flanet.py:paper \
      [--batch_sizes=1,8] [--train_batch_size=0] [--warmup=2] [--repeats=5] \
      [--memory_batch_size=0] [--csv=docs/results/performance_cpu.csv]

Random weights and inputs of the config's batch specification (input_pipeline/spec.py:
image_size, channels, clip_length for clips, max_frames for sequences); a segmentation
example yields one frame (its target), a classification example max_frames frames. The
measuring is ``usvjax/benchmarking.py``'s, shared with ``scripts/device_check.py``.

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
from absl import app
from absl import flags
from ml_collections import config_flags

from experiments import common
from usvjax import benchmarking
from usvjax import models
from usvjax.core import execution
from usvjax.core import optim
from usvjax.core import parallel

CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file and variant.',
                                         lock_config=True)
BATCH_SIZES = flags.DEFINE_list('batch_sizes', ['1', '8'], 'Inference batch sizes.')
TRAIN_BATCH_SIZE = flags.DEFINE_integer('train_batch_size', 0,
                                        'Timed training batch size (0: the config\'s; -1: skip).')
MEMORY_BATCH_SIZE = flags.DEFINE_integer(
    'memory_batch_size', 0, 'Training batch size of the memory analysis (0: the config\'s; '
    '-1: skip).')
WARMUP = flags.DEFINE_integer('warmup', 2, 'Untimed runs (at least 1).')
REPEATS = flags.DEFINE_integer('repeats', 5, 'Timed runs.')
CSV = flags.DEFINE_string('csv', '', 'CSV file to append the rows to.')
MARKDOWN = flags.DEFINE_string('markdown', '', 'Markdown file to (re)write with the table of '
                               'every row of --csv.')
flags.mark_flags_as_required(['config'])

COLUMNS = ('model', 'config', 'image_size', 'batch', 'dtype', 'remat', 'gflop_per_frame',
           'infer_batch', 'infer_frames_s', 'infer_peak_fraction', 'stream_frames_s',
           'train_batch', 'train_gflop_per_frame', 'train_frames_s', 'train_peak_fraction',
           'train_memory_gb', 'train_arguments_gb', 'peak_tflop_s', 'device')


def _result(measured: benchmarking.Measured, batch_size: int) -> dict:
  return dict(batch=batch_size, seconds=measured.seconds,
              frames_s=measured.frames / measured.seconds,
              flops_per_frame=measured.flops / measured.frames, compile_s=measured.compile_s)


def benchmark_inference(config, model, variables: dict, batch_size: int) -> dict:
  batch, frames = benchmarking.example_batch(config, batch_size)
  return _result(benchmarking.measure(benchmarking.forward(model), (variables, batch), frames,
                                      WARMUP.value, REPEATS.value), batch_size)


def benchmark_streaming(config, model, variables: dict) -> dict:
  """Frames/s of the model's own per-frame step at batch 1 (or of the batch-1 forward)."""
  if not models.capabilities(config.model).streaming:
    return dict(benchmark_inference(config, model, variables, 1), how='batch-1 forward')
  batch, _ = benchmarking.example_batch(config, 1)
  state = benchmarking.stream_start(model, variables, batch)
  measured = benchmarking.measure(benchmarking.stream_step(model),
                                  (state, variables, batch['frames'][:, 0]), 1,
                                  WARMUP.value, REPEATS.value, threaded=True)
  return dict(_result(measured, 1), how='start/step')


def benchmark_training(config, model, state, batch_size: int) -> dict:
  """The train step at ``batch_size`` from ``state`` (consumed: the step donates it)."""
  setup = benchmarking.train_step(config, model, batch_size)
  return _result(benchmarking.measure(setup.step, (state, setup.batch), setup.frames,
                                      WARMUP.value, REPEATS.value, threaded=True), batch_size)


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
  peak = {d: benchmarking.matmul_peak(execution.DTYPES[d]) for d in execution.DTYPES}
  print('  matmul peak: ' + ', '.join(f'{d} {p / 1e12:.3f} TFLOP/s' for d, p in peak.items()),
        flush=True)
  row = dict(model=config.model.name,
             config=config_flags.get_config_filename(flags.FLAGS['config']), image_size=size,
             dtype='float32', remat=False, peak_tflop_s=peak['float32'] / 1e12, device=device)
  state = benchmarking.init_state(config, model, optim.create_optimizer(config),
                                  parallel.create_mesh())
  variables = state.variables()
  for batch_size in map(int, BATCH_SIZES.value):
    r = benchmark_inference(config, model, variables, batch_size)
    fraction = r['flops_per_frame'] * r['frames_s'] / peak['float32']
    print(f'  inference batch {batch_size}: {r["seconds"] * 1e3:.0f} ms, {r["frames_s"]:.2f} '
          f'frames/s, {r["flops_per_frame"] / 1e9:.2f} GFLOP/frame, {fraction:.1%} of peak '
          f'(compile {r["compile_s"]:.1f} s)', flush=True)
    row.update(gflop_per_frame=r['flops_per_frame'] / 1e9, infer_batch=batch_size,
               infer_frames_s=r['frames_s'], infer_peak_fraction=fraction)
  r = benchmark_streaming(config, model, variables)
  print(f'  streaming ({r["how"]}): {r["seconds"] * 1e3:.0f} ms per frame, '
        f'{r["frames_s"]:.2f} frames/s (compile {r["compile_s"]:.1f} s)', flush=True)
  row['stream_frames_s'] = r['frames_s']
  if TRAIN_BATCH_SIZE.value >= 0:
    r = benchmark_training(config, model, state,
                           TRAIN_BATCH_SIZE.value or config.input.batch_size)
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
          total, arguments = benchmarking.training_memory(
              benchmarking.variant(config, dtype, remat), model, memory_batch)
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
