"""FLA-Net (Lin et al., MICCAI 2023): frequency-based feature aggregation and a two-branch
decoder for breast-lesion segmentation in ultrasound video.

Input ``batch['frames']`` [B, T, H, W, C] with the target frame t last (T >= 3); the model
uses I_t, I_{t-1}, I_{t-2} = frames[:, -1], frames[:, -2], frames[:, -3]. Outputs:
``logits`` [B, H, W, 1] (segmentation S_t, pre-sigmoid); with the localisation branch also
``heatmap`` [B, H, W, 1] (H_t, in [0, 1]) and, when training on clips of T >= 4 frames,
``previous_heatmap`` (H_{t-1}: the same network applied to I_{t-1}, I_{t-2}, I_{t-3}; the
positive of the location-based contrastive loss, see ``usvjax.losses``).

**Encoder.** One ResNet/Res2Net (Res2Net-50 26w4s in the paper) shared by all frames; its
stride-2..32 features f (channels 64, 256, 512, 1024, 2048 at width 1).

**FFA module (Sec. 3.1).** For features f_t, f_{t-1}, f_{t-2} [h, w, c] of one level:
  x_k = [Re F(f_k), Im F(f_k)] (2c channels), F = 2-D real FFT over (h, w), 'ortho' norm;
  y_1 = CA([x_t, x_{t-1}]) * [x_t, x_{t-1}],  y_2 = CA([x_t, x_{t-2}]) * [x_t, x_{t-2}];
  z_i = F^-1(y_i[real channels] + j y_i[imaginary channels]) (2c channels each);
  o_t = BConv(z_1 + z_2) (c channels).
CA = LayerNorm over channels -> 1x1 conv (4c -> 4c / ``ffa_reduction``, 16 as in
squeeze-and-excitation) -> ReLU -> 1x1 conv (-> 4c) -> sigmoid, an attention value per
frequency and channel (the paper gives no pooling, so none is applied); BConv = 3x3 conv, GroupNorm, ReLU. Our choices where the
paper is silent: the real FFT (rfft2/irfft2), so the spatial result is real; the layout
[Re x_t, Im x_t, Re x_{t-1}, Im x_{t-1}] of a group, split back as its Re and Im halves;
the LayerNorm as the "feature normalisation".

**Which levels, and how o_t is used.** The paper draws one FFA between the encoder and the
decoder, so by default (``ffa_levels=('stride32',)``, ``ffa_combine='replace'``) o_t
replaces the deepest features of frame t, and the decoder's skip connections are frame t's
own. The released code instead runs it on the stride-16 features only, after a temporal
channel shift (``temporal_shift=1/8``), and adds o_t to f_t (``ffa_combine='add'``): the
``released_code`` config variant.

**Two-branch decoder (Sec. 3.2).** Two U-Net decoders of four blocks (upsample x2, concat
the skip, two 3x3 conv-BN-ReLU; widths ``decoder_channels``), from stride 32 to stride 2.
The localisation branch predicts H_t from its last block d1l (1x1 conv, upsampling,
sigmoid). The segmentation output is BConv([up(d2s + d2l), d1s + d1l]) -> 1x1 conv ->
upsampling, where d1, d2 are the last two blocks (the paper adds the pairs and passes "the
addition result" into a BConv; as d2 has half the resolution, it is upsampled and
concatenated with d1).

**Ablations (Table 3).** ``aggregation='concat'`` replaces every FFA with the "Basic"
concatenation of the three frames' features and a 1x1 conv; ``localization=False`` drops
the localisation branch (segmentation from d1s, d2s only); the contrastive loss is
``config.task.contrastive_weight``.

**Streaming** (``start``/``step``, see ``usvjax.streaming``): the state is the encoder
features of t-2 and t-1 at the FFA levels, so each new frame is encoded once; the logits
equal the clip forward pass's.
"""
from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from usvjax.models import layers
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
  f = jnp.fft.rfft2(x, axes=(1, 2), norm='ortho')
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

  def setup(self):
    if self.aggregation not in ('ffa', 'concat'):
      raise ValueError(f"config.model.aggregation={self.aggregation!r}: use 'ffa' or 'concat'.")
    if self.ffa_combine not in ('replace', 'add'):
      raise ValueError(f"config.model.ffa_combine={self.ffa_combine!r}: use 'replace' or 'add'.")
    unknown = set(self.ffa_levels) - set(LEVELS)
    if unknown:
      raise ValueError(f'config.model.ffa_levels has {sorted(unknown)}; levels are {LEVELS}.')
    self.encoder = resnet.ResNet(self.backbone, width=self.backbone_width)
    fuse = FFA if self.aggregation == 'ffa' else ConcatFuse
    kwargs = {'reduction': self.ffa_reduction, 'groups': self.groups} if fuse is FFA else {}
    self.fusions = {level: fuse(**kwargs) for level in self.ffa_levels}
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
      raise ValueError(f'FLA-Net needs clips of >= 3 frames (t, t-1, t-2); got {t}: set '
                       'config.input.clip_length >= 3.')
    used = min(t, 4 if train and self.localization else 3)
    encoded = self._encode(frames[:, t - used:].reshape((b * used, h, w, c)), train)
    encoded = {k: v.reshape((b, used) + v.shape[1:]) for k, v in encoded.items()}
    outputs = self._decode(encoded, used - 1, (h, w), train)
    if used == 4:
      outputs['previous_heatmap'] = self._decode(encoded, 2, (h, w), train)['heatmap']
    return outputs

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
    features = {}
    for level, f in encoded.items():
      f = f[:, index - 2:index + 1]
      if level in self.fusions:
        shifted = temporal_shift(f, self.temporal_shift)
        fused = self.fusions[level](shifted[:, 2], shifted[:, 1], shifted[:, 0])
        features[level] = fused if self.ffa_combine == 'replace' else f[:, 2] + fused
      else:
        features[level] = f[:, 2]
    seg = self.segmentation(features, train=train)
    d1, d2 = seg[-1], seg[-2]
    out = {}
    if self.localization:
      loc = self.localisation(features, train=train)
      d1, d2 = d1 + loc[-1], d2 + loc[-2]
      out['heatmap'] = nn.sigmoid(_upsample(self.heatmap_head(loc[-1]), size))
    fused = jnp.concatenate([_upsample(d2, d1.shape[1:3]), d1], axis=-1)
    out['logits'] = _upsample(self.mask_head(self.fuse_last(fused)), size)
    return out
