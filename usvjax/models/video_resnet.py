"""The 3-D ResNet family of Tran et al. (CVPR 2018), as torchvision builds it: R3D-18, MC3-18,
R(2+1)D-18 (CLMAN Table 4; Cui et al. Table 4), and the trunk TSM puts its shift in.

One trunk, ``VideoResNetTrunk``, takes the convolution of each stage as an option
(torchvision's ``conv_makers``):

| kind | torchvision | kernel (t, h, w) | stride | downsample stride |
|---|---|---|---|---|
| '3d' | ``Conv3DSimple`` | 3, 3, 3 | s, s, s | s, s, s |
| '2d' | ``Conv3DNoTemporal`` | 1, 3, 3 | 1, s, s | 1, s, s |
| '2plus1d' | ``Conv2Plus1D`` | 1, 3, 3 -> BN -> ReLU -> 3, 1, 1 | (1, s, s), (s, 1, 1) | s, s, s |

(2+1)-D convolutions have M_i = floor(27 N_{i-1} N_i / (9 N_{i-1} + 3 N_i)) intermediate
channels (Tran et al. Sec. 3.5, N_{i-1} the block's input and N_i its output channels; both
convolutions of a block use the block's M_i, as torchvision does), so a (2+1)-D block has
about the parameters of a 3-D one. Stems: 'r3d' (3x7x7 conv, stride 1x2x2, R3D and MC3),
'r2plus1d' (1x7x7 to 45 channels, then 3x1x1 to 64), 'imagenet' (the 2-D ResNet stem:
1x7x7 conv, stride 2, 3x3 max-pool, TSM). Stages of widths 64, 128, 256, 512, the first
without stride; blocks 'basic' (the 18-layer networks) or 'bottleneck' (x4, TSM-50).

Parameter names follow torchvision's ``state_dict`` (``stem.0`` -> ``stem_0``,
``layer2.0.conv1.0.3`` -> ``layer2_0/conv1_0_3``, ``downsample_0``/``downsample_1``), so
Kinetics-400 weights import one to one (``backbones/video_convert.py``). Full size:
33,166,272 (R3D-18), 11,490,240 (MC3-18), 31,300,125 (R(2+1)D-18) trunk parameters;
torchvision's counts with the 400-class classifier are 33,371,472 / 11,695,440 / 31,505,325.

**Variable-length videos** (``video_layers``): BatchNorm counts only real frames and zeroes
padded ones, temporal strides keep ceil(n / s) frames, and the pooled features average the
real frames. So every video of a padded batch gets, in inference, exactly the logits of the
video run alone at its true length (zero-padded convolutions at its end, as in torchvision),
and in training the BatchNorm statistics, their running averages, the logits and the loss
do not depend on how many padded frames the batch has. This is exact, not an
approximation, so videos need not be run one length bucket at a time.

Input ``frames`` [B, T, H, W, 1 or 3] in [0, 1] (Kinetics-normalised here, grey repeated to
RGB), ``valid`` [B, T]. Outputs ``logits`` [B, K] and ``pooled`` [B, 512 x width].
"""
from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

from usvjax.errors import ConfigError
from usvjax.models import video_layers

CONV_KINDS = ('3d', '2d', '2plus1d')
STEMS = ('r3d', 'r2plus1d', 'imagenet')
BLOCKS = ('basic', 'bottleneck')

ARCHITECTURES = {
    'r3d_18': dict(stem='r3d', convs=('3d',) * 4),
    'mc3_18': dict(stem='r3d', convs=('3d', '2d', '2d', '2d')),
    'r2plus1d_18': dict(stem='r2plus1d', convs=('2plus1d',) * 4),
}


