"""DSANet (Zhou et al.): adjacent-frame and local-and-global semantic-aware modules for
ultrasound video segmentation.

Input ``batch['frames']`` [B, T, H, W, C], target frame t last; the model uses the last
three frames I_{t-2}, I_{t-1}, I_t. Outputs ``logits`` [B, H, W, 1] (target, pre-sigmoid)
and ``aux_logits`` [B, 2, H, W, 1] for I_{t-2}, I_{t-1} (the auxiliary supervision of
Eq. 6).

**Encoder and local features.** One ResNet/Res2Net (Res2Net-50 in the paper) shared by the
three frames; each of its stride-32/16/8/4 features is reduced to ``channels`` channels by
a 1x1 conv-BN-ReLU shared by the frames. The current frame's reduced features are the
unconditional local features F_l^1..4 (strides 32, 16, 8, 4).

**AFSA (Sec. III-B)** on the stride-32 features. For a frame F and its predecessor P
(both [h, w, C]):
  S = sim(P, F)                                    (Eq. 1)
  F' = S * F,  P' = S * P                          (Eq. 2)
  AFSA(P, F) = GAP(P') * F' * GAP(F')              (Eq. 3, GAP = global average pooling)
Eq. 1 as printed is a cosine of two scalars (always +-1); ``similarity='channel'`` (default)
reads it as the cosine of each channel's spatial response, S_c = <P_c, F_c> /
(|P_c| |F_c|) over the h*w positions, a [C] vector; ``similarity='pixel'`` is the released
code's reading, the cosine over channels at each position, an [h, w] map. Fig. 3's two
branches: the memory branch m = AFSA(F_{t-2}, F_{t-1}) and the current-frame branch
f_a = AFSA(m, F_t).

**LGSA (Sec. III-C).** ``attention_layers`` self-attention layers over the h*w positions of
f_a (Eq. 4: single head, d = C, linear q, k, v and an output projection). Our choice where
the paper is silent: each layer is pre-norm and residual, x <- x + SA(LayerNorm(x)), the
standard way to stack attention layers stably that keeps AFSA's temporal features in the
sum. Then F_g^1 = f_a^SA and three conv layers (upsample x2, 3x3 conv-BN-ReLU) give F_g^2..4
at strides 16, 8, 4. Eq. 5 at every scale i:
  F_fus1^i = [F_g^i[:C/2], F_l^i[C/2:]],  F_fus2^i = [F_g^i[C/2:], F_l^i[:C/2]].
All eight maps are upsampled to stride 4 and concatenated, and a 1x1 conv predicts the
mask, upsampled to the input size (upsampling and a 1x1 conv are both linear, so this
order equals upsampling the features to full size first, at a fraction of the memory).

**Auxiliary heads.** One head shared by I_{t-1} and I_{t-2}: the frame's four reduced
features upsampled to stride 4, concatenated, a 3x3 conv-BN-ReLU and a 1x1 conv.

**Streaming** (``start``/``step``, see ``usvjax.streaming``): only the reduced stride-32
features of t-2 and t-1 reach the target's output, so they are the state, and each new
frame is encoded once; the logits equal the clip forward pass's.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from usvjax.models import layers
from usvjax.models.backbones import resnet

SCALES = ('stride32', 'stride16', 'stride8', 'stride4')
_EPS = 1e-6


def similarity(previous: jnp.ndarray, current: jnp.ndarray, mode: str) -> jnp.ndarray:
  """Eq. 1: cosine similarity of [B, h, w, C] features, per channel ([B, 1, 1, C]) or per
  position ([B, h, w, 1])."""
  axes = (1, 2) if mode == 'channel' else (3,)
  dot = jnp.sum(previous * current, axis=axes, keepdims=True)
  squared_norms = (jnp.sum(previous**2, axis=axes, keepdims=True)
                   * jnp.sum(current**2, axis=axes, keepdims=True))
  # The floor comes before the square root: ReLU features often have all-zero channels,
  # and the gradient of a norm at zero is not finite.
  return dot / jnp.sqrt(jnp.maximum(squared_norms, _EPS**2))


def afsa(previous: jnp.ndarray, current: jnp.ndarray, mode: str = 'channel') -> jnp.ndarray:
  """Eqs. 1-3: GAP(S * previous) * (S * current) * GAP(S * current), [B, h, w, C]."""
  s = similarity(previous, current, mode)
  refined, refined_previous = s * current, s * previous
  pool = lambda x: jnp.mean(x, axis=(1, 2), keepdims=True)  # pylint: disable=unnecessary-lambda-assignment
  return pool(refined_previous) * refined * pool(refined)


def reassemble(global_features: jnp.ndarray, local_features: jnp.ndarray
               ) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Eq. 5: ([g[:C/2], l[C/2:]], [g[C/2:], l[:C/2]]) on the channel axis."""
  half = global_features.shape[-1] // 2
  return (jnp.concatenate([global_features[..., :half], local_features[..., half:]], -1),
          jnp.concatenate([global_features[..., half:], local_features[..., :half]], -1))


