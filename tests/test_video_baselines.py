"""Video-network baselines (issue 20.6): torchvision parity and parameter counts of the 3-D
ResNets, TSM's shift and ImageNet import (basic and bottleneck blocks), padding that changes
nothing (inference and training BatchNorm), every frame and the frames' order changing the
output, gradients reaching every parameter, and a few steps through the trainer."""
import importlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import helpers
from usvjax import models
from usvjax import tasks
from usvjax.core import run as run_lib
from usvjax.core import state as state_lib
from usvjax.core import train
from usvjax.models import c3d
from usvjax.models import timesformer
from usvjax.models import tsm
from usvjax.models import video_layers
from usvjax.models import video_resnet
from usvjax.models.backbones import video_convert

TORCHVISION_NAMES = {'r3d_18': 'R3D_18', 'mc3_18': 'MC3_18', 'r2plus1d_18': 'R2Plus1D_18'}
SHALLOW = dict(width=0.0625, depths=(1, 1, 1, 1))
# Tiny models with the parts that meet padding: temporal kernels and strides (R(2+1)D's
# stem and blocks; R3D and MC3 use the same masking with 3x3x3 kernels), the 2-D stem,
# bottleneck blocks and the shift (TSM), C3D's ceil-mode pools, TimeSformer's attention.
TINY = {
    'r2plus1d': lambda: video_resnet.VideoResNet(arch='r2plus1d_18', **SHALLOW),
    'tsm50': lambda: tsm.TSM(arch='resnet50', dropout=0.0, **SHALLOW),
    'c3d': lambda: c3d.C3D(width=0.0625, fc=(8,), dropout=0.0),
    'timesformer': lambda: timesformer.TimeSformer(patch=4, dim=16, depth=2, heads=2,
                                                   num_frames=16),
}
LENGTHS = (1, 3, 6)  # The odd one (3) is also run alone: temporal strides keep ceil(n / 2).


def _torch_reference(torch, module):
  """``module`` with non-trivial BatchNorm parameters and running statistics, eval mode."""
  torch.manual_seed(0)
  generator = torch.Generator().manual_seed(1)
  with torch.no_grad():
    for m in module.modules():
      if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):  # pylint: disable=protected-access
        m.weight.uniform_(0.5, 1.5, generator=generator)
        m.bias.uniform_(-0.2, 0.2, generator=generator)
        m.running_mean.uniform_(-0.2, 0.2, generator=generator)
        m.running_var.uniform_(0.5, 1.5, generator=generator)
  return module.eval()


def _convert(torch, module, trunk, x, imagenet_2d=False):
  """The trunk's variables from ``module``'s state dict; every trunk variable is filled."""
  valid = np.ones(x.shape[:2], bool)
  shapes = jax.eval_shape(lambda: trunk.init(jax.random.key(0), x, valid, train=False))
  empty = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
  state = {k: v.numpy() for k, v in module.state_dict().items()}
  variables, report = video_convert.convert_trunk(state, empty, imagenet_2d)
  assert not report.missing and not report.mismatched, report.summary()
  assert all(k.startswith('fc.') or k.endswith('num_batches_tracked') for k in report.unused)
  del torch
  return variables


def _relative_error(ours, theirs):
  return float(np.linalg.norm(ours - theirs) / np.linalg.norm(theirs))


@pytest.mark.parametrize('arch', sorted(TORCHVISION_NAMES))
def test_full_size_parameter_count_is_torchvisions(arch):
  torchvision = pytest.importorskip('torchvision')
  weights = getattr(torchvision.models.video, f'{TORCHVISION_NAMES[arch]}_Weights')
  model = video_resnet.VideoResNet(num_classes=400, arch=arch)
  batch = {'frames': jnp.zeros((1, 16, 112, 112, 3)), 'valid': jnp.ones((1, 16), bool)}
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), batch, train=False))
  count = sum(x.size for x in jax.tree.leaves(shapes['params']))
  assert count == weights.KINETICS400_V1.meta['num_params']  # 33.4M, 11.7M, 31.5M.


