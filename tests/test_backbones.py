"""Backbones: parameter counts, parity with torchvision/timm, batch-statistics updates."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from usvjax.models.backbones import convert
from usvjax.models.backbones import resnet

torch = pytest.importorskip('torch')
torchvision = pytest.importorskip('torchvision')
timm = pytest.importorskip('timm')

# Trunk parameters (the ImageNet classifier excluded) of the PyTorch references.
REFERENCE_COUNTS = {'resnet18': 11_176_512, 'resnet34': 21_284_672, 'resnet50': 23_508_032,
                    'res2net50_26w_4s': 23_650_120}
STAGES = ('stride2', 'stride4', 'stride8', 'stride16', 'stride32')


def _reference(arch):
  torch.manual_seed(0)
  if arch.startswith('res2net'):
    model = timm.create_model(arch, pretrained=False)
  else:
    model = getattr(torchvision.models, arch)(weights=None)
  generator = torch.Generator().manual_seed(1)
  with torch.no_grad():  # Non-trivial norm parameters and statistics.
    for module in model.modules():
      if isinstance(module, torch.nn.BatchNorm2d):
        module.weight.uniform_(0.5, 1.5, generator=generator)
        module.bias.uniform_(-0.2, 0.2, generator=generator)
        module.running_mean.uniform_(-0.2, 0.2, generator=generator)
        module.running_var.uniform_(0.5, 1.5, generator=generator)
  return model


def _torch_stages(model, x):
  act = model.act1 if hasattr(model, 'act1') else model.relu
  out = {'stride2': act(model.bn1(model.conv1(x)))}
  h = model.maxpool(out['stride2'])
  for stage in range(1, 5):
    h = getattr(model, f'layer{stage}')(h)
    out[f'stride{2 ** (stage + 1)}'] = h
  return {k: v.detach().numpy().transpose(0, 2, 3, 1) for k, v in out.items()}


def _flax_variables(arch, model, images):
  """The Flax ResNet and its variables, every one converted from ``model``: the
  initialisation is only a structure (``jax.eval_shape``), so nothing is compiled for it."""
  flax_model = resnet.ResNet(arch)
  shapes = jax.eval_shape(lambda x: flax_model.init(jax.random.key(0), x, train=False), images)
  variables, report = convert.convert({k: v.numpy() for k, v in model.state_dict().items()},
                                      shapes)
  assert not report.missing and not report.mismatched, report.summary()
  assert all(k.startswith('fc.') or k.endswith('num_batches_tracked') for k in report.unused)
  return flax_model, variables


@pytest.mark.parametrize('arch', sorted(REFERENCE_COUNTS))
def test_full_size_parameter_count_matches_the_reference(arch):
  shapes = jax.eval_shape(lambda: resnet.ResNet(arch).init(
      jax.random.key(0), jnp.zeros((1, 224, 224, 3)), train=False))
  assert sum(x.size for x in jax.tree.leaves(shapes['params'])) == REFERENCE_COUNTS[arch]
  outputs = jax.eval_shape(lambda: resnet.ResNet(arch).apply(
      jax.tree.map(jnp.zeros_like, shapes), jnp.zeros((1, 224, 224, 3)), train=False))
  assert [outputs[s].shape[1] for s in STAGES] == [112, 56, 28, 14, 7]
  assert outputs['stride32'].shape[-1] == (512 if arch in ('resnet18', 'resnet34') else 2048)


@pytest.mark.parametrize('arch', ['resnet18', 'resnet50', 'res2net50_26w_4s'])
def test_every_stage_matches_pytorch_in_eval_mode(arch):
  model = _reference(arch).eval()
  x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
  images = x.numpy().transpose(0, 2, 3, 1)
  flax_model, variables = _flax_variables(arch, model, images)
  ours = jax.jit(lambda v, x: flax_model.apply(v, x, train=False))(variables, images)
  theirs = _torch_stages(model, x)
  for stage in STAGES:
    error = np.linalg.norm(ours[stage] - theirs[stage]) / np.linalg.norm(theirs[stage])
    assert error < 1e-4, (stage, error)


def test_train_mode_batch_statistics_follow_pytorch():
  model = _reference('resnet18').train()
  x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(3))
  images = x.numpy().transpose(0, 2, 3, 1)
  flax_model, variables = _flax_variables('resnet18', model, images)
  before = {k: v.clone() for k, v in model.state_dict().items()}
  _torch_stages(model, x)  # One train-mode forward updates PyTorch's running statistics.
  _, updates = jax.jit(lambda v, x: flax_model.apply(v, x, train=True, mutable=['batch_stats']))(
      variables, images)
  stats = updates['batch_stats']
  after = model.state_dict()
  # Stem BatchNorm (n = 4 x 16 x 16 values per channel) and the last block's second one
  # (n = 4 x 1 x 1): the means agree; PyTorch's running variance uses the unbiased batch
  # variance, Flax's the biased one (the documented mapping).
  for torch_name, flax_stats, n in (('bn1', stats['bn1']['norm'], 4 * 16 * 16),
                                    ('layer4.1.bn2', stats['layer4_1']['bn2']['norm'], 4)):
    np.testing.assert_allclose(flax_stats['mean'], after[f'{torch_name}.running_mean'].numpy(),
                               rtol=1e-4, atol=1e-5)
    old = before[f'{torch_name}.running_var'].numpy()
    unbiased = (after[f'{torch_name}.running_var'].numpy() - 0.9 * old) / 0.1
    np.testing.assert_allclose(flax_stats['var'], 0.9 * old + 0.1 * unbiased * (n - 1) / n,
                               rtol=1e-4, atol=1e-5)


def test_group_norm_model_loads_the_convolutions_and_says_so():
  model = _reference('resnet18')
  flax_model = resnet.ResNet('resnet18', norm='group', nonlocal_stages=(3, 4))
  variables = jax.eval_shape(  # Shapes only: what is not converted is not looked at.
      lambda: flax_model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False))
  new, report = convert.convert({k: v.numpy() for k, v in model.state_dict().items()}, variables)
  assert any(k.endswith('running_mean') for k in report.unused)
  assert any('nonlocal3' in k for k in report.missing)  # Non-local blocks stay as initialised.
  np.testing.assert_allclose(new['params']['conv1']['kernel'],
                             model.conv1.weight.detach().numpy().transpose(2, 3, 1, 0))
  assert 'bn1.running_mean' in report.unused


def test_converted_checkpoint_named_in_a_config_initialises_training(data_dir, tmp_path):
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  import helpers  # pylint: disable=g-import-not-at-top
  from usvjax import models  # pylint: disable=g-import-not-at-top
  from usvjax.core import optim  # pylint: disable=g-import-not-at-top
  from usvjax.core import parallel  # pylint: disable=g-import-not-at-top
  from usvjax.core import state as state_lib  # pylint: disable=g-import-not-at-top
  from usvjax import tasks  # pylint: disable=g-import-not-at-top
  from safetensors.torch import save_file  # pylint: disable=g-import-not-at-top
  model = _reference('resnet18')
  # .safetensors: the command then runs without importing PyTorch (.pth reading is tested
  # in test_pth_and_safetensors_files_read_the_same).
  save_file(model.state_dict(), str(tmp_path / 'resnet18.safetensors'))
  converted = tmp_path / 'converted'
  result = subprocess.run(
      [sys.executable, '-m', 'experiments.convert_weights',
       f'--weights={tmp_path}/resnet18.safetensors',
       '--arch=resnet18', f'--output={converted}'], cwd=helpers.REPO, capture_output=True,
      text=True, check=False)
  assert result.returncode == 0, result.stdout + result.stderr
  # 122 tensors: 100 trunk tensors, 20 num_batches_tracked and the ImageNet classifier.
  assert 'loaded 100 tensors' in result.stdout and 'unused (22)' in result.stdout
  config = helpers.load_config('cnn_aver', data_dir, **{
      'model.backbone': 'resnet18', 'init.checkpoint': str(converted),
      'input.image_size': 32})
  state = state_lib.init_state(  # What the trainer does with config.init.
      models.create_model(config.model), optim.create_optimizer(config),
      state_lib.init_batch(config, tasks.batch_spec(config, True)), 0, parallel.create_mesh())
  state = state_lib.load_pretrained(state, config.init.checkpoint, config.init.target)
  kernel = helpers.flat_local(state.params)['encoder/backbone/layer2_0/conv1/kernel']
  np.testing.assert_array_equal(kernel,
                                model.layer2[0].conv1.weight.detach().numpy().transpose(2, 3, 1, 0))


def test_non_local_block_follows_the_embedded_gaussian_equations():
  rng = np.random.default_rng(0)
  x = rng.standard_normal((2, 3, 4, 6)).astype(np.float32)
  block = resnet.NonLocalBlock()
  variables = block.init(jax.random.key(0), x, train=False)
  params = jax.tree.map(lambda v: rng.standard_normal(v.shape).astype(np.float32) * 0.5,
                        variables['params'])
  out = block.apply({'params': params, 'batch_stats': variables['batch_stats']}, x, train=False)
  conv = lambda name, v: v @ params[name]['kernel'][0, 0] + params[name]['bias']  # 1x1 conv.
  flat = x.reshape(2, 12, 6)
  theta, phi, g = conv('theta', flat), conv('phi', flat), conv('g', flat)
  logits = np.einsum('bic,bjc->bij', theta, phi)
  attention = np.exp(logits - logits.max(-1, keepdims=True))
  attention /= attention.sum(-1, keepdims=True)
  wy = conv('W', attention @ g)
  norm = params['W_norm']['norm']  # Eval-mode BatchNorm with running mean 0, variance 1.
  expected = flat + wy / np.sqrt(1 + 1e-5) * norm['scale'] + norm['bias']
  np.testing.assert_allclose(np.asarray(out).reshape(2, 12, 6), expected, rtol=1e-4, atol=1e-4)
  # With the initial (zero) norm scale the block is the identity.
  np.testing.assert_allclose(block.apply(variables, x, train=False), x, atol=1e-6)


def test_tiny_width_group_norm_and_frozen_batch_norm_options():
  x = jnp.ones((2, 32, 32, 3))
  tiny = resnet.ResNet('resnet18', width=0.125, norm='group', groups=4, nonlocal_stages=(3, 4))
  variables = jax.jit(lambda x: tiny.init(jax.random.key(0), x, train=False))(x)
  assert 'batch_stats' not in variables and 'nonlocal4' in variables['params']
  out = jax.jit(lambda v, x: tiny.apply(v, x, train=True))(variables, x)
  assert out['stride32'].shape == (2, 1, 1, 64) and out['stride2'].shape == (2, 16, 16, 8)
  frozen = resnet.ResNet('resnet18', width=0.125, frozen_norm=True)
  variables = jax.jit(lambda x: frozen.init(jax.random.key(0), x, train=False))(x)
  _, updates = jax.jit(lambda v, x: frozen.apply(v, x, train=True, mutable=['batch_stats']))(
      variables, x * 3.0)
  jax.tree.map(np.testing.assert_array_equal, updates['batch_stats'], variables['batch_stats'])


def test_pth_and_safetensors_files_read_the_same(tmp_path):
  from safetensors.torch import save_file  # pylint: disable=g-import-not-at-top
  state = {k: v for k, v in _reference('resnet18').state_dict().items()
           if not k.endswith('num_batches_tracked')}
  torch.save({'state_dict': {f'module.{k}': v for k, v in state.items()}}, tmp_path / 'w.pth')
  save_file(state, str(tmp_path / 'w.safetensors'))
  from_pth = convert.load_state_dict(str(tmp_path / 'w.pth'))  # DataParallel prefix removed.
  from_safetensors = convert.load_state_dict(str(tmp_path / 'w.safetensors'))
  assert from_pth.keys() == from_safetensors.keys() == state.keys()
  for key, value in state.items():
    np.testing.assert_array_equal(from_pth[key], value.numpy())
    np.testing.assert_array_equal(from_safetensors[key], value.numpy())
  with pytest.raises(FileNotFoundError, match='nothing.pth'):
    convert.load_state_dict(str(tmp_path / 'nothing.pth'))
