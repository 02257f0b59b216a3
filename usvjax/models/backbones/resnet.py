"""ResNet-18/34/50 (torchvision) and Res2Net-50 26w x 4s (timm) as Flax Linen modules.

The structure and the parameter names mirror the PyTorch references, so that ImageNet
weights convert one to one (``usvjax/models/backbones/convert.py``): ``conv1``/``bn1``
stem, stages ``layer1``..``layer4`` with blocks ``layer<i>_<j>``, shortcut
``downsample_0`` (conv) and ``downsample_1`` (norm), Res2Net's split convolutions
``convs_<k>``/``bns_<k>``. Convolutions pad symmetrically like PyTorch (not 'SAME').

Input: float32 [B, H, W, 3] (ImageNet-normalised for pretrained weights, see
``imagenet_normalize``). Output: the multi-scale features
``{'stride2', 'stride4', 'stride8', 'stride16', 'stride32'}`` (stem after ReLU, then the
four stages), and ``'pooled'`` [B, C] (global average of the last stage). With
``stages`` < 4 the trunk ends after that stage (STM's memory encoder ends at res4,
``stages=3``: no 'stride32'); ``stem_addend`` [B, H/2, W/2, C_stem] is added to conv1's
output before ``bn1`` (where STM's memory encoder adds its mask convolutions,
``usvjax/models/stpfnet_memory.py``).

Options: ``norm`` 'batch' or 'group' (GroupNorm with ``groups`` groups, CLMAN),
``nonlocal_stages`` (an embedded-Gaussian non-local block, Wang et al. 2018, after the last
block of each listed stage 1..4; CLMAN uses (3, 4)), ``frozen_norm`` (BatchNorm always uses
its running statistics and never updates them), ``width`` (multiplies every channel count;
1.0 is the reference, small values give tiny test models). Inside ``rematerialised()``
(``config.remat``, see ``usvjax/core/execution.py``) every residual block is built with
``nn.remat``: its activations are recomputed in the backward pass instead of being stored,
so a stage keeps only its blocks' inputs; parameter names, outputs and gradients are the same.

BatchNorm momentum: PyTorch updates ``running = (1 - m) running + m batch`` with m = 0.1;
Flax's ``momentum`` is the weight of the old value, so 0.9 here. PyTorch uses the unbiased
batch variance (n / (n - 1) times the biased one) in the running variance and Flax the
biased one; normalisation in the forward pass uses the biased variance in both.
"""
from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Iterator
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from usvjax.errors import ConfigError
from usvjax.models.backbones import pointwise

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_REMAT = contextvars.ContextVar('usvjax_remat_blocks', default=False)


@contextlib.contextmanager
def rematerialised(enabled: bool = True) -> Iterator[None]:
  """ResNets traced inside this context (``enabled``) rematerialise every residual block."""
  token = _REMAT.set(enabled)
  try:
    yield
  finally:
    _REMAT.reset(token)


def imagenet_normalize(images: jnp.ndarray) -> jnp.ndarray:
  """[..., 3] images in [0, 1] -> ImageNet-normalised, as the pretrained weights expect."""
  return (images - jnp.asarray(IMAGENET_MEAN)) / jnp.asarray(IMAGENET_STD)


def _conv(features: int, kernel: int, stride: int = 1, name: str | None = None) -> nn.Conv:
  """A bias-free convolution padded like PyTorch's; 1x1 ones run as matrix products
  (``pointwise.py``)."""
  pad = kernel // 2
  return nn.Conv(features, (kernel, kernel), (stride, stride), padding=((pad, pad), (pad, pad)),
                 use_bias=False, name=name,
                 conv_general_dilated=pointwise.conv_general_dilated)


class _Norm(nn.Module):
  """BatchNorm (PyTorch eps and momentum) or GroupNorm, selected by ``kind``."""
  kind: str = 'batch'
  groups: int = 32
  frozen: bool = False
  zero_init: bool = False

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    scale_init = nn.initializers.zeros if self.zero_init else nn.initializers.ones
    if self.kind == 'group':
      return nn.GroupNorm(num_groups=math.gcd(self.groups, x.shape[-1]), epsilon=1e-5,
                          scale_init=scale_init, name='norm')(x)
    return nn.BatchNorm(use_running_average=self.frozen or not train, momentum=0.9,
                        epsilon=1e-5, scale_init=scale_init, name='norm')(x)


