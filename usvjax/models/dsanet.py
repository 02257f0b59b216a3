"""DSANet (Zhou et al.): adjacent-frame and local-and-global semantic-aware modules for
ultrasound video segmentation.

Input ``batch['frames']`` [B, T, H, W, C], target frame t last, H and W multiples of 32;
the model uses the last three frames I_{t-2}, I_{t-1}, I_t. Outputs ``logits``
[B, H, W, 1] (target, pre-sigmoid) and ``aux_logits`` [B, 2, H, W, 1] for I_{t-2}, I_{t-1}
(the auxiliary supervision of Eq. 6).

Where the paper is silent the layout is the released code's (ZhouL2001/DSANet, netV4.py;
the paper's Fig. 3 shows the same blocks). Sizes below are the paper config's (``level``
'stride4', ``channels`` 256, ``attention_layers`` 12, Res2Net-50 channels 256/512/1024/2048
at strides 4/8/16/32).

**Encoder and frame decoders.** One Res2Net-50 encodes the three frames (one batch, so
one set of BatchNorm statistics). Each frame's features are "integrated with skip
connections" (Sec. III-A) by a U-Net decoder from stride 32 up to ``level``: per step a 2x2
stride-2 transposed conv to the skip's channels, concatenation with the skip, two 3x3
conv-BN-ReLU; the last step outputs ``channels``. As released, each frame position (t, t-1,
t-2) has its own decoder (``decoder_t``, ``decoder_t1``, ``decoder_t2``).

**AFSA (Sec. III-B)** on those [h, w, ``channels``] maps, as two modules (Fig. 3):
the memory branch m = AFSA(F_{t-2}, F_{t-1}) and the target branch f_a = AFSA(m, F_t).
Eq. 1 as printed is a cosine of two scalars (always +-1). ``similarity='channel'``
(default) reads it as the cosine of each channel's spatial response between the two
frames, S_c = <P_c, F_c> / (|P_c| |F_c|) over the h*w positions, a [C] vector;
``similarity='pixel'`` is the released code's reading, the cosine over channels at each
position, an [h, w] map. The gating (``afsa``):

* ``'bounded'`` (default, the released code): with CA(x) = sigmoid(MLP(avgpool x) +
  MLP(maxpool x)) (CBAM channel attention; MLP C -> C/16 -> C, ReLU, no biases; at
  least 8 hidden units in narrow models, see ``ChannelAttention``) and
  s = sigmoid(S),
    F' = s * F_t,  P' = s * P,  y = F' * CA_1(P'),  AFSA(P, F_t) = y * CA_2(y).
  Every gate lies in (0, 1), so |AFSA(P, F_t)| <= |F_t| element by element at any scale:
  the output is bounded by a linear function of the features (its local growth exponent
  can still exceed 1 where a sigmoid gate is in its rising range, but not the bound). The
  pooled previous frame (the "Pooling(F'_{t-1})" of Eq. 3) enters through CA_1 and the
  self-context term through CA_2, applied to y as released (Eq. 3 pools F'_t).
* ``'literal'``: Eqs. 2-3 as printed, F' = S F_t, P' = S P and
  AFSA = GAP(P') * F' * GAP(F') (GAP = global average pooling). It is a product of three
  copies of the features, so it grows with the third power of their scale, and with
  the fifth in the target branch, which multiplies two AFSA outputs: kept only to
  reproduce that reading, under which DSANet collapsed under unseen speckle (issue 19).
* ``'none'``: no AFSA (ablation): m = F_{t-1}, f_a = F_t; the past frames reach only the
  auxiliary losses.

**LGSA (Sec. III-C).** ``attention_layers`` self-attention layers over the h*w positions
of f_a (Eq. 4: one head, d = C, linear q, k, v, no output projection, as released). Our
choice where paper and code disagree with a stable stack: each layer is residual and
pre-normalised, x <- x + SA(LayerNorm(x)), with a LayerNorm without scale or offset (the
q, k, v maps absorb them, so the parameters are the released ones) and no bias on k
(softmax over keys ignores it). The released stack has neither residual nor norm; a
stack of 12 plain attention layers loses rank doubly exponentially (Dong et al., 2021),
and the released one escapes only because its ``mem.view(b, c, h, w)`` reinterprets the
[hw, C] output as [C, h, w], shuffling channels into positions — a reshape bug we do not
copy. Then the global features F_g (the released stage construction): at ``level`` two
3x3 conv-BN-ReLU (C -> C -> that scale's encoder channels), then per coarser scale two
more, the second with stride 2 (a finer scale, when ``level`` is not stride 4, gets a x2
bilinear upsampling and two more). Eq. 5 at every scale i, with the local features F_l^i
the target frame's encoder features (as released):
  F_fus1^i = [F_g^i[:C/2], F_l^i[C/2:]],  F_fus2^i = [F_g^i[C/2:], F_l^i[:C/2]].
Each of the two fused pyramids is decoded by a U-Net decoder as above (to stride 4,
``channels``), the two are concatenated, and a 3x3 conv-BN-ReLU (to ``channels``/2) and a
1x1 conv predict the mask at stride 4, upsampled bilinearly to the input size (half-pixel
centres; the released training uses align_corners=True). The released code pairs the
halves as [F_l[:C/2], F_g[:C/2]], [F_l[C/2:], F_g[C/2:]]; with two identical decoders
after it this is the same family of functions.
``lgsa=False`` (ablation): f_a goes straight to that head, without self-attention,
global features or reassembly.

**Auxiliary heads (as released).** A 1x1 conv on the memory branch m predicts I_{t-1}'s
mask, a 1x1 conv on F_{t-2} (the t-2 frame decoder's output) predicts I_{t-2}'s.

**Parameters.** The released model's, except the conv biases in front of BatchNorm
(BatchNorm removes them: their gradient is zero) and the k biases.

**Streaming** (``start``/``step``, see ``usvjax.core.streaming``): the state is the encoder
features (all four scales) of t-2 and t-1, so each new frame is encoded once; the frame
decoders are position-specific, so they run on the state every step. The logits equal the
clip forward pass's.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from usvjax.errors import ConfigError
from usvjax.models import layers
from usvjax.models import subpixel
from usvjax.models.backbones import resnet

SCALES = ('stride4', 'stride8', 'stride16', 'stride32')  # Finest first.
LEVELS = SCALES[:3]
GATES = ('bounded', 'literal', 'none')
_EPS = 1e-6

Features = dict[str, jnp.ndarray]


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


def reassemble(global_features: jnp.ndarray, local_features: jnp.ndarray
               ) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Eq. 5: ([g[:C/2], l[C/2:]], [g[C/2:], l[:C/2]]) on the channel axis."""
  half = global_features.shape[-1] // 2
  return (jnp.concatenate([global_features[..., :half], local_features[..., half:]], -1),
          jnp.concatenate([global_features[..., half:], local_features[..., :half]], -1))