@pytest.mark.parametrize('arch', sorted(TORCHVISION_NAMES))
def test_imported_video_resnet_matches_torchvision(arch):
  torch = pytest.importorskip('torch')
  torchvision = pytest.importorskip('torchvision')
  module = _torch_reference(torch, getattr(torchvision.models.video, arch)())
  x = torch.randn(1, 3, 4, 32, 32, generator=torch.Generator().manual_seed(2))
  with torch.no_grad():
    h = module.stem(x)
    for stage in range(1, 5):
      h = getattr(module, f'layer{stage}')(h)
  theirs = h.numpy().transpose(0, 2, 3, 4, 1)
  frames = x.numpy().transpose(0, 2, 3, 4, 1)
  trunk = video_resnet.VideoResNetTrunk(**video_resnet.ARCHITECTURES[arch])
  variables = _convert(torch, module, trunk, frames)
  ours, valid = jax.jit(lambda v, x: trunk.apply(v, x, np.ones((1, 4), bool), train=False))(
      variables, frames)
  assert ours.shape == theirs.shape and valid.shape == ours.shape[:2]
  assert _relative_error(np.asarray(ours), theirs) < 1e-5


@pytest.mark.parametrize('arch', ['resnet18', 'resnet50'])  # Basic and bottleneck blocks.
def test_tsm_without_shift_is_the_imported_imagenet_resnet_on_every_frame(arch):
  torch = pytest.importorskip('torch')
  torchvision = pytest.importorskip('torchvision')
  module = _torch_reference(torch, getattr(torchvision.models, arch)())
  x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(3))  # 3 frames.
  with torch.no_grad():
    h = module.maxpool(module.relu(module.bn1(module.conv1(x))))
    for stage in range(1, 5):
      h = getattr(module, f'layer{stage}')(h)
  theirs = h.numpy().transpose(0, 2, 3, 1)[None]
  frames = x.numpy().transpose(0, 2, 3, 1)[None]
  trunk = tsm.trunk(arch, shift_div=0)
  variables = _convert(torch, module, trunk, frames, imagenet_2d=True)
  ours, _ = jax.jit(lambda v, x: trunk.apply(v, x, np.ones((1, 3), bool), train=False))(
      variables, frames)
  assert _relative_error(np.asarray(ours), theirs) < 1e-5


def test_temporal_shift_moves_an_eighth_of_the_channels_each_way():
  x = jnp.arange(1, 4, dtype=jnp.float32)[None, :, None, None, None] * jnp.ones((1, 3, 1, 1, 16))
  y = video_resnet.temporal_shift(x, 8)[0, :, 0, 0]  # [T=3, C=16], frame t holds t + 1.
  np.testing.assert_array_equal(y[:, :2], [[2, 2], [3, 3], [0, 0]])  # From the next frame.
  np.testing.assert_array_equal(y[:, 2:4], [[0, 0], [1, 1], [2, 2]])  # From the previous.
  np.testing.assert_array_equal(y[:, 4:], x[0, :, 0, 0, 4:])


def test_tsm_shifts_the_residual_branch_only():
  """Residual shift (TSM Fig. 3b): the block's convolutions see shifted frames, its
  shortcut the unshifted input."""
  x = jnp.asarray(np.random.default_rng(0).uniform(size=(1, 3, 4, 4, 16)), jnp.float32)
  valid = np.ones((1, 3), bool)
  shifted = video_resnet.BasicBlock('2d', planes=16, mid=16, shift_div=8)
  plain = video_resnet.BasicBlock('2d', planes=16, mid=16)
  variables = _perturbed(shifted.init(jax.random.key(0), x, valid, False))
  out, _ = shifted.apply(variables, x, valid, False)
  assert not np.allclose(out, plain.apply(variables, x, valid, False)[0], atol=1e-3)
  silent = jax.tree.map(np.zeros_like, variables['params']['conv2_1'])  # Residual output 0.
  variables['params']['conv2_1'] = silent
  out, _ = shifted.apply(variables, x, valid, False)
  np.testing.assert_allclose(out, x, atol=1e-6)  # relu(0 + x) for x >= 0: not shifted.