class SelfAttention(nn.Module):
  """x + SA(LayerNorm(x)) over the positions of [B, h, w, C] (Eq. 4, one head)."""

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    b, h, w, c = x.shape
    tokens = x.reshape(b, h * w, c)
    y = nn.LayerNorm(name='norm')(tokens)
    y = nn.MultiHeadDotProductAttention(num_heads=1, name='attention')(y, y)
    return (tokens + y).reshape(x.shape)


def _resize(x: jnp.ndarray, like: jnp.ndarray) -> jnp.ndarray:
  return jax.image.resize(x, x.shape[:1] + like.shape[1:3] + x.shape[3:], 'bilinear')


class DSANet(nn.Module):
  """DSANet; see the module docstring for the fields."""
  backbone: str = 'res2net50_26w_4s'
  backbone_width: float = 1.0
  channels: int = 64
  attention_layers: int = 2
  similarity: str = 'channel'  # 'channel' (the paper, read as in the docstring) or 'pixel'.

  @nn.compact
  def __call__(self, batch: dict[str, jnp.ndarray], *, train: bool, stream: bool = False,
               history: jnp.ndarray | None = None) -> dict[str, jnp.ndarray]:
    """The clip forward pass. Streaming (``stream``, see ``step``): ``batch['frames']`` holds
    frame t only and ``history`` the reduced stride-32 features of t-2 and t-1 (None at a
    video's first frame: frame t repeated, as the input pipeline does)."""
    if self.similarity not in ('channel', 'pixel'):
      raise ValueError(f"config.model.similarity={self.similarity!r}: use 'channel' or 'pixel'.")
    frames = batch['frames']
    b, t, h, w, c = frames.shape
    used = 1 if stream else 3
    if t < used:
      raise ValueError(f'DSANet needs clips of >= 3 frames (t, t-1, t-2); got {t}: set '
                       'config.input.clip_length >= 3.')
    x = frames[:, -used:].reshape((b * used, h, w, c))
    x = jnp.broadcast_to(x, x.shape[:-1] + (3,)) if c == 1 else x
    encoded = resnet.ResNet(self.backbone, width=self.backbone_width, name='encoder')(
        resnet.imagenet_normalize(x), train=train)
    local = {scale: layers.ConvNormAct(self.channels, 1, name=f'reduce_{scale}')(
        encoded[scale], train=train).reshape((b, used) + encoded[scale].shape[1:3] + (-1,))
             for scale in SCALES}  # [B, frames (t-2, t-1, t or only t), h, w, C] per scale.
    deepest = local['stride32']
    if stream:
      past = jnp.concatenate([deepest, deepest], axis=1) if history is None else history
      deepest = jnp.concatenate([past, deepest], axis=1)
    memory = afsa(deepest[:, 0], deepest[:, 1], self.similarity)
    f_a = afsa(memory, deepest[:, 2], self.similarity)
    g = f_a
    for i in range(self.attention_layers):
      g = SelfAttention(name=f'self_attention{i}')(g)
    fused = []
    for i, scale in enumerate(SCALES):
      l = local[scale][:, -1]
      if i:
        g = layers.ConvNormAct(self.channels, name=f'global{i}')(_resize(g, l), train=train)
      fused.extend(reassemble(g, l))
    finest = local['stride4'][:, -1]
    mask = nn.Conv(1, (1, 1), name='head')(
        jnp.concatenate([_resize(f, finest) for f in fused], axis=-1))
    full = lambda y: jax.image.resize(y, (y.shape[0], h, w, 1), 'bilinear')  # pylint: disable=unnecessary-lambda-assignment
    if stream:
      return {'logits': full(mask), 'history': deepest[:, 1:]}
    aux_head = _AuxHead(self.channels, name='aux_head')
    aux = [aux_head([local[s][:, k] for s in SCALES], train) for k in (0, 1)]
    return {'logits': full(mask), 'aux_logits': jnp.stack([full(a) for a in aux], axis=1)}

  def start(self, frame: jnp.ndarray, mask: jnp.ndarray | None = None
            ) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Streaming: the first frame [B, H, W, C] (its clip is the frame three times, as the
    input pipeline makes it). Returns (state, logits [B, H, W, 1]); the state is the
    reduced stride-32 features of the last two frames, all the next frame needs."""
    del mask  # DSANet is not given masks.
    return self.step(None, frame)

  def step(self, state: jnp.ndarray | None, frame: jnp.ndarray
           ) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Streaming: the next frame, encoded once; the same logits as the clip forward pass."""
    out = self({'frames': frame[:, None]}, train=False, stream=True, history=state)
    return out['history'], out['logits']


class _AuxHead(nn.Module):
  """Mask logits at stride 4 of one frame from its reduced features (all scales)."""
  channels: int

  @nn.compact
  def __call__(self, features: list[jnp.ndarray], train: bool) -> jnp.ndarray:
    finest = features[-1]
    x = jnp.concatenate([_resize(f, finest) for f in features], axis=-1)
    x = layers.ConvNormAct(self.channels, name='conv')(x, train=train)
    return nn.Conv(1, (1, 1), name='out')(x)
