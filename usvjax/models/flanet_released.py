"""The released FLA-Net architecture (``design='released'``, the ``released_code`` config;
jhl-Det/FLA-Net, ``segmentation_models_pytorch/base/model_ours_v1.py`` on an smp ``Unet``
with the ``timm-res2net50_26w_4s`` encoder), module by module, so that its weights load
one to one (``usvjax/models/flanet_import.py``). The clip, the encoder and streaming are
the paper's (``flanet_base.py``); these are the released code's choices, not the paper's:
  * frames: its clips are [I_t, I_{t-1}, I_{t-2}] (newest first), ours are in time order;
    the temporal shift (``temporal_shift=1/8``, on the stride-16 features of the three
    frames) moves the same channel slices the same way: frame t's channels [0, k) come
    from t-1 and [k, 2k) are zeros, k = c // 8;
  * ``ReleasedFFA`` (its ``FAM``) on the shifted features: X = FFT2(f) (complex, norm
    'backward'); per pair (t, t-1), (t, t-2) the 4c channels [Im X_t, Im X_k, Re X_t,
    Re X_k] through ``SEBlock``; the first half of the result is used as the real part
    and the second as the imaginary part (so Im and Re swap places), z = Re iFFT2(.);
    o_t = GroupNorm_8(ReLU(conv3x3(z_1 + z_2))) (2c -> c channels, conv with bias);
  * ``SEBlock`` (4c -> 4c / ``ffa_reduction`` = 2c -> 4c 1x1 convs with bias): the per
    channel L2 norm G [B, 1, 1, 4c] over (h, w) is divided by its mean over a size-1 axis,
    i.e. by itself: s = G / (G + 1e-6), which is 1 for every channel that is not all zero
    (and 0 for the channels the temporal shift empties). Its attention
    sigmoid(up(relu(down(s)))) is therefore a constant per channel that does not depend
    on the input's values;
  * consequence of the swap: the features are real, so Im X is odd and Re X even (a
    Hermitian spectrum), and a Im X + j b Re X (a, b real per channel) is the spectrum of
    a purely imaginary signal: z_1 = z_2 = 0 (up to rounding) and o_t = GroupNorm(ReLU(
    conv bias)) is the same map for every input. In the released model the frames t-1,
    t-2 do not change the output at all, nor does the input change the heatmap (checked
    on the released code: differences exactly 0); the SE blocks and the shift only shape
    what multiplies zero. All of it is reproduced as released (``tests/test_flanet.py``
    compares the SE attention with the released code's, so these modules stay pinned);
  * f_t + o_t replaces frame t's stride-16 features (``ffa_combine='add'``); the other
    levels are frame t's own;
  * ``SmpUNetDecoder``: segmentation_models_pytorch's U-Net decoder, five blocks
    (``decoder_channels`` (256, 128, 64, 32, 16)) of nearest x2 upsampling, concat of the
    skip (stride 16, 8, 4, 2; none in the last block), two conv3x3-BatchNorm-ReLU; its
    output is at the input's resolution (H and W must be multiples of 32, as there);
  * ``HeatmapHead`` on o_t (not f_t + o_t): three stride-2 3x3 transposed convolutions
    (c -> c/4 -> c/16 -> 1: 1024 -> 256 -> 64 -> 1) without activations, bilinearly
    resized to the input size: the ``heatmap`` output, linear (no sigmoid: the released
    training fits it with an MSE as it is);
  * logits = conv3x3(decoder output + heatmap) (1 channel, with bias): the localisation
    add, the released two-branch decoder (a learnt, input-independent bias map, by the
    above).
"""
from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

from usvjax.errors import ConfigError
from usvjax.models import flanet_base
from usvjax.models import layers
from usvjax.models import subpixel


def _l2_norm(x: jnp.ndarray, axis: tuple[int, ...]) -> jnp.ndarray:
  """sqrt(sum x^2) over ``axis`` (kept), with gradient 0 where it is 0 (as torch.norm's)."""
  squares = jnp.sum(x * x, axis=axis, keepdims=True)
  positive = squares > 0
  return jnp.where(positive, jnp.sqrt(jnp.where(positive, squares, 1.0)), 0.0)


class SEBlock(nn.Module):
  """The released FFA's channel attention, quirk included (see the module docstring).

  x [B, h, w, C] -> x * sigmoid(up(relu(down(s)))), s = G / (mean of G over a size-1
  axis + 1e-6) = G / (G + 1e-6), G the L2 norm of each channel over (h, w); ``down`` and
  ``up`` are 1x1 convolutions C -> ``hidden`` -> C with bias.
  """
  hidden: int

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    g = _l2_norm(x, (1, 2))  # [B, 1, 1, C]
    # As released: the mean runs over the map's last spatial axis, which has size 1.
    s = g / (jnp.mean(g, axis=2, keepdims=True) + 1e-6)
    s = nn.relu(nn.Conv(self.hidden, (1, 1), name='down')(s))
    attention = nn.sigmoid(nn.Conv(x.shape[-1], (1, 1), name='up')(s))
    self.sow('intermediates', 'attention', attention)  # [B, 1, 1, C], for inspection.
    return x * attention