def _conv3d(features: int, kernel: tuple[int, int, int], stride: tuple[int, int, int],
            name: str) -> nn.Conv:
  """A bias-free Conv3d with PyTorch's symmetric padding of kernel // 2."""
  return nn.Conv(features, kernel, stride, padding=[(k // 2, k // 2) for k in kernel],
                 use_bias=False, name=name)


def _temporal_stride(kind: str, stride: int) -> int:
  return 1 if kind == '2d' else stride


def midplanes(inplanes: int, planes: int) -> int:
  """M_i of a (2+1)-D block with ``inplanes`` inputs and ``planes`` outputs."""
  return (inplanes * planes * 27) // (inplanes * 9 + 3 * planes)


class _Block(nn.Module):
  """Fields of a residual block: convolution kind, widths, stride, optional temporal shift."""
  kind: str
  planes: int
  mid: int
  stride: int = 1
  shift_div: int = 0

  def conv(self, x: jnp.ndarray, valid: jnp.ndarray, features: int, stride: int, name: str,
           train: bool) -> tuple[jnp.ndarray, jnp.ndarray]:
    """This block's convolution of ``kind`` (sub-modules ``<name>_0...``), the new valid mask."""
    t = _temporal_stride(self.kind, stride)
    if self.kind == '2plus1d':
      x = _conv3d(self.mid, (1, 3, 3), (1, stride, stride), f'{name}_0')(x)
      x = nn.relu(video_layers.MaskedBatchNorm(name=f'{name}_1')(x, valid, train))
      x = _conv3d(features, (3, 1, 1), (t, 1, 1), f'{name}_3')(x)
    else:
      x = _conv3d(features, (3 if self.kind == '3d' else 1, 3, 3), (t, stride, stride), name)(x)
    return x, video_layers.strided_valid(valid, t)

  def shortcut(self, x: jnp.ndarray, valid: jnp.ndarray, features: int, train: bool
               ) -> jnp.ndarray:
    """Identity, or a strided 1x1x1 convolution and BatchNorm (``downsample``)."""
    if self.stride == 1 and x.shape[-1] == features:
      return x
    t = _temporal_stride(self.kind, self.stride)
    x = _conv3d(features, (1, 1, 1), (t, self.stride, self.stride), 'downsample_0')(x)
    return video_layers.MaskedBatchNorm(name='downsample_1')(
        x, video_layers.strided_valid(valid, t), train)

  def shifted(self, x: jnp.ndarray) -> jnp.ndarray:
    return temporal_shift(x, self.shift_div) if self.shift_div else x


class BasicBlock(_Block):
  """conv1 (kind, stride) -> BN -> ReLU -> conv2 (kind) -> BN, + shortcut, ReLU."""

  @nn.compact
  def __call__(self, x: jnp.ndarray, valid: jnp.ndarray, train: bool
               ) -> tuple[jnp.ndarray, jnp.ndarray]:
    norm = video_layers.MaskedBatchNorm
    out, out_valid = self.conv(self.shifted(x), valid, self.planes, self.stride, 'conv1_0', train)
    out = nn.relu(norm(name='conv1_1')(out, out_valid, train))
    out, _ = self.conv(out, out_valid, self.planes, 1, 'conv2_0', train)
    out = norm(name='conv2_1')(out, out_valid, train)
    return nn.relu(out + self.shortcut(x, valid, self.planes, train)), out_valid


class Bottleneck(_Block):
  """1x1x1 -> BN -> ReLU -> conv (kind, stride) -> BN -> ReLU -> 1x1x1 (x4) -> BN, + shortcut."""

  @nn.compact
  def __call__(self, x: jnp.ndarray, valid: jnp.ndarray, train: bool
               ) -> tuple[jnp.ndarray, jnp.ndarray]:
    norm = video_layers.MaskedBatchNorm
    out = _conv3d(self.planes, (1, 1, 1), (1, 1, 1), 'conv1_0')(self.shifted(x))
    out = nn.relu(norm(name='conv1_1')(out, valid, train))
    out, out_valid = self.conv(out, valid, self.planes, self.stride, 'conv2_0', train)
    out = nn.relu(norm(name='conv2_1')(out, out_valid, train))
    out = _conv3d(self.planes * 4, (1, 1, 1), (1, 1, 1), 'conv3_0')(out)
    out = norm(name='conv3_1')(out, out_valid, train)
    return nn.relu(out + self.shortcut(x, valid, self.planes * 4, train)), out_valid


def temporal_shift(x: jnp.ndarray, shift_div: int) -> jnp.ndarray:
  """TSM's shift of x [B, T, H, W, C] (Lin et al. 2019, Fig. 1b, torchvision-free).

  Channels [0, C/d) of frame t take frame t + 1's values, channels [C/d, 2C/d) frame
  t - 1's, the rest stay; frames beyond either end are zero. Padded frames must already be
  zero (``video_layers``), so nothing is shifted in from them.
  """
  fold = x.shape[-1] // shift_div
  zero = jnp.zeros_like(x[:, :1, ..., :fold])
  from_next = jnp.concatenate([x[:, 1:, ..., :fold], zero], axis=1)
  from_previous = jnp.concatenate([zero, x[:, :-1, ..., fold:2 * fold]], axis=1)
  return jnp.concatenate([from_next, from_previous, x[..., 2 * fold:]], axis=-1)


class VideoResNetTrunk(nn.Module):
  """Stem and four stages (see the module docstring) -> (features [B, T', H', W', C], valid
  [B, T'])."""
  stem: str = 'r3d'
  convs: Sequence[str] = ('3d',) * 4
  block: str = 'basic'
  depths: Sequence[int] = (2, 2, 2, 2)
  width: float = 1.0
  shift_div: int = 0

  @nn.compact
  def __call__(self, x: jnp.ndarray, valid: jnp.ndarray, *, train: bool
               ) -> tuple[jnp.ndarray, jnp.ndarray]:
    if self.stem not in STEMS or self.block not in BLOCKS or not set(self.convs) <= set(CONV_KINDS):
      raise ConfigError(f'video ResNet: stem {self.stem!r} (one of {STEMS}), block '
                        f'{self.block!r} (one of {BLOCKS}), convs {self.convs} (each '
                        f'one of {CONV_KINDS}).')
    channels = lambda c: max(1, int(round(c * self.width)))  # pylint: disable=unnecessary-lambda-assignment
    norm = video_layers.MaskedBatchNorm
    if self.stem == 'r2plus1d':
      x = nn.relu(norm(name='stem_1')(
          _conv3d(channels(45), (1, 7, 7), (1, 2, 2), 'stem_0')(x), valid, train))
      x = nn.relu(norm(name='stem_4')(
          _conv3d(channels(64), (3, 1, 1), (1, 1, 1), 'stem_3')(x), valid, train))
    else:
      kernel = (3, 7, 7) if self.stem == 'r3d' else (1, 7, 7)
      x = nn.relu(norm(name='stem_1')(
          _conv3d(channels(64), kernel, (1, 2, 2), 'stem_0')(x), valid, train))
    if self.stem == 'imagenet':
      x = nn.max_pool(x, (1, 3, 3), (1, 2, 2), padding=((0, 0), (1, 1), (1, 1)))
    block = BasicBlock if self.block == 'basic' else Bottleneck
    for stage, (kind, depth) in enumerate(zip(self.convs, self.depths), start=1):
      planes = channels(64 * 2 ** (stage - 1))
      for j in range(depth):
        stride = 2 if j == 0 and stage > 1 else 1
        mid = midplanes(x.shape[-1], planes)
        x, valid = block(kind, planes, mid, stride, self.shift_div, name=f'layer{stage}_{j}')(
            x, valid, train)
    return x, valid


class VideoResNet(nn.Module):
  """R3D-18, MC3-18 or R(2+1)D-18 (``arch``, see ``ARCHITECTURES``) with a linear classifier
  on the real frames' pooled features; ``width`` scales every channel count and ``depths``
  sets the blocks per stage (18 layers: (2, 2, 2, 2); fewer for tiny tests)."""
  num_classes: int = 2
  arch: str = 'r3d_18'
  width: float = 1.0
  depths: Sequence[int] = (2, 2, 2, 2)

  @nn.compact
  def __call__(self, batch: dict[str, jnp.ndarray], *, train: bool) -> dict[str, jnp.ndarray]:
    if self.arch not in ARCHITECTURES:
      raise ConfigError(f'config.model.arch={self.arch!r}: use one of {sorted(ARCHITECTURES)}.')
    valid = batch['valid']
    x = video_layers.video_input(batch['frames'], valid, video_layers.KINETICS_MEAN,
                                 video_layers.KINETICS_STD)
    x, valid = VideoResNetTrunk(**ARCHITECTURES[self.arch], depths=tuple(self.depths),
                                width=self.width, name='backbone')(x, valid, train=train)
    pooled = video_layers.masked_video_mean(x, valid)
    return {'pooled': pooled, 'logits': nn.Dense(self.num_classes, name='fc')(pooled)}
