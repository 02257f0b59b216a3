r"""Forward-pass time of a backbone in usvjax (jit) and in its PyTorch reference, same run.

  python -m experiments.benchmark_backbone [--arch=res2net50_26w_4s] [--size=352] [--batch=1]

Both run in eval mode on the CPU with the same weights; times are the median of --repeats
runs after --warmup runs (compilation excluded and reported separately). Needs the test
requirements (torch, torchvision, timm).
"""
import time

import jax
import jax.numpy as jnp
import torch
from absl import app
from absl import flags

from experiments import common
from usvjax.models.backbones import convert
from usvjax.models.backbones import resnet

ARCH = flags.DEFINE_enum('arch', 'res2net50_26w_4s', sorted(resnet.ARCHITECTURES), 'Backbone.')
SIZE = flags.DEFINE_integer('size', 352, 'Input height and width.')
BATCH = flags.DEFINE_integer('batch', 1, 'Batch size.')
WARMUP = flags.DEFINE_integer('warmup', 3, 'Untimed runs.')
REPEATS = flags.DEFINE_integer('repeats', 10, 'Timed runs.')


def reference(arch: str) -> torch.nn.Module:
  if arch.startswith('res2net'):
    import timm  # pylint: disable=g-import-not-at-top
    return timm.create_model(arch, pretrained=False).eval()
  import torchvision  # pylint: disable=g-import-not-at-top
  return getattr(torchvision.models, arch)(weights=None).eval()


def main(argv):
  del argv
  torch_model = reference(ARCH.value)
  x = torch.randn(BATCH.value, 3, SIZE.value, SIZE.value)
  images = jnp.asarray(x.numpy().transpose(0, 2, 3, 1))
  model = resnet.ResNet(ARCH.value)
  variables = jax.jit(lambda x: model.init(jax.random.key(0), x, train=False))(images)
  variables, _ = convert.convert({k: v.numpy() for k, v in torch_model.state_dict().items()},
                                 variables)
  forward = jax.jit(lambda v, x: model.apply(v, x, train=False)['stride32'])
  start = time.perf_counter()
  compiled = forward.lower(variables, images).compile()
  compile_s = time.perf_counter() - start
  ours = common.median_seconds(lambda: compiled(variables, images).block_until_ready(),
                              WARMUP.value, REPEATS.value)
  with torch.no_grad():
    theirs = common.median_seconds(lambda: torch_model.forward_features(x) if hasattr(
        torch_model, 'forward_features') else torch_model(x), WARMUP.value, REPEATS.value)
  print(f'{ARCH.value} forward, {BATCH.value}x{SIZE.value}x{SIZE.value}, CPU '
        f'({jax.device_count()} JAX devices, torch threads {torch.get_num_threads()}):')
  print(f'  usvjax (jit): {ours * 1e3:.1f} ms   compile {compile_s:.1f} s')
  print(f'  PyTorch     : {theirs * 1e3:.1f} ms')
  print(f'  ratio usvjax / PyTorch: {ours / theirs:.2f}')


if __name__ == '__main__':
  app.run(main)
