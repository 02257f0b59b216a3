r"""usvjax against PyTorch on the same CPU, side by side: backbones and FLA-Net, inference and
training.

  python -m experiments.benchmark_torch [--cases=resnet50,res2net50_26w_4s,flanet] \
      [--modes=inference,training] [--size=224] [--batch=1] [--train_batch=2] \
      [--flanet_release=DIR --reference_python=PY] [--repeats=5] [--warmup=1] \
      [--nopointwise_matmul] [--csv=docs/results/torch_side_by_side.csv --label=NAME]

Each (case, mode) is compiled (usvjax) or built (PyTorch) once, warmed up, then timed
interleaved: one usvjax call, one PyTorch call, --repeats times; the medians and their ratio
(PyTorch seconds / usvjax seconds: above 1, usvjax is faster) are printed and, with --csv,
appended with the XLA_FLAGS of the run. PyTorch runs in a worker process
(``experiments/torch_side.py``) with --threads threads and passive OpenMP waiting, so the
two never run at the same time; usvjax uses every core XLA sees.

* Backbones (``resnet50`` against torchvision, ``res2net50_26w_4s`` against timm; the test
  requirements): the trunk to stride 32. Inference: --batch images, eval mode. Training:
  --train_batch images, train-mode BatchNorm, loss mean(features^2), backward, SGD with
  momentum.
* ``flanet``: ``configs/flanet.py:released_code`` (the released architecture). Inference:
  --batch clips of --clip_length frames; training: --train_batch clips through usvjax's own
  train step (the config's loss and optimizer). Its PyTorch side is the released model, only
  where it is installed: --flanet_release names the release folder and --reference_python an
  interpreter with its requirements (see scripts/make_flanet_fixture.py for both); without
  them the usvjax side is timed alone.

Defaults finish in a few minutes on 2 cores; the papers' sizes are options (--size=352, and
for FLA-Net's paper batch --train_batch=8).
"""
import csv
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Callable

import jax
import jax.numpy as jnp
import optax
from absl import app
from absl import flags

from configs import flanet as flanet_config
from experiments import common
from usvjax import benchmarking
from usvjax import models
from usvjax.core import state as state_lib
from usvjax.models.backbones import pointwise
from usvjax.models.backbones import resnet

BACKBONES = ('resnet50', 'res2net50_26w_4s')
CASES = flags.DEFINE_list('cases', list(BACKBONES) + ['flanet'], 'What to time.')
MODES = flags.DEFINE_list('modes', ['inference', 'training'], 'inference and/or training.')
SIZE = flags.DEFINE_integer('size', 224, 'Input height and width.')
BATCH = flags.DEFINE_integer('batch', 1, 'Inference batch (images; FLA-Net: clips).')
TRAIN_BATCH = flags.DEFINE_integer('train_batch', 2, 'Training batch (images; FLA-Net: clips).')
CLIP_LENGTH = flags.DEFINE_integer('clip_length', 3, 'FLA-Net frames per clip.')
WARMUP = flags.DEFINE_integer('warmup', 1, 'Untimed calls of each side.')
REPEATS = flags.DEFINE_integer('repeats', 5, 'Timed calls of each side (interleaved).')
THREADS = flags.DEFINE_integer('threads', os.cpu_count() or 1, 'PyTorch threads.')
RELEASE = flags.DEFINE_string('flanet_release', '', 'Folder of the released FLA-Net code.')
REFERENCE_PYTHON = flags.DEFINE_string('reference_python', sys.executable,
                                       'Python of the PyTorch worker.')
CSV = flags.DEFINE_string('csv', '', 'CSV file to append the rows to.')
LABEL = flags.DEFINE_string('label', 'default', 'Names the setting in the CSV (e.g. a flag).')
POINTWISE = flags.DEFINE_bool('pointwise_matmul', True, "usvjax's 1x1 convolutions as matrix "
                              'products (config.pointwise_matmul; --nopointwise_matmul: as '
                              'XLA convolutions, as before it existed).')

