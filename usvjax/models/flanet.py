"""FLA-Net (Lin et al., MICCAI 2023): frequency-based feature aggregation and a two-branch
decoder for breast-lesion segmentation in ultrasound video.

Input ``batch['frames']`` [B, T, H, W, C] with the target frame t last (T >= 3); the model
uses I_t, I_{t-1}, I_{t-2} = frames[:, -1], frames[:, -2], frames[:, -3]. Outputs:
``logits`` [B, H, W, 1] (segmentation S_t, pre-sigmoid); with the localisation branch also
``heatmap`` [B, H, W, 1] (H_t, in [0, 1]; unbounded in the released design) and, when
training on clips of T >= 4 frames, ``previous_heatmap`` (H_{t-1}: the same network applied
to I_{t-1}, I_{t-2}, I_{t-3}; the positive of the location-based contrastive loss, see
``usvjax.losses``).

**Encoder.** One ResNet/Res2Net (Res2Net-50 26w4s in the paper) shared by all frames; its
stride-2..32 features f (channels 64, 256, 512, 1024, 2048 at width 1).

**FFA module (Sec. 3.1).** For features f_t, f_{t-1}, f_{t-2} [h, w, c] of one level:
  x_k = [Re F(f_k), Im F(f_k)] (2c channels), F = 2-D real FFT over (h, w), 'ortho' norm;
  y_1 = CA([x_t, x_{t-1}]) * [x_t, x_{t-1}],  y_2 = CA([x_t, x_{t-2}]) * [x_t, x_{t-2}];
  z_i = F^-1(y_i[real channels] + j y_i[imaginary channels]) (2c channels each);
  o_t = BConv(z_1 + z_2) (c channels).
CA = LayerNorm over channels -> 1x1 conv (4c -> 4c / ``ffa_reduction``, 16 as in
squeeze-and-excitation) -> ReLU -> 1x1 conv (-> 4c) -> sigmoid, an attention value per
frequency and channel (the paper gives no pooling, so none is applied); BConv = 3x3 conv,
GroupNorm, ReLU. Our choices where the paper is silent: the real FFT (rfft2/irfft2), so
the spatial result is real; the layout [Re x_t, Im x_t, Re x_{t-1}, Im x_{t-1}] of a group,
split back as its Re and Im halves; the LayerNorm as the "feature normalisation".

**Which levels, and how o_t is used.** The paper draws one FFA between the encoder and the
decoder, so by default (``ffa_levels=('stride32',)``, ``ffa_combine='replace'``) o_t
replaces the deepest features of frame t, and the decoder's skip connections are frame t's
own. The released code instead runs it on the stride-16 features only, after a temporal
channel shift (``temporal_shift=1/8``), and adds o_t to f_t (``ffa_combine='add'``), with
its own modules (``design='released'``, below): the ``released_code`` config variant.

**Two-branch decoder (Sec. 3.2).** Two U-Net decoders of four blocks (upsample x2, concat
the skip, two 3x3 conv-BN-ReLU; widths ``decoder_channels``), from stride 32 to stride 2.
The localisation branch predicts H_t from its last block d1l (1x1 conv, upsampling,
sigmoid). The segmentation output is BConv([up(d2s + d2l), d1s + d1l]) -> 1x1 conv ->
upsampling, where d1, d2 are the last two blocks (the paper adds the pairs and passes "the
addition result" into a BConv; as d2 has half the resolution, it is upsampled and
concatenated with d1).

**The released architecture** (``design='released'``, the ``released_code`` config;
jhl-Det/FLA-Net, ``segmentation_models_pytorch/base/model_ours_v1.py`` on an smp ``Unet``
with the ``timm-res2net50_26w_4s`` encoder), module by module, so that its weights load
one to one (``usvjax/models/flanet_import.py``):
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

**Ablations (Table 3).** ``aggregation='concat'`` replaces every FFA with the "Basic"
concatenation of the three frames' features and a 1x1 conv; ``localization=False`` drops
the localisation branch (segmentation from d1s, d2s only); the contrastive loss is
``config.task.contrastive_weight``.

**Streaming** (``start``/``step``, see ``usvjax.streaming``), both designs: the state is
the encoder features of t-2 and t-1 at the FFA levels, so each new frame is encoded once;
the logits equal the clip forward pass's.
"""
from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from usvjax.errors import ConfigError
from usvjax.models import layers
from usvjax.models import subpixel
from usvjax.models.backbones import resnet

