r"""Where a training step's (or a forward pass's) time goes under XLA:CPU: it is traced with
``jax.profiler`` and its executed operations (thunks: convolution and matmul fusions,
element-wise fusions, copies) are grouped by kind, with the largest ones listed and what
they compute (from the compiled HLO).

  python scripts/profile_train_step.py [--case=resnet50] [--batch=2] [--size=224] \
      [--mode=training] [--steps=3] [--nopointwise_matmul] \
      [--csv=docs/results/step_profile_cpu.csv --label=NAME]

The step is benchmark_torch's training step of ``--case``: a backbone (resnet50,
res2net50_26w_4s: train-mode BatchNorm, loss mean(features^2), SGD with momentum) or
``flanet`` (the released design's own train step on clips of 3 frames); ``--mode=inference``
traces benchmark_torch's inference call instead (eval mode, --batch images or clips). Times are summed over the traced steps and divided
by their number; operations running at the same time on different cores both count, so
the column adds up to CPU time, not wall time. With --csv, one row per kind of operation
(``level`` = kind) and one per largest operation (``level`` = operation, --top of them,
with what it computes).
"""
import argparse
import collections
import csv
import glob
import gzip
import json
import os
import re
import sys
import tempfile

import jax
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from experiments import benchmark_torch  # pylint: disable=wrong-import-position
from usvjax.models.backbones import pointwise  # pylint: disable=wrong-import-position

_SKIP = ('Pjit', 'PjitFunction', 'CommonPjRt', '$', 'end: ', 'Handle', 'Wait', 'Allocate',
         'Parse', 'Python', 'Thunk')


def _kind(name: str) -> str:
  """'ynn_fusion.12' -> 'ynn_fusion' (the operation's kind, without its number)."""
  return re.sub(r'[.]\d+$', '', name)


def _op_times(trace_dir: str) -> dict[str, float]:
  path = glob.glob(os.path.join(trace_dir, '**', '*.trace.json.gz'), recursive=True)[-1]
  with gzip.open(path) as f:
    events = json.load(f)['traceEvents']
  out = collections.Counter()
  for event in events:
    if event.get('ph') == 'X' and not event['name'].startswith(_SKIP):
      out[event['name']] += event['dur'] / 1e6
  return out


def _describe(hlo: str, name: str) -> str:
  """What fusion ``name`` computes: its main operations (convolutions, dots, reductions) and
  its operands' and result's shapes, e.g. 'convolution: f32[1,14,14,2048], f32[3,3,2048,1024]
  -> f32[1,14,14,1024]'."""
  match = re.search(rf'\n\s*%?{re.escape(name)} = [^\n]*calls=%?([\w.\-]+)', hlo)
  if not match:
    return ''
  body = re.search(rf'\n%?{re.escape(match.group(1))} \(([^\n]*)\) -> ([^ ]+) {{\n(.*?)\n}}',
                   hlo, re.S)
  if not body:
    return ''
  params, result, code = body.groups()
  ops = sorted(set(re.findall(r' (convolution|dot|reduce|reduce-window)\(', code)))
  shapes = ', '.join(re.findall(r': (\w+\[[^\]]*\])', params))
  return f'{"/".join(ops) or "elementwise"}: {shapes} -> {result}'


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--case', default='resnet50',
                      choices=list(benchmark_torch.BACKBONES) + ['flanet'])
  parser.add_argument('--batch', type=int, default=2)
  parser.add_argument('--size', type=int, default=224)
  parser.add_argument('--mode', default='training', choices=('training', 'inference'))
  parser.add_argument('--steps', type=int, default=3)
  parser.add_argument('--pointwise_matmul', action=argparse.BooleanOptionalAction,
                      default=True)
  parser.add_argument('--top', type=int, default=15)
  parser.add_argument('--csv', default='')
  parser.add_argument('--label', default='', help='Names the code or setting in the CSV.')
  args = parser.parse_args()
  with pointwise.as_matmuls(args.pointwise_matmul):
    if args.case == 'flanet':
      flags.FLAGS(['profile_train_step', f'--pointwise_matmul={args.pointwise_matmul}'])
      timed = benchmark_torch._flanet_call(args.mode, args.size, args.batch, 3)  # pylint: disable=protected-access
    else:
      timed = benchmark_torch._backbone_call(args.case, args.mode, args.size, args.batch)  # pylint: disable=protected-access
  timed.call()
  with tempfile.TemporaryDirectory() as trace_dir:
    jax.profiler.start_trace(trace_dir)
    for _ in range(args.steps):
      timed.call()
    jax.profiler.stop_trace()
    times = _op_times(trace_dir)
  hlo = timed.hlo
  total = sum(times.values()) / args.steps
  by_kind = collections.Counter()
  for name, seconds in times.items():
    by_kind[_kind(name)] += seconds / args.steps
  print(f'{args.case} {args.mode}, batch {args.batch}, {args.size} px, pointwise_matmul='
        f'{args.pointwise_matmul}: {total:.3f} s of operations per call')
  setting = {'label': args.label, 'case': args.case, 'mode': args.mode, 'batch': args.batch,
             'size': args.size, 'pointwise_matmul': args.pointwise_matmul}
  rows = []
  for kind, seconds in by_kind.most_common():
    print(f'  {kind:32s} {seconds:7.3f} s  {100 * seconds / total:5.1f}%')
    rows.append(dict(setting, level='kind', name=kind, computes='',
                     seconds_per_call=round(seconds, 4), share=round(seconds / total, 4)))
  print('largest operations:')
  for name, seconds in times.most_common(args.top):
    print(f'  {name:32s} {seconds / args.steps:7.3f} s  {_describe(hlo, name)}')
    rows.append(dict(setting, level='operation', name=name, computes=_describe(hlo, name),
                     seconds_per_call=round(seconds / args.steps, 4),
                     share=round(seconds / args.steps / total, 4)))
  if args.csv:
    new = not os.path.exists(args.csv)
    with open(args.csv, 'a', newline='') as f:
      writer = csv.DictWriter(f, fieldnames=list(rows[0]))
      if new:
        writer.writeheader()
      writer.writerows(rows)


if __name__ == '__main__':
  main()