def test_masked_batch_norm_is_flax_batch_norm_on_the_real_frames():
  """Train mode: the output and running averages of Flax's BatchNorm over the real frames
  alone; padded frames come out zero."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((2, 5, 3, 3, 4)) * 2 + 1, jnp.float32)
  valid = np.array([[True] * 5, [True, True, False, False, False]])
  ours = video_layers.MaskedBatchNorm()
  variables = ours.init(jax.random.key(0), x, valid, True)
  out, updates = ours.apply(variables, x, valid, True, mutable=['batch_stats'])
  real = jnp.concatenate([x[0], x[1, :2]])  # The 7 real frames as one batch.
  flax_norm = nn.BatchNorm(use_running_average=False, momentum=0.9, epsilon=1e-5)
  expected, flax_updates = flax_norm.apply(flax_norm.init(jax.random.key(0), real), real,
                                           mutable=['batch_stats'])
  np.testing.assert_allclose(out[0], expected[:5], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(out[1, :2], expected[5:], rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(out[1, 2:], 0.0)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               updates['batch_stats'], flax_updates['batch_stats'])


def _perturbed(variables, seed=0):
  """Every parameter moved by noise (so no bias or zero-initialised layer hides padding),
  non-trivial running statistics."""
  rng = np.random.default_rng(seed)
  out = {'params': jax.tree.map(
      lambda v: v + 0.1 * rng.standard_normal(v.shape).astype(v.dtype), variables['params'])}
  if 'batch_stats' in variables:
    out['batch_stats'] = jax.tree_util.tree_map_with_path(
        lambda p, v: (rng.uniform(0.5, 1.5, v.shape) if p[-1].key == 'var'
                      else 0.2 * rng.standard_normal(v.shape)).astype(v.dtype),
        variables['batch_stats'])
  return out


def _padded_batch(length, seed=0):
  """Videos of ``LENGTHS`` frames padded to ``length`` with garbage, and the videos alone."""
  rng = np.random.default_rng(seed)
  videos = [rng.uniform(size=(n, 16, 16, 1)).astype(np.float32) for n in LENGTHS]
  frames = np.full((len(LENGTHS), length, 16, 16, 1), 7.0, np.float32)
  for i, video in enumerate(videos):
    frames[i, :len(video)] = video
  valid = np.arange(length)[None] < np.array(LENGTHS)[:, None]
  return {'frames': frames, 'valid': valid}, videos


@pytest.mark.parametrize('name', sorted(TINY))
def test_padding_changes_nothing(name):
  """Inference: each video of a padded batch gets the logits of the video run alone.
  Training: the logits, the updated BatchNorm statistics and the loss are the same whether
  the batch is padded to 8 or to 16 frames."""
  model = TINY[name]()
  batch8, videos = _padded_batch(8)
  batch16, _ = _padded_batch(16)
  variables = _perturbed(jax.jit(lambda b: model.init(jax.random.key(0), b, train=False))(batch8))

  infer = jax.jit(lambda b: model.apply(variables, b, train=False)['logits'])
  alone = infer({'frames': videos[1][None], 'valid': np.ones((1, LENGTHS[1]), bool)})
  np.testing.assert_allclose(infer(batch8)[1], alone[0], rtol=1e-4, atol=1e-5)

  @jax.jit
  def train_step(batch):
    outputs, updates = model.apply(variables, batch, train=True, mutable=['batch_stats'],
                                   rngs={'dropout': jax.random.key(1)})
    loss = -jnp.mean(jax.nn.log_softmax(outputs['logits'])[:, 1])
    return outputs['logits'], updates.get('batch_stats', {}), loss

  # Sums over 8 or 16 frames add the same values in another order: float32 rounding.
  (logits8, stats8, loss8), (logits16, stats16, loss16) = train_step(batch8), train_step(batch16)
  np.testing.assert_allclose(logits8, logits16, rtol=1e-3, atol=1e-4)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
               stats8, stats16)
  np.testing.assert_allclose(loss8, loss16, rtol=1e-4)


@pytest.mark.parametrize('name', sorted(TINY))
def test_every_frame_and_their_order_change_the_output_and_every_parameter_trains(name):
  """Each real frame of a video changes its logits, and so does reversing the frames (these
  models see time: temporal convolutions, TSM's shift, TimeSformer's time embeddings;
  without the shift TSM would be a frame CNN averaged over time, blind to order); the
  train-mode loss's gradient reaches every parameter."""
  model = TINY[name]()
  num_frames, length = 5, 8
  rng = np.random.default_rng(0)
  video = rng.uniform(size=(num_frames, 16, 16, 1)).astype(np.float32)
  variants = [video, video[::-1]] + [video.copy() for _ in range(num_frames)]
  for t in range(num_frames):
    variants[2 + t][t] = rng.uniform(size=video.shape[1:])
  frames = np.zeros((len(variants), length, 16, 16, 1), np.float32)
  frames[:, :num_frames] = variants
  valid = np.broadcast_to(np.arange(length) < num_frames, frames.shape[:2])
  batch = {'frames': frames, 'valid': valid}
  variables = _perturbed(jax.jit(lambda b: model.init(jax.random.key(0), b, train=False))(batch))
  logits = np.asarray(jax.jit(lambda b: model.apply(variables, b, train=False)['logits'])(batch))
  change = np.abs(logits[1:] - logits[0]).max(axis=-1)  # Reversed, then frame 0, 1, ...
  assert (change > 1e-4 * np.abs(logits[0]).max()).all(), change

  labels = np.arange(len(variants)) % 2

  def loss(params):
    outputs, _ = model.apply({**variables, 'params': params}, batch, train=True,
                             mutable=['batch_stats'], rngs={'dropout': jax.random.key(1)})
    log_probs = jax.nn.log_softmax(outputs['logits'])
    return -jnp.mean(jnp.take_along_axis(log_probs, labels[:, None], axis=1))

  grads = jax.jit(jax.grad(loss))(variables['params'])
  norms = {jax.tree_util.keystr(path): float(jnp.linalg.norm(g))
           for path, g in jax.tree_util.tree_leaves_with_path(grads)}
  dead = {path for path, norm in norms.items() if norm < 1e-6 * max(norms.values())}
  # TimeSformer's key biases, kept as released, shift each query's softmax by a constant.
  assert dead == {p for p in norms if "['key']['bias']" in p}, dead


