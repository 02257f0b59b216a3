"""Every method's ``paper`` config builds at full size (``jax.eval_shape``: shapes only,
nothing computed); the segmentation encoders have their reference backbones' parameter
counts (torchvision, timm); the classification models have the counts of their papers'
architectures: ResNet-18 as torchvision counts it, plus the layers the papers describe,
counted by hand here (the papers state no totals)."""
import glob
import importlib
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import helpers
from usvjax import models
from usvjax import runners
from usvjax import tasks
from usvjax.core import state
from usvjax.runners import two_stage


def _paper_configs() -> list[str]:
  """Every ``configs/<method>.py`` with a ``paper`` variant."""
  names = []
  for path in sorted(glob.glob(os.path.join(helpers.REPO, 'configs', '*.py'))):
    name = os.path.basename(path)[:-3]
    if name not in ('__init__', 'common') and "'paper'" in open(path).read():
      names.append(name)
  return names


def _sub_configs(config) -> dict:
  """{name: config} of every model a run of ``config`` trains."""
  if config.runner == 'two_stage':
    return {'frame_cnn': two_stage.frame_cnn_config(config), 'lstm': config}
  if config.runner == 'pretrain_finetune':
    return {'pretrain': runners.pretrain_config(config), 'model': config}
  return {'model': config}


class _Cached:
  """A feature cache's ``features`` entry: [T, dim] float32 vectors."""

  def __init__(self, dim: int):
    self.shape = (None, dim)


def _abstract_params(config, features: dict | None = None) -> dict:
  """The model's params (shapes only) for one example of its training batch."""
  model = models.create_model(config.model)
  batch = state.init_batch(config, tasks.batch_spec(config, True, features))
  key = jax.random.key(0)
  variables = jax.eval_shape(
      lambda: model.init({'params': key, 'dropout': key}, batch, train=False))
  return variables['params']


def _count(tree) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def _reference_backbone_count(name: str) -> int:
  """Parameters of the reference implementation of backbone ``name`` (torchvision's
  ResNets, timm's Res2Net), without its 1000-class fc layer."""
  if name.startswith('res2net'):
    module = pytest.importorskip('timm').create_model(name, pretrained=False)
  else:
    module = getattr(pytest.importorskip('torchvision').models, name)()
  return sum(p.numel() for n, p in module.named_parameters() if not n.startswith('fc.'))


@pytest.fixture(scope='module')
def resnet18_count() -> int:
  return _reference_backbone_count('resnet18')


# The segmentation methods' image encoders (sub-module 'encoder') are plain backbones.
_SEGMENTATION_ENCODERS = {'flanet': 'res2net50_26w_4s', 'dsanet': 'res2net50_26w_4s',
                          'stpfnet': 'resnet50'}


@pytest.mark.parametrize('method', _paper_configs())
def test_every_paper_config_builds(method):
  config = importlib.import_module(f'configs.{method}').get_config('paper')
  for name, sub in _sub_configs(config).items():
    features = {'features': _Cached(512)} if name == 'lstm' else None
    params = _abstract_params(sub, features)
    assert _count(params) > 0, name
  if method in _SEGMENTATION_ENCODERS:
    assert config.model.backbone == _SEGMENTATION_ENCODERS[method]
    assert _count(params['encoder']) == _reference_backbone_count(config.model.backbone)


def _dense(n_in: int, n_out: int) -> int:
  return n_in * n_out + n_out


def _nonlocal(c: int) -> int:
  """Embedded-Gaussian non-local block: theta, phi, g (C -> C/2), W (C/2 -> C), W's norm."""
  return 3 * _dense(c, c // 2) + _dense(c // 2, c) + 2 * c


def test_frame_cnn_is_resnet18_and_three_fully_connected_layers(resnet18_count):
  """Cui et al. Sec. 3.2: ResNet-18's 512-d features, then 512 -> 256 -> 128 -> 2."""
  params = _abstract_params(two_stage.frame_cnn_config(
      importlib.import_module('configs.cnn_lstm').get_config('paper')))
  assert resnet18_count == 11_176_512
  assert _count(params['encoder']['backbone']) == resnet18_count
  assert _count(params) == resnet18_count + _dense(512, 256) + _dense(256, 128) + _dense(128, 2)


def test_cnn_lstm_is_an_lstm_of_256_units_on_512_features():
  """Sec. 4.2: input 512, hidden 256. PyTorch's nn.LSTM has two bias vectors per gate
  (4 x 256 more); Flax's cell one, which is the same function."""
  torch = pytest.importorskip('torch')
  config = importlib.import_module('configs.cnn_lstm').get_config('paper')
  params = _abstract_params(config, {'features': _Cached(512)})
  theirs = sum(p.numel() for p in torch.nn.LSTM(512, 256).parameters())
  assert _count(params['lstm']) == theirs - 4 * 256
  assert _count(params) == theirs - 4 * 256 + _dense(256, 2)


@pytest.mark.parametrize('variant, extra', [
    ('paper', _nonlocal(256) + _nonlocal(512)),  # GN + NL: non-local after stages 3, 4.
    ('paper,vanilla', 0), ('paper,gn', 0), ('paper,nl', _nonlocal(256) + _nonlocal(512))])
def test_clman_extractors_of_table1_and_the_multi_meta_head(variant, extra, resnet18_count):
  """Sec. 3: the extractor (GroupNorm has BatchNorm's two parameters per channel), two
  512 -> 512 attention filters (Eq. 4) and a linear classifier."""
  config = importlib.import_module('configs.clman').get_config(variant)
  params = _abstract_params(config)
  assert _count(params['encoder']) == resnet18_count + extra
  assert _count(params['attention']) == 2 * _dense(512, 512)
  assert _count(params) == resnet18_count + extra + 2 * _dense(512, 512) + _dense(512, 2)


def test_simclr_projection_head():
  """Eq. 2's MLP on the extractor: 512 -> 512 -> 128 (SimCLR's)."""
  config = runners.pretrain_config(importlib.import_module('configs.clman').get_config('paper'))
  params = _abstract_params(config)
  assert _count({k: v for k, v in params.items() if k != 'encoder'}) == (
      _dense(512, 512) + _dense(512, 128))


def test_clman_paper_pretraining_epochs_are_41_steps():
  """8,192 epochs of 161 videos x 16 frames in batches of 64: ceil(2576 / 64) = 41."""
  config = importlib.import_module('configs.clman').get_config('paper')
  assert config.pretrain.total_steps == 8192 * 41
  assert config.total_steps == 320 * 21


def test_table3_aggregators_build_at_full_size():
  config = importlib.import_module('configs.clman').get_config('paper')
  features = jnp.zeros((1, 16, 512))
  for aggregation in ('external_attention', 'efficient_mhsa'):
    model = models.create_model(config.model.copy_and_resolve_references())
    model = model.clone(aggregation=aggregation)
    batch = {'features': features, 'valid': jnp.ones((1, 16), bool)}
    params = jax.eval_shape(lambda m=model, b=batch: m.init(jax.random.key(0), b,
                                                            train=False))['params']
    head = _count(params[aggregation])
    if aggregation == 'external_attention':  # LayerNorm, M_k, M_v (64 units, no biases).
      assert head == 2 * 512 + 2 * 512 * 64
    else:  # LayerNorm, q, kv, depth-wise reduction (kernel 3), its norm, head mix, proj.
      assert head == (2 * 512 + _dense(512, 512) + _dense(512, 1024) + 3 * 512 + 512
                      + 2 * 512 + 8 * 8 + _dense(512, 512))