COLUMNS = ('label', 'xla_flags', 'pointwise_matmul', 'case', 'mode', 'size', 'batch', 'usvjax_s',
           'pytorch_s', 'speed_ratio', 'usvjax_compile_s', 'repeats', 'jax', 'torch', 'threads')


@dataclasses.dataclass
class Timed:
  """One side's call, how long preparing it took and (usvjax) its compiled program's HLO."""
  call: Callable[[], object]
  prepare_s: float
  hlo: str = ''


def _backbone_call(arch: str, mode: str, size: int, batch: int) -> Timed:
  model = resnet.ResNet(arch)
  images = jax.random.uniform(jax.random.key(1), (batch, size, size, 3))
  variables = jax.jit(lambda x: model.init(jax.random.key(0), x, train=False))(images)
  if mode == 'inference':
    forward = jax.jit(lambda v, x: model.apply(v, x, train=False)['stride32'])
    compiled, seconds = benchmarking.timed_compile(forward, variables, images)
    return Timed(lambda: compiled(variables, images).block_until_ready(), seconds,
                 compiled.as_text())
  tx = optax.sgd(1e-3, momentum=0.9)

  def step(params, stats, opt_state, x):
    def loss_fn(p):
      out, updates = model.apply({'params': p, 'batch_stats': stats}, x, train=True,
                                 mutable=['batch_stats'])
      return jnp.mean(jnp.square(out['stride32'])), updates['batch_stats']
    (_, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), stats, opt_state
  state = [variables['params'], variables['batch_stats'], tx.init(variables['params'])]
  compiled, seconds = benchmarking.timed_compile(jax.jit(step, donate_argnums=(0, 1, 2)),
                                           *state, images)

  def call():
    state[:] = compiled(*state, images)
    jax.block_until_ready(state)
  return Timed(call, seconds, compiled.as_text())


def _flanet_call(mode: str, size: int, batch: int, clip_length: int) -> Timed:
  config = flanet_config.get_config('released_code')
  with config.unlocked():
    config.input.image_size, config.input.clip_length = size, clip_length
    config.pointwise_matmul = POINTWISE.value
  model = models.create_model(config.model)
  if mode == 'inference':
    inputs, _ = benchmarking.example_batch(config, batch)
    variables = jax.jit(lambda b: model.init(jax.random.key(0), b, train=False))(inputs)
    forward = jax.jit(lambda v, b: model.apply(v, b, train=False))
    compiled, seconds = benchmarking.timed_compile(forward, variables, inputs)
    return Timed(lambda: jax.block_until_ready(compiled(variables, inputs)), seconds,
                 compiled.as_text())
  step, tx, mesh, inputs, _ = benchmarking.train_step(config, model, batch)
  state = [state_lib.init_state(model, tx, inputs, config.seed, mesh)]
  compiled, seconds = benchmarking.timed_compile(step, state[0], inputs)

  def call():
    state[0], metrics = compiled(state[0], inputs)
    jax.block_until_ready(metrics)
  return Timed(call, seconds, compiled.as_text())


class TorchSide:
  """The PyTorch worker process (``experiments/torch_side.py``)."""

  def __init__(self, python: str, threads: int):
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'torch_side.py')
    env = dict(os.environ, OMP_WAIT_POLICY='PASSIVE', OMP_NUM_THREADS=str(threads))
    self._process = subprocess.Popen([python, script], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=env)

  def ask(self, request: dict) -> dict:
    self._process.stdin.write(json.dumps(request) + '\n')
    self._process.stdin.flush()
    line = self._process.stdout.readline()
    if not line:
      raise RuntimeError('the PyTorch worker stopped (see its error above).')
    reply = json.loads(line)
    if 'error' in reply:
      raise RuntimeError(f'PyTorch side: {reply["error"]}')
    return reply

  def build(self, **request) -> Timed:
    start = time.perf_counter()
    self.ask(request)
    return Timed(lambda: self.ask({'run': True})['seconds'], time.perf_counter() - start)

  def close(self) -> None:
    self._process.stdin.close()
    self._process.wait()


def _seconds(timed: Timed) -> float:
  """Wall time of one call (the worker's own measurement for PyTorch)."""
  start = time.perf_counter()
  reported = timed.call()
  return reported if isinstance(reported, float) else time.perf_counter() - start