class NonLocalBlock(nn.Module):
  """Embedded-Gaussian non-local block (Wang et al. 2018, Eq. 1-3).

  z = x + BN(W y),  y_i = sum_j softmax_j(theta(x_i) . phi(x_j)) g(x_j); theta, phi, g
  are 1x1 convolutions to C/2 channels; W's norm scale starts at zero so that the block
  starts as the identity.
  """
  norm: str = 'batch'
  groups: int = 32
  frozen_norm: bool = False

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    b, h, w, c = x.shape
    inner = max(1, c // 2)
    theta = nn.Conv(inner, (1, 1), name='theta')(x).reshape(b, h * w, inner)
    phi = nn.Conv(inner, (1, 1), name='phi')(x).reshape(b, h * w, inner)
    g = nn.Conv(inner, (1, 1), name='g')(x).reshape(b, h * w, inner)
    attention = jax.nn.softmax(jnp.einsum('bic,bjc->bij', theta, phi), axis=-1)
    y = jnp.einsum('bij,bjc->bic', attention, g).reshape(b, h, w, inner)
    y = nn.Conv(c, (1, 1), name='W')(y)
    return x + _Norm(self.norm, self.groups, self.frozen_norm, zero_init=True, name='W_norm')(y, train)


class _Block(nn.Module):
  """Fields shared by the residual blocks; ``planes`` is the block's inner width."""
  planes: int
  stride: int = 1
  norm: str = 'batch'
  groups: int = 32
  frozen_norm: bool = False

  def make_norm(self, name: str) -> _Norm:
    return _Norm(self.norm, self.groups, self.frozen_norm, name=name)


class BasicBlock(_Block):
  """Two 3x3 convolutions (ResNet-18/34). Expansion 1."""
  expansion = 1

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    out = nn.relu(self.make_norm('bn1')(_conv(self.planes, 3, self.stride, 'conv1')(x), train))
    out = self.make_norm('bn2')(_conv(self.planes, 3, 1, 'conv2')(out), train)
    return nn.relu(out + _shortcut(self, x, self.planes, train))


class Bottleneck(_Block):
  """1x1, 3x3 (strided, torchvision v1.5), 1x1 x4 (ResNet-50). Expansion 4."""
  expansion = 4

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    out = nn.relu(self.make_norm('bn1')(_conv(self.planes, 1, 1, 'conv1')(x), train))
    out = nn.relu(self.make_norm('bn2')(_conv(self.planes, 3, self.stride, 'conv2')(out), train))
    out = self.make_norm('bn3')(_conv(self.planes * 4, 1, 1, 'conv3')(out), train)
    return nn.relu(out + _shortcut(self, x, self.planes * 4, train))


class Bottle2neck(_Block):
  """Res2Net bottleneck (Gao et al. 2019; timm ``Bottle2neck``), ``scale`` splits.

  The 1x1 output (width * scale channels) is split into ``scale`` groups; group k > 0 gets
  a 3x3 conv of (its split + the previous group's output), except in the first block of a
  stage, where each split is convolved alone and the last split is average-pooled.
  """
  base_width: int = 26
  scale: int = 4
  first: bool = False
  expansion = 4

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    norm = self.make_norm
    width = int(math.floor(self.planes * self.base_width / 64.0))
    out = nn.relu(norm('bn1')(_conv(width * self.scale, 1, 1, 'conv1')(x), train))
    splits = jnp.split(out, self.scale, axis=-1)
    outputs = []
    for k in range(self.scale - 1):
      sp = splits[k] if k == 0 or self.first else outputs[-1] + splits[k]
      sp = _conv(width, 3, self.stride, f'convs_{k}')(sp)
      outputs.append(nn.relu(norm(f'bns_{k}')(sp, train)))
    last = splits[-1]
    if self.first:
      last = nn.avg_pool(last, (3, 3), (self.stride, self.stride), padding=((1, 1), (1, 1)),
                         count_include_pad=True)
    out = jnp.concatenate(outputs + [last], axis=-1)
    out = norm('bn3')(_conv(self.planes * 4, 1, 1, 'conv3')(out), train)
    return nn.relu(out + _shortcut(self, x, self.planes * 4, train))


def _shortcut(block: _Block, x: jnp.ndarray, features: int, train: bool) -> jnp.ndarray:
  """Identity, or 1x1 strided conv + norm when the shape changes (``downsample``)."""
  if block.stride == 1 and x.shape[-1] == features:
    return x
  x = _conv(features, 1, block.stride, 'downsample_0')(x)
  return block.make_norm('downsample_1')(x, train)


ARCHITECTURES = {
    'resnet18': (BasicBlock, (2, 2, 2, 2)),
    'resnet34': (BasicBlock, (3, 4, 6, 3)),
    'resnet50': (Bottleneck, (3, 4, 6, 3)),
    'res2net50_26w_4s': (Bottle2neck, (3, 4, 6, 3)),
}


class ResNet(nn.Module):
  """A ResNet/Res2Net trunk returning multi-scale features (see the module docstring)."""
  arch: str = 'resnet50'
  width: float = 1.0
  norm: str = 'batch'
  groups: int = 32
  frozen_norm: bool = False
  nonlocal_stages: Sequence[int] = ()
  stages: int = 4

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool,
               stem_addend: jnp.ndarray | None = None) -> dict[str, jnp.ndarray]:
    if self.arch not in ARCHITECTURES:
      raise ConfigError(f'unknown backbone {self.arch!r}; choose one of {sorted(ARCHITECTURES)}.')
    block, depths = ARCHITECTURES[self.arch]
    layer = nn.remat(block, static_argnums=(2,)) if _REMAT.get() else block  # (x, train)
    channels = lambda c: max(1, int(round(c * self.width)))  # pylint: disable=unnecessary-lambda-assignment
    common = dict(norm=self.norm, groups=self.groups, frozen_norm=self.frozen_norm)
    x = _conv(channels(64), 7, 2, 'conv1')(x)
    if stem_addend is not None:
      x = x + stem_addend
    x = nn.relu(_Norm(self.norm, self.groups, self.frozen_norm, name='bn1')(x, train))
    features = {'stride2': x}
    x = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
    for stage, depth in enumerate(depths[:self.stages], start=1):
      planes = channels(64 * 2 ** (stage - 1))
      for j in range(depth):
        stride = 2 if j == 0 and stage > 1 else 1
        kwargs = dict(common, planes=planes, stride=stride, name=f'layer{stage}_{j}')
        if block is Bottle2neck:
          kwargs['first'] = j == 0
        x = layer(**kwargs)(x, train)
      if stage in self.nonlocal_stages:
        x = NonLocalBlock(self.norm, self.groups, self.frozen_norm, name=f'nonlocal{stage}')(x, train)
      features[f'stride{2 ** (stage + 1)}'] = x
    features['pooled'] = jnp.mean(x, axis=(1, 2))
    return features
