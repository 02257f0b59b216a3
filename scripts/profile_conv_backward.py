r"""Where XLA:CPU loses to PyTorch in training: a 3x3 convolution of each ResNet-50 stage and
two of its 1x1 convolutions, each timed as its forward, its input gradient and its filter
gradient, JAX (jit, ``lax.conv_general_dilated``) against PyTorch (oneDNN), interleaved
medians, on the same CPU.

  python scripts/profile_conv_backward.py [--batch=4] [--size=224] [--repeats=7] \
      [--csv=docs/results/conv_backward_cpu.csv]

JAX's gradients are the compiled VJP of ``lax.conv_general_dilated`` (NHWC/HWIO, as Flax
lays them out); PyTorch's are ``torch.nn.grad.conv2d_input`` / ``conv2d_weight`` (NCHW, its
layout). The XLA_FLAGS of the run are recorded, so flag settings can be compared.
"""
import argparse
import csv
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch

# (name, spatial size at 224 px input, channels, kernel size).
STAGES = (('layer1', 56, 64, 3), ('layer2', 28, 128, 3), ('layer3', 14, 256, 3),
          ('layer4', 7, 512, 3), ('layer1', 56, 256, 1), ('layer3', 14, 1024, 1))


def _jax_calls(x: np.ndarray, w: np.ndarray) -> dict:
  conv = lambda x, w: jax.lax.conv_general_dilated(
      x, w, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC'))  # XLA's convolution.
  x, w = jnp.asarray(x), jnp.asarray(w)
  cotangent = conv(x, w)
  forward = jax.jit(conv)
  input_grad = jax.jit(lambda w, g: jax.vjp(lambda x: conv(x, w), x)[1](g)[0])
  filter_grad = jax.jit(lambda x, g: jax.vjp(lambda w: conv(x, w), w)[1](g)[0])
  return {'forward': lambda: forward(x, w).block_until_ready(),
          'input_gradient': lambda: input_grad(w, cotangent).block_until_ready(),
          'filter_gradient': lambda: filter_grad(x, cotangent).block_until_ready()}


def _torch_calls(x: np.ndarray, w: np.ndarray) -> dict:
  x = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
  w = torch.from_numpy(w.transpose(3, 2, 0, 1).copy())
  pad = w.shape[-1] // 2
  g = torch.nn.functional.conv2d(x, w, padding=pad)

  def no_grad(fn):
    def call():
      with torch.no_grad():
        fn()
    return call
  return {'forward': no_grad(lambda: torch.nn.functional.conv2d(x, w, padding=pad)),
          'input_gradient': no_grad(lambda: torch.nn.grad.conv2d_input(x.shape, w, g,
                                                                       padding=pad)),
          'filter_gradient': no_grad(lambda: torch.nn.grad.conv2d_weight(x, w.shape, g,
                                                                         padding=pad))}


def _seconds(call) -> float:
  start = time.perf_counter()
  call()
  return time.perf_counter() - start


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--batch', type=int, default=4)
  parser.add_argument('--size', type=int, default=224, help='network input size')
  parser.add_argument('--repeats', type=int, default=7)
  parser.add_argument('--threads', type=int, default=os.cpu_count() or 1)
  parser.add_argument('--csv', default='')
  args = parser.parse_args()
  torch.set_num_threads(args.threads)
  rng = np.random.default_rng(0)
  rows = []
  xla_flags = os.environ.get('XLA_FLAGS', '')
  print(f'Convolutions, batch {args.batch}, XLA_FLAGS={xla_flags!r}, torch threads '
        f'{args.threads}; JAX ms / PyTorch ms (PyTorch / JAX):')
  for stage, spatial, channels, k in STAGES:
    spatial = spatial * args.size // 224
    x = rng.standard_normal((args.batch, spatial, spatial, channels), np.float32)
    w = rng.standard_normal((k, k, channels, channels), np.float32) / (k * channels ** 0.5)
    ours, theirs = _jax_calls(x, w), _torch_calls(x, w)
    gflop = 2 * args.batch * spatial**2 * k * k * channels**2 / 1e9
    for kind in ours:
      ours[kind](), theirs[kind]()  # Compile / warm up.
      times = [(_seconds(ours[kind]), _seconds(theirs[kind])) for _ in range(args.repeats)]
      jax_s, torch_s = (statistics.median(t) for t in zip(*times))
      rows.append(dict(xla_flags=xla_flags, stage=stage, kernel=k, spatial=spatial,
                       channels=channels, batch=args.batch, kind=kind, gflop=f'{gflop:.3f}',
                       jax_ms=f'{jax_s * 1e3:.2f}', torch_ms=f'{torch_s * 1e3:.2f}',
                       speed_ratio=f'{torch_s / jax_s:.2f}'))
      print(f'  {stage} {k}x{k} {spatial}x{spatial}x{channels} {kind:16s} {jax_s * 1e3:7.2f} / '
            f'{torch_s * 1e3:7.2f} ms ({torch_s / jax_s:.2f}x; JAX {gflop / jax_s:.0f} '
            f'GFLOP/s)', flush=True)
  if args.csv:
    new = not os.path.exists(args.csv)
    with open(args.csv, 'a', newline='') as f:
      writer = csv.DictWriter(f, list(rows[0]))
      if new:
        writer.writeheader()
      writer.writerows(rows)


if __name__ == '__main__':
  main()
