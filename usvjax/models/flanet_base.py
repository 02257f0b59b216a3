"""What FLA-Net's two architectures share (``flanet.py``: the paper's, ``flanet_released.py``:
the released code's): the clip, the encoder, the fusion at each level, streaming.

Input ``batch['frames']`` [B, T, H, W, C] with the target frame t last (T >= 3); the model
uses I_t, I_{t-1}, I_{t-2} = frames[:, -1], frames[:, -2], frames[:, -3]. Outputs:
``logits`` [B, H, W, 1] (segmentation S_t, pre-sigmoid); with the localisation branch also
``heatmap`` [B, H, W, 1] (H_t, in [0, 1]; unbounded in the released design) and, when
training on clips of T >= 4 frames, ``previous_heatmap`` (H_{t-1}: the same network applied
to I_{t-1}, I_{t-2}, I_{t-3}; the positive of the location-based contrastive loss, see
``usvjax.losses``).

**Encoder.** One ResNet/Res2Net (Res2Net-50 26w4s in the paper) shared by all frames; its
stride-2..32 features f (channels 64, 256, 512, 1024, 2048 at width 1).

**Which levels, and how o_t is used.** The paper draws one FFA between the encoder and the
decoder, so by default (``ffa_levels=('stride32',)``, ``ffa_combine='replace'``) o_t
replaces the deepest features of frame t, and the decoder's skip connections are frame t's
own. The released code instead runs it on the stride-16 features only, after a temporal
channel shift (``temporal_shift=1/8``), and adds o_t to f_t (``ffa_combine='add'``), with
its own modules (``design='released'``, ``flanet_released.py``): the ``released_code``
config variant.

**The "Basic" aggregation (Table 3).** ``aggregation='concat'`` replaces every FFA, in
either architecture, with the concatenation of the three frames' features and a 1x1 conv
(``ConcatFuse``).

**Streaming** (``start``/``step``, see ``usvjax.core.streaming``), both designs: the state is
the encoder features of t-2 and t-1 at the FFA levels, so each new frame is encoded once;
the logits equal the clip forward pass's.
"""
from __future__ import annotations

from collections.abc import Sequence
import dataclasses
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from usvjax.errors import ConfigError
from usvjax.models.backbones import resnet

LEVELS = ('stride2', 'stride4', 'stride8', 'stride16', 'stride32')


def group_count(channels: int, groups: int) -> int:
  """The largest divisor of ``channels`` that is <= ``groups`` (a GroupNorm's groups)."""
  return max(g for g in range(1, min(groups, channels) + 1) if channels % g == 0)


def upsample(x: jnp.ndarray, size: tuple[int, int]) -> jnp.ndarray:
  """Bilinear resizing of [B, h, w, c] to [B, size[0], size[1], c]."""
  return jax.image.resize(x, (x.shape[0],) + size + (x.shape[-1],), 'bilinear')


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


class ConcatFuse(nn.Module):
  """The "Basic" aggregation of Table 3: 1x1 conv of the three frames' features."""

  @nn.compact
  def __call__(self, current: jnp.ndarray, previous: jnp.ndarray,
               before_previous: jnp.ndarray) -> jnp.ndarray:
    x = jnp.concatenate([current, previous, before_previous], axis=-1)
    return nn.Conv(current.shape[-1], (1, 1), name='conv')(x)


class FLANetOptions(nn.Module):
  """The fields of ``config.model`` that both architectures take (see their modules)."""
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


OPTIONS = tuple(f.name for f in dataclasses.fields(FLANetOptions)
                if f.name not in ('parent', 'name'))


class FLANetBase(FLANetOptions):
  """One FLA-Net architecture: the encoder, the fusion of frames t, t-1, t-2 at the FFA
  levels, the clip forward pass and streaming. A subclass names its ``DESIGN``, its
  number of ``DECODER_BLOCKS``, its ``FREQUENCY_MODULE`` (the FFA) and the
  ``SIZE_MULTIPLE`` its frames' sides need, builds its decoder and heads in ``setup`` after
  this one, and maps the fused features to the outputs in ``_outputs``."""
  DESIGN: ClassVar[str]
  DECODER_BLOCKS: ClassVar[int]
  FREQUENCY_MODULE: ClassVar[type[nn.Module]]
  SIZE_MULTIPLE: ClassVar[int] = 1

  def setup(self):
    if self.aggregation not in ('ffa', 'concat'):
      raise ConfigError(f"config.model.aggregation={self.aggregation!r}: use 'ffa' or 'concat'.")
    if self.ffa_combine not in ('replace', 'add'):
      raise ConfigError(f"config.model.ffa_combine={self.ffa_combine!r}: use 'replace' or 'add'.")
    unknown = set(self.ffa_levels) - set(LEVELS)
    if unknown:
      raise ConfigError(f'config.model.ffa_levels has {sorted(unknown)}; levels are {LEVELS}.')
    blocks = self.DECODER_BLOCKS
    if len(self.decoder_channels) != blocks:
      raise ConfigError(f'config.model.decoder_channels={tuple(self.decoder_channels)}: the '
                        f'{self.DESIGN!r} design has {blocks} decoder blocks, give {blocks} widths.')
    self.encoder = resnet.ResNet(self.backbone, width=self.backbone_width)
    if self.aggregation == 'concat':
      self.fusions = {level: ConcatFuse() for level in self.ffa_levels}
    else:
      self.fusions = {level: self.FREQUENCY_MODULE(reduction=self.ffa_reduction,
                                                   groups=self.groups)
                      for level in self.ffa_levels}

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
    m = self.SIZE_MULTIPLE
    if h % m or w % m:
      raise ConfigError(f'the {self.DESIGN} FLA-Net design needs frames whose height and width '
                        f'are multiples of {m}; got {h}x{w}: set config.input.image_size.')

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
    return self._outputs(features, fused, size, train)

  def _outputs(self, features: dict, fused: dict, size: tuple[int, int], train: bool) -> dict:
    """The decoder and heads: frame t's features at every level (o_t combined in) and the
    FFA outputs o_t at the FFA levels -> {'logits'[, 'heatmap']} at ``size``."""
    raise NotImplementedError(f'{type(self).__name__} defines no decoder (_outputs).')