LEVELS = ('stride2', 'stride4', 'stride8', 'stride16', 'stride32')


class BConv(nn.Module):
  """3x3 convolution, GroupNorm, ReLU (the paper's "BConv")."""
  features: int
  groups: int = 32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    x = nn.Conv(self.features, (3, 3), name='conv')(x)
    x = nn.GroupNorm(num_groups=_groups(self.features, self.groups), name='norm')(x)
    return nn.relu(x)


def _groups(channels: int, groups: int) -> int:
  """The largest divisor of ``channels`` that is <= ``groups``."""
  return max(g for g in range(1, min(groups, channels) + 1) if channels % g == 0)


class ChannelAttention(nn.Module):
  """CA(x) = sigmoid(conv(relu(conv(LayerNorm(x))))), 1x1 convs, [..., C] -> [..., C]."""
  reduction: int = 16

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    channels = x.shape[-1]
    y = nn.LayerNorm(name='norm')(x)
    y = nn.relu(nn.Dense(max(1, channels // self.reduction), name='conv1')(y))
    return nn.sigmoid(nn.Dense(channels, name='conv2')(y))


def to_spectrum(x: jnp.ndarray) -> jnp.ndarray:
  """[B, h, w, c] real -> [B, h, w//2+1, 2c] = [Re, Im] of the 2-D real FFT over (h, w)."""
  f = jnp.fft.rfft2(x.astype(jnp.float32), axes=(1, 2), norm='ortho')  # No bfloat16 FFT.
  return jnp.concatenate([f.real, f.imag], axis=-1)


def from_spectrum(y: jnp.ndarray, width: int) -> jnp.ndarray:
  """Inverse of ``to_spectrum``: [B, h, w//2+1, 2c] ([Re, Im] halves) -> [B, h, width, c]."""
  real, imag = jnp.split(y, 2, axis=-1)
  return jnp.fft.irfft2(real + 1j * imag, s=(y.shape[1], width), axes=(1, 2), norm='ortho')


class FFA(nn.Module):
  """Frequency-based feature aggregation of f_t with f_{t-1} and f_{t-2}: -> [B, h, w, c]."""
  reduction: int = 16
  groups: int = 32

  @nn.compact
  def __call__(self, current: jnp.ndarray, previous: jnp.ndarray,
               before_previous: jnp.ndarray) -> jnp.ndarray:
    width, channels = current.shape[2], current.shape[-1]
    x_t = to_spectrum(current)
    z = 0.0
    for i, other in enumerate((previous, before_previous), start=1):
      group = jnp.concatenate([x_t, to_spectrum(other)], axis=-1)  # [Re_t, Im_t, Re_k, Im_k]
      y = ChannelAttention(self.reduction, name=f'attention{i}')(group) * group
      re_t, im_t, re_k, im_k = jnp.split(y, 4, axis=-1)
      z = z + from_spectrum(jnp.concatenate([re_t, re_k, im_t, im_k], axis=-1), width)
    return BConv(channels, self.groups, name='bconv')(z)


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
    return nn.GroupNorm(num_groups=_groups(channels, self.groups), epsilon=1e-5,
                        name='norm')(out)


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


class ConcatFuse(nn.Module):
  """The "Basic" aggregation of Table 3: 1x1 conv of the three frames' features."""

  @nn.compact
  def __call__(self, current, previous, before_previous) -> jnp.ndarray:
    x = jnp.concatenate([current, previous, before_previous], axis=-1)
    return nn.Conv(current.shape[-1], (1, 1), name='conv')(x)


def temporal_shift(x: jnp.ndarray, fraction: float) -> jnp.ndarray:
  """Shifts ``fraction`` of the channels one frame forward and as many back in time.

  x [B, T, h, w, c] in time order: frame i takes channels [0, k) from frame i-1 and
  [k, 2k) from frame i+1 (zeros past the ends), k = int(c * fraction).
  """
  k = int(x.shape[-1] * fraction)
  if k == 0:
    return x
  zeros = jnp.zeros_like(x[:, :1, ..., :k])
  forward = jnp.concatenate([zeros, x[:, :-1, ..., :k]], axis=1)
  backward = jnp.concatenate([x[:, 1:, ..., k:2 * k], zeros], axis=1)
  return jnp.concatenate([forward, backward, x[..., 2 * k:]], axis=-1)


def _upsample(x: jnp.ndarray, size: tuple[int, int]) -> jnp.ndarray:
  return jax.image.resize(x, (x.shape[0],) + size + (x.shape[-1],), 'bilinear')


class FLANet(nn.Module):
  """FLA-Net; see the module docstring for the fields."""
  backbone: str = 'res2net50_26w_4s'
  backbone_width: float = 1.0
  decoder_channels: Sequence[int] = (256, 128, 64, 32)
  aggregation: str = 'ffa'  # 'ffa' or 'concat' (Table 3 "Basic").
  ffa_levels: Sequence[str] = ('stride32',)
  ffa_combine: str = 'replace'  # 'replace' (paper) or 'add' (released code).
  ffa_reduction: int = 16
  temporal_shift: float = 0.0
  localization: bool = True
  groups: int = 32
  design: str = 'paper'  # 'paper' or 'released' (the released code's modules).

  def setup(self):
    if self.design not in ('paper', 'released'):
      raise ConfigError(f"config.model.design={self.design!r}: use 'paper' or 'released'.")
    if self.aggregation not in ('ffa', 'concat'):
      raise ConfigError(f"config.model.aggregation={self.aggregation!r}: use 'ffa' or 'concat'.")
    if self.ffa_combine not in ('replace', 'add'):
      raise ConfigError(f"config.model.ffa_combine={self.ffa_combine!r}: use 'replace' or 'add'.")
    unknown = set(self.ffa_levels) - set(LEVELS)
    if unknown:
      raise ConfigError(f'config.model.ffa_levels has {sorted(unknown)}; levels are {LEVELS}.')
    released = self.design == 'released'
    blocks = 5 if released else 4
    if len(self.decoder_channels) != blocks:
      raise ConfigError(f'config.model.decoder_channels={tuple(self.decoder_channels)}: the '
                        f'{self.design!r} design has {blocks} decoder blocks, give {blocks} widths.')
    if released and len(self.ffa_levels) != 1:
      raise ConfigError(f'config.model.ffa_levels={tuple(self.ffa_levels)}: the released design '
                        'fuses one level (its heatmap head reads it); give one.')
    self.encoder = resnet.ResNet(self.backbone, width=self.backbone_width)
    fuse = {'ffa': ReleasedFFA if released else FFA, 'concat': ConcatFuse}[self.aggregation]
    kwargs = ({} if fuse is ConcatFuse else
              {'reduction': self.ffa_reduction, 'groups': self.groups})
    self.fusions = {level: fuse(**kwargs) for level in self.ffa_levels}
    if released:
      self.decoder = SmpUNetDecoder(self.decoder_channels)
      self.segmentation_head = nn.Conv(1, (3, 3), padding=((1, 1), (1, 1)))
      if self.localization:
        self.heatmap_head = HeatmapHead()
      return
    self.segmentation = layers.UNetDecoder(self.decoder_channels)
    self.fuse_last = BConv(self.decoder_channels[-1], self.groups)
    self.mask_head = nn.Conv(1, (1, 1))
    if self.localization:
      self.localisation = layers.UNetDecoder(self.decoder_channels)
      self.heatmap_head = nn.Conv(1, (1, 1))

  def __call__(self, batch: dict[str, jnp.ndarray], *, train: bool) -> dict[str, jnp.ndarray]:
    frames = batch['frames']
    b, t, h, w, c = frames.shape
    if t < 3:
      raise ConfigError(f'FLA-Net needs clips of >= 3 frames (t, t-1, t-2); got {t}: set '
                        'config.input.clip_length >= 3.')
    self._check_size(h, w)
    used = min(t, 4 if train and self.localization else 3)
    encoded = self._encode(frames[:, t - used:].reshape((b * used, h, w, c)), train)
    encoded = {k: v.reshape((b, used) + v.shape[1:]) for k, v in encoded.items()}
    outputs = self._decode(encoded, used - 1, (h, w), train)
    if used == 4:
      outputs['previous_heatmap'] = self._decode(encoded, 2, (h, w), train)['heatmap']
    return outputs

  def _check_size(self, h: int, w: int) -> None:
    if self.design == 'released' and (h % 32 or w % 32):
      raise ConfigError(f'the released FLA-Net design needs frames whose height and width are '
                        f'multiples of 32; got {h}x{w}: set config.input.image_size.')

  def _encode(self, frames: jnp.ndarray, train: bool) -> dict[str, jnp.ndarray]:
    """The encoder's features of the levels FLA-Net uses: [N, H, W, C] -> {level: [N, ...]}."""
    x = jnp.broadcast_to(frames, frames.shape[:-1] + (3,)) if frames.shape[-1] == 1 else frames
    encoded = self.encoder(resnet.imagenet_normalize(x), train=train)
    return {k: v for k, v in encoded.items() if k in LEVELS}

  def start(self, frame: jnp.ndarray, mask: jnp.ndarray | None = None
            ) -> tuple[dict, jnp.ndarray]:
    """Streaming: the first frame [B, H, W, C] of a video (its clip is the frame three times,
    as the input pipeline makes it). Returns (state, logits [B, H, W, 1]); the state keeps
    the encoder features of the last two frames at the FFA levels."""
    del mask  # FLA-Net is not given masks.
    self._check_size(*frame.shape[1:3])
    encoded = self._encode(frame, False)
    history = {level: jnp.stack([encoded[level]] * 2, axis=1) for level in self.fusions}
    return self._stream(history, encoded, frame.shape[1:3])

  def step(self, state: dict, frame: jnp.ndarray) -> tuple[dict, jnp.ndarray]:
    """Streaming: the next frame, encoded once; the same logits as the clip forward pass."""
    return self._stream(state, self._encode(frame, False), frame.shape[1:3])

  def _stream(self, history: dict, encoded: dict, size: tuple[int, int]
              ) -> tuple[dict, jnp.ndarray]:
    # Levels without FFA use frame t only: broadcasting it to the window costs nothing.
    window = {level: (jnp.concatenate([history[level], f[:, None]], axis=1)
                      if level in self.fusions else
                      jnp.broadcast_to(f[:, None], f.shape[:1] + (3,) + f.shape[1:]))
              for level, f in encoded.items()}
    logits = self._decode(window, 2, size, False)['logits']
    return {level: window[level][:, 1:] for level in self.fusions}, logits

  def _decode(self, encoded: dict, index: int, size: tuple[int, int], train: bool) -> dict:
    """Segmentation (and heatmap) of frame ``index`` of the encoded clip, with its two
    predecessors as auxiliary frames."""
    features, fused = {}, {}
    for level, f in encoded.items():
      f = f[:, index - 2:index + 1]
      if level in self.fusions:
        shifted = temporal_shift(f, self.temporal_shift)
        o_t = fused[level] = self.fusions[level](shifted[:, 2], shifted[:, 1], shifted[:, 0])
        features[level] = o_t if self.ffa_combine == 'replace' else f[:, 2] + o_t
      else:
        features[level] = f[:, 2]
    if self.design == 'released':
      return self._decode_released(features, fused, size, train)
    return self._decode_paper(features, size, train)

  def _decode_paper(self, features: dict, size: tuple[int, int], train: bool) -> dict:
    """The paper's two-branch decoder: BConv([up(d2s + d2l), d1s + d1l]) -> 1x1 conv."""
    seg = self.segmentation(features, train=train)
    d1, d2 = seg[-1], seg[-2]
    out = {}
    if self.localization:
      loc = self.localisation(features, train=train)
      d1, d2 = d1 + loc[-1], d2 + loc[-2]
      out['heatmap'] = nn.sigmoid(_upsample(self.heatmap_head(loc[-1]), size))
    fused_last = jnp.concatenate([_upsample(d2, d1.shape[1:3]), d1], axis=-1)
    out['logits'] = _upsample(self.mask_head(self.fuse_last(fused_last)), size)
    return out

  def _decode_released(self, features: dict, fused: dict, size: tuple[int, int],
                       train: bool) -> dict:
    """The released head: the smp decoder's output plus the heatmap, then a 3x3 conv."""
    x, out = self.decoder(features, train=train), {}
    if self.localization:
      (o_t,) = fused.values()
      out['heatmap'] = _upsample(self.heatmap_head(o_t), size)
      x = x + out['heatmap']
    out['logits'] = self.segmentation_head(x)
    return out