def _pool(x: jnp.ndarray) -> jnp.ndarray:
  return jnp.mean(x, axis=(1, 2), keepdims=True)


class ChannelAttention(nn.Module):
  """CBAM channel attention of [B, h, w, C]: sigmoid(MLP(avg pool) + MLP(max pool)),
  [B, 1, 1, C] in (0, 1); one MLP C -> C/``reduction`` -> C, ReLU, no biases, with at least
  min(C, 8) hidden units (released: 256/16 = 16). Its inputs are non-negative, so a narrow
  model's one or two hidden units are often dead from the start, and then no gradient
  revives them. With ``similarity='channel'`` the target AFSA's ``previous_gate`` is the
  only way I_{t-2} reaches the target's logits (the memory is F_{t-1} times per-channel
  factors, which a per-channel cosine cancels)."""
  reduction: int = 16

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    c = x.shape[-1]
    hidden = nn.Dense(max(c // self.reduction, min(c, 8)), use_bias=False, name='hidden')
    out = nn.Dense(c, use_bias=False, name='out')
    mlp = lambda v: out(nn.relu(hidden(v)))  # pylint: disable=unnecessary-lambda-assignment
    return jax.nn.sigmoid(mlp(_pool(x)) + mlp(jnp.max(x, axis=(1, 2), keepdims=True)))


class AFSA(nn.Module):
  """AFSA(previous, current) of two [B, h, w, C] maps -> [B, h, w, C]; ``gate`` 'bounded'
  or 'literal' (see the module docstring)."""
  similarity: str = 'channel'
  gate: str = 'bounded'

  @nn.compact
  def __call__(self, previous: jnp.ndarray, current: jnp.ndarray) -> jnp.ndarray:
    s = similarity(previous, current, self.similarity)
    if self.gate == 'literal':
      refined = s * current
      return _pool(s * previous) * refined * _pool(refined)
    s = jax.nn.sigmoid(s)
    refined = s * current * ChannelAttention(name='previous_gate')(s * previous)
    return refined * ChannelAttention(name='self_gate')(refined)


class SelfAttention(nn.Module):
  """x + softmax(q k^T / sqrt(C)) v over the positions of [B, h, w, C] (Eq. 4, one head),
  q, k, v linear maps of LayerNorm(x)."""

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    b, h, w, c = x.shape
    tokens = x.reshape(b, h * w, c)
    normed = nn.LayerNorm(use_scale=False, use_bias=False)(tokens)
    q = nn.Dense(c, name='query')(normed)
    k = nn.Dense(c, use_bias=False, name='key')(normed)
    v = nn.Dense(c, name='value')(normed)
    weights = jax.nn.softmax(jnp.einsum('bqc,bkc->bqk', q, k) / jnp.sqrt(c), axis=-1)
    return (tokens + jnp.einsum('bqk,bkc->bqc', weights, v)).reshape(x.shape)


class UpDecoder(nn.Module):
  """U-Net decoder of multi-scale features {scale: [B, h, w, C_scale]} from stride 32 up
  to ``level``: [B, h_level, w_level, ``channels``] (see the module docstring)."""
  channels: int
  level: str = 'stride4'

  @nn.compact
  def __call__(self, features: Features, *, train: bool) -> jnp.ndarray:
    x = features['stride32']
    steps = SCALES[SCALES.index(self.level):-1][::-1]  # Coarse to fine, e.g. 16, 8, 4.
    for i, scale in enumerate(steps):
      skip = features[scale]
      width = self.channels if i == len(steps) - 1 else skip.shape[-1]
      x = subpixel.ConvTranspose(skip.shape[-1], (2, 2), (2, 2), name=f'up_{scale}')(x)
      x = jnp.concatenate([x, skip], axis=-1)
      x = layers.ConvNormAct(width, name=f'{scale}_conv0')(x, train=train)
      x = layers.ConvNormAct(width, name=f'{scale}_conv1')(x, train=train)
    return x


class GlobalPyramid(nn.Module):
  """F_g^i: the global features at every scale from f_a^SA at ``level``, with the shapes
  of the local features ``like`` (see the module docstring)."""
  level: str

  @nn.compact
  def __call__(self, x: jnp.ndarray, like: Features, *, train: bool) -> Features:
    def block(x, scale, strides=1):
      x = layers.ConvNormAct(x.shape[-1], name=f'{scale}_conv0')(x, train=train)
      return layers.ConvNormAct(like[scale].shape[-1], strides=strides,
                                name=f'{scale}_conv1')(x, train=train)
    k = SCALES.index(self.level)
    out = {self.level: block(x, self.level)}
    for coarser, scale in zip(SCALES[k:], SCALES[k + 1:]):
      out[scale] = block(out[coarser], scale, strides=2)
    for finer, scale in zip(SCALES[k:0:-1], SCALES[k - 1::-1]):
      out[scale] = block(_resize(out[finer], like[scale]), scale)
    return out


class LGSA(nn.Module):
  """f_a [B, h, w, C] at ``level`` and the target frame's encoder features -> mask logits
  at stride 4 [B, H/4, W/4, 1] (Eqs. 4-5 and the prediction head)."""
  channels: int
  level: str = 'stride4'
  attention_layers: int = 12

  @nn.compact
  def __call__(self, f_a: jnp.ndarray, local: Features, *, train: bool) -> jnp.ndarray:
    g = f_a
    for i in range(self.attention_layers):
      g = SelfAttention(name=f'self_attention{i}')(g)
    global_features = GlobalPyramid(self.level, name='global')(g, local, train=train)
    fused = {s: reassemble(global_features[s], local[s]) for s in SCALES}
    x = jnp.concatenate(
        [UpDecoder(self.channels, name=f'decoder{k}')({s: f[k] for s, f in fused.items()},
                                                      train=train) for k in (0, 1)], axis=-1)
    return MaskHead(self.channels // 2, name='head')(x, train=train)


class MaskHead(nn.Module):
  """3x3 conv-BN-ReLU to ``channels``, then a 1x1 conv to one logit."""
  channels: int

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    x = layers.ConvNormAct(self.channels, name='conv')(x, train=train)
    return nn.Conv(1, (1, 1), name='out')(x)


def _resize(x: jnp.ndarray, like: jnp.ndarray) -> jnp.ndarray:
  return jax.image.resize(x, x.shape[:1] + like.shape[1:3] + x.shape[3:], 'bilinear')


class DSANet(nn.Module):
  """DSANet; see the module docstring for the fields."""
  backbone: str = 'res2net50_26w_4s'
  backbone_width: float = 1.0
  level: str = 'stride4'  # Where AFSA and the self-attention work: stride4, stride8, stride16.
  channels: int = 256
  attention_layers: int = 12
  similarity: str = 'channel'  # 'channel' (the paper, read as in the docstring) or 'pixel'.
  afsa: str = 'bounded'  # 'bounded' (released), 'literal' (Eqs. 2-3 as printed), 'none'.
  lgsa: bool = True

  def _check(self, h: int, w: int) -> None:
    problems = [
        (self.similarity not in ('channel', 'pixel'),
         f"config.model.similarity={self.similarity!r}: use 'channel' or 'pixel'."),
        (self.afsa not in GATES, f'config.model.afsa={self.afsa!r}: use one of {GATES}.'),
        (self.level not in LEVELS, f'config.model.level={self.level!r}: use one of {LEVELS}.'),
        (self.channels < 2, f'config.model.channels={self.channels}: use >= 2.'),
        (h % 32 or w % 32, f'DSANet needs image sides that are multiples of 32; got {h}x{w}: '
                           'set config.input.image_size.')]
    for bad, message in problems:
      if bad:
        raise ConfigError(message)

  @nn.compact
  def __call__(self, batch: dict[str, jnp.ndarray], *, train: bool, stream: bool = False,
               history: Features | None = None) -> dict[str, jnp.ndarray]:
    """The clip forward pass. Streaming (``stream``, see ``step``): ``batch['frames']`` holds
    frame t only and ``history`` the encoder features of t-2 and t-1 ({scale:
    [B, 2, h, w, C]}; None at a video's first frame: frame t repeated, as the input
    pipeline does)."""
    frames = batch['frames']
    b, t, h, w, c = frames.shape
    self._check(h, w)
    used = 1 if stream else 3
    if t < used:
      raise ConfigError(f'DSANet needs clips of >= 3 frames (t, t-1, t-2); got {t}: set '
                        'config.input.clip_length >= 3.')
    x = frames[:, -used:].reshape((b * used, h, w, c))
    x = jnp.broadcast_to(x, x.shape[:-1] + (3,)) if c == 1 else x
    encoded = resnet.ResNet(self.backbone, width=self.backbone_width, name='encoder')(
        resnet.imagenet_normalize(x), train=train)
    # {scale: [B, frames (t-2, t-1, t), h, w, C]}.
    features = {s: encoded[s].reshape((b, used) + encoded[s].shape[1:]) for s in SCALES}
    if stream:
      past = history if history is not None else {
          s: jnp.concatenate([f, f], axis=1) for s, f in features.items()}
      features = {s: jnp.concatenate([past[s], features[s]], axis=1) for s in SCALES}
    frame = lambda k: {s: f[:, k] for s, f in features.items()}  # pylint: disable=unnecessary-lambda-assignment
    before, previous, current = (
        UpDecoder(self.channels, self.level, name=name)(frame(k), train=train)
        for k, name in enumerate(('decoder_t2', 'decoder_t1', 'decoder_t')))
    if self.afsa == 'none':
      memory, f_a = previous, current
    else:
      memory = AFSA(self.similarity, self.afsa, name='afsa_memory')(before, previous)
      f_a = AFSA(self.similarity, self.afsa, name='afsa_target')(memory, current)
    if self.lgsa:
      mask = LGSA(self.channels, self.level, self.attention_layers, name='lgsa')(
          f_a, frame(2), train=train)
    else:
      mask = MaskHead(self.channels // 2, name='head')(f_a, train=train)
    full = lambda y: jax.image.resize(y, (y.shape[0], h, w, 1), 'bilinear')  # pylint: disable=unnecessary-lambda-assignment
    if stream:
      return {'logits': full(mask), 'history': {s: f[:, 1:] for s, f in features.items()}}
    aux = [nn.Conv(1, (1, 1), name=f'aux_{name}')(y)
           for name, y in (('t2', before), ('t1', memory))]
    return {'logits': full(mask), 'aux_logits': jnp.stack([full(a) for a in aux], axis=1)}

  def start(self, frame: jnp.ndarray, mask: jnp.ndarray | None = None
            ) -> tuple[Features, jnp.ndarray]:
    """Streaming: the first frame [B, H, W, C] (its clip is the frame three times, as the
    input pipeline makes it). Returns (state, logits [B, H, W, 1]); the state is the
    encoder features of the last two frames, all the next frame needs."""
    del mask  # DSANet is not given masks.
    return self.step(None, frame)

  def step(self, state: Features | None, frame: jnp.ndarray
           ) -> tuple[Features, jnp.ndarray]:
    """Streaming: the next frame, encoded once; the same logits as the clip forward pass."""
    out = self({'frames': frame[:, None]}, train=False, stream=True, history=state)
    return out['history'], out['logits']