# Parameters of the ``paper`` configs (2 classes): the torchvision trunks (R3D-18 33,166,272,
# MC3-18 11,490,240, R(2+1)D-18 31,300,125, ResNet-50 23,508,032) and a 2-class classifier;
# C3D_BN and the ViT-S/16-sized TimeSformer (8 time embeddings) as built.
PAPER_COUNTS = {'video_resnet:paper,r3d': 33_167_298, 'video_resnet:paper,mc3': 11_491_266,
                'video_resnet:paper,r2plus1d': 31_301_151, 'tsm:paper': 23_512_130,
                'c3d:paper': 32_391_618, 'timesformer:paper': 30_549_122}
VARIANTS = ['video_resnet:demo,mc3', 'video_resnet:tiny,r2plus1d', 'tsm:demo', 'tsm:tiny',
            'c3d:demo', 'c3d:tiny', 'timesformer:demo', 'timesformer:tiny']


@pytest.mark.parametrize('name', sorted(PAPER_COUNTS) + VARIANTS)
def test_every_config_builds_its_model(name):
  """Each variant's model takes its config's batch (``jax.eval_shape``: nothing computed);
  the ``paper`` ones have the reference parameter counts."""
  module, variant = name.split(':')
  config = importlib.import_module(f'configs.{module}').get_config(variant)
  model = models.create_model(config.model)
  batch = state_lib.init_batch(config, tasks.batch_spec(config, True))
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), batch, train=False))
  logits = jax.eval_shape(lambda v: model.apply(v, batch, train=False)['logits'], shapes)
  assert logits.shape == (1, 2)
  if name in PAPER_COUNTS:
    assert sum(x.size for x in jax.tree.leaves(shapes['params'])) == PAPER_COUNTS[name]


def test_trains_through_the_trainer(data_dir, tmp_path):
  """C3D's ``tiny`` config (one length bucket: one compile per step function) trains two
  steps on 4 devices and evaluates. To the trainer the other baselines are the same kind
  of model (a registry entry whose config builds it, tested above; ``MaskedBatchNorm``,
  dropout; TimeSformer has neither, like the CNN-LSTM), so one run covers them within the
  suite's time."""
  config = helpers.load_config('c3d', data_dir, total_steps=2, eval_every=2,
                               checkpoint_every=2, **{'input.length_buckets': (8,)})
  state, metrics = train.train_and_evaluate(run_lib.resolve(config), str(tmp_path))
  assert {'accuracy', 'auc'} <= set(metrics) and int(state.step) == 2
  assert all(np.isfinite(v).all() for v in helpers.flat_local(state.params).values())