class ReleasedFFA(nn.Module):
  """The released code's frequency module (its ``FAM``): f_t, f_{t-1}, f_{t-2} [B, h, w, c]
  (already temporally shifted) -> o_t [B, h, w, c]; see the module docstring."""
  reduction: int = 2
  groups: int = 8

  @nn.compact
  def __call__(self, current: jnp.ndarray, previous: jnp.ndarray,
               before_previous: jnp.ndarray) -> jnp.ndarray:
    channels = current.shape[-1]
    x_t = jnp.fft.fft2(current, axes=(1, 2))
    z = 0.0
    for i, other in enumerate((previous, before_previous), start=1):
      x_k = jnp.fft.fft2(other, axes=(1, 2))
      pair = jnp.concatenate([x_t.imag, x_k.imag, x_t.real, x_k.real], axis=-1)
      pair = SEBlock(4 * channels // self.reduction, name=f'se_block{i}')(pair)
      real, imag = jnp.split(pair, 2, axis=-1)  # As released: [Im, Im] is taken as real.
      z = z + jnp.fft.ifft2(real + 1j * imag, axes=(1, 2)).real
    out = nn.relu(nn.Conv(channels, (3, 3), padding=((1, 1), (1, 1)), name='reduce')(z))
    return nn.GroupNorm(num_groups=flanet_base.group_count(channels, self.groups),
                        epsilon=1e-5, name='norm')(out)


class HeatmapHead(nn.Module):
  """The released localisation head: [B, h, w, c] -> [B, 8h, 8w, 1] through three 3x3
  stride-2 transposed convolutions (c -> c/4 -> c/16 -> 1, with bias, no activation;
  PyTorch's padding 1, output size 2x: 'padding' (1, 2) of the dilated input; computed as
  sub-pixel convolutions, ``subpixel.py``)."""

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    channels = x.shape[-1]
    for i, features in enumerate((max(1, channels // 4), max(1, channels // 16), 1), start=1):
      x = subpixel.ConvTranspose(features, (3, 3), (2, 2), padding=((1, 2), (1, 2)),
                                 transpose_kernel=True, name=f'upsample{i}')(x)
    return x


class SmpUNetDecoder(nn.Module):
  """segmentation_models_pytorch's U-Net decoder (no centre block, no attention): one block
  per width in ``channels``, from stride 32 to stride 32 / 2**len(channels): nearest x2
  upsampling, concat of the skip (stride 16, 8, 4, 2; none after that), two 3x3
  conv-BatchNorm-ReLU. {level: [B, h, w, c]} -> [B, H, W, channels[-1]]."""
  channels: Sequence[int] = (256, 128, 64, 32, 16)

  @nn.compact
  def __call__(self, features: dict[str, jnp.ndarray], *, train: bool) -> jnp.ndarray:
    x, skips = features['stride32'], ('stride16', 'stride8', 'stride4', 'stride2')
    for i, width in enumerate(self.channels):
      x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
      if i < len(skips):
        x = jnp.concatenate([x, features[skips[i]]], axis=-1)
      for k in (1, 2):
        x = layers.ConvNormAct(width, name=f'block{i}_conv{k}')(x, train=train)
    return x


class ReleasedFLANet(flanet_base.FLANetBase):
  """The released FLA-Net: ``ReleasedFFA`` at one level, the smp U-Net decoder, the
  transposed-conv heatmap head added before a 3x3 segmentation head (module docstring)."""
  DESIGN = 'released'
  DECODER_BLOCKS = 5
  FREQUENCY_MODULE = ReleasedFFA
  SIZE_MULTIPLE = 32

  def setup(self):
    super().setup()
    if len(self.ffa_levels) != 1:
      raise ConfigError(f'config.model.ffa_levels={tuple(self.ffa_levels)}: the released design '
                        'fuses one level (its heatmap head reads it); give one.')
    self.decoder = SmpUNetDecoder(self.decoder_channels)
    self.segmentation_head = nn.Conv(1, (3, 3), padding=((1, 1), (1, 1)))
    if self.localization:
      self.heatmap_head = HeatmapHead()

  def _outputs(self, features: dict, fused: dict, size: tuple[int, int], train: bool) -> dict:
    """The released head: the smp decoder's output plus the heatmap, then a 3x3 conv."""
    x, out = self.decoder(features, train=train), {}
    if self.localization:
      (o_t,) = fused.values()
      out['heatmap'] = flanet_base.upsample(self.heatmap_head(o_t), size)
      x = x + out['heatmap']
    out['logits'] = self.segmentation_head(x)
    return out