def interleaved(ours: Timed, theirs: Timed | None, warmup: int, repeats: int
                ) -> tuple[float, float | None]:
  """Medians of ``repeats`` alternating calls of each side, after ``warmup`` calls each."""
  sides = [ours] + ([theirs] if theirs else [])
  for _ in range(warmup):
    for side in sides:
      side.call()
  times = [[_seconds(side) for side in sides] for _ in range(repeats)]
  medians = [statistics.median(column) for column in zip(*times)]
  return medians[0], (medians[1] if theirs else None)


def _measure(case: str, mode: str, worker: TorchSide) -> dict:
  batch = BATCH.value if mode == 'inference' else TRAIN_BATCH.value
  request = dict(build=case, mode=mode, size=SIZE.value, batch=batch,
                 clip_length=CLIP_LENGTH.value, threads=THREADS.value, release=RELEASE.value)
  with pointwise.as_matmuls(POINTWISE.value):  # Compilation happens here.
    ours = (_flanet_call(mode, SIZE.value, batch, CLIP_LENGTH.value) if case == 'flanet' else
            _backbone_call(case, mode, SIZE.value, batch))
  theirs = worker.build(**request) if case != 'flanet' or RELEASE.value else None
  usvjax_s, pytorch_s = interleaved(ours, theirs, WARMUP.value, REPEATS.value)
  return dict(case=case, mode=mode, size=SIZE.value, batch=batch, usvjax_s=usvjax_s,
              pytorch_s=pytorch_s, speed_ratio=pytorch_s / usvjax_s if pytorch_s else None,
              usvjax_compile_s=ours.prepare_s)


def _describe(row: dict) -> str:
  what = f'{row["case"]} {row["mode"]}, batch {row["batch"]}, {row["size"]}px'
  if row['pytorch_s'] is None:
    return f'{what}: usvjax {row["usvjax_s"]:.3f} s (no PyTorch reference installed)'
  return (f'{what}: usvjax {row["usvjax_s"]:.3f} s, PyTorch {row["pytorch_s"]:.3f} s, '
          f'usvjax speed / PyTorch {row["speed_ratio"]:.2f}x')


def _append(path: str, rows: list[dict]) -> None:
  new = not os.path.exists(path)
  with open(path, 'a', newline='') as f:
    writer = csv.DictWriter(f, COLUMNS)
    if new:
      writer.writeheader()
    for row in rows:
      writer.writerow({k: (f'{v:.4g}' if isinstance(v, float) else v) for k, v in row.items()})


def main(argv):
  del argv
  import torch  # pylint: disable=g-import-not-at-top  # Only for its version.
  unknown = set(CASES.value) - set(BACKBONES) - {'flanet'}
  if unknown or set(MODES.value) - {'inference', 'training'}:
    common.fail(ValueError(f'--cases takes {list(BACKBONES) + ["flanet"]} (not '
                           f'{sorted(unknown)}), --modes inference and/or training.'))
  xla_flags = os.environ.get('XLA_FLAGS', '')
  print(f'usvjax (jax {jax.__version__}, XLA_FLAGS={xla_flags!r}) against PyTorch '
        f'{torch.__version__} ({THREADS.value} threads), median of {REPEATS.value} '
        'interleaved calls:', flush=True)
  worker = TorchSide(REFERENCE_PYTHON.value, THREADS.value)
  rows = []
  try:
    for case in CASES.value:
      for mode in MODES.value:
        row = dict(_measure(case, mode, worker), label=LABEL.value, xla_flags=xla_flags,
                   pointwise_matmul=POINTWISE.value,
                   repeats=REPEATS.value, jax=jax.__version__, torch=torch.__version__,
                   threads=THREADS.value)
        print('  ' + _describe(row), flush=True)
        rows.append(row)
  finally:
    worker.close()
  if CSV.value:
    _append(CSV.value, rows)
    print(f'appended {len(rows)} rows to {CSV.value}')


if __name__ == '__main__':
  app.run(main, flags_parser=common.parse_flags)
