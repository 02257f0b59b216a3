"""CLMAN (Huang et al., Front. Oncol. 2022): contrastive-learning-guided multi-meta
attention network for breast-ultrasound video classification.

**Deformed feature extractor (Sec. 3.1, Eq. 1).** f_t = Theta(v_t): ResNet-18 with
GroupNorm in every block (``norm='group'``) and embedded-Gaussian non-local blocks after
stages 3 and 4 (``nonlocal_stages=(3, 4)``), globally average-pooled: one 512-d vector per
frame (``frame_classifier.FrameEncoder``, sub-module ``encoder``).

**Multi-meta attention (Sec. 3.3, Eqs. 3-6).** For each frame's feature F^t (m dims),
``attention_layers`` cascaded fully-connected + tanh layers (Eq. 4; every layer keeps m
dims, so the last gives e^t, one score per dimension), a softmax over the frames *per
dimension* (Eq. 5), and F_bar = sum_t A^t o F^t (Eq. 6). Padded frames (``valid`` False)
get zero weight, so a padded sequence gives exactly the result of the same sequence
unpadded; equal scores give the average of the valid frames (the paper's degenerate case).
A linear classifier on F_bar gives the video logits. The tanh bounds every score to
[-1, 1], so at the paper's softmax (``attention_temperature`` 1) one frame's weight is at
most e^2 times another's and the module cannot reach the max pooling the paper calls its
extreme case; ``attention_temperature`` tau divides the scores (softmax(e / tau)): as
tau -> 0 each dimension takes the top-scored frame's value (max pooling when the scores
rise with the features).

**Table 3 alternatives** (``aggregation``): 'multi_meta' (default), 'average', 'max' (over
valid frames), 'lstm' (an LSTM of ``hidden`` units over the valid frames, its last state;
``cnn_lstm.MaskedLSTM``), and three attention layers, each applied as x + A(LayerNorm(x))
over the valid frames and followed by the average of the valid frames (``AttentionPool``):
'self_attention' (one single-head dot-product self-attention), 'external_attention'
(``ExternalAttention``) and 'efficient_mhsa' (``EfficientMHSA``). The paper cites them
without their settings; ours are in those classes. Like the multi-meta attention, average,
max and self- and external attention are blind to the frames' order (permuting the valid
frames permutes nothing in the output); the efficient MHSA's temporal reduction is not
(a strided convolution over neighbouring frames).

**Contrastive pretraining (Sec. 3.2, Eq. 2).** ``SimCLR``: the same extractor (sub-module
``encoder``, so its weights initialise CLMAN's with ``config.init.target='encoder'``) and
an MLP projection head, f_bar = MLP(Theta(tau(v))), applied to two augmented views of each
example; the loss is ``losses.nt_xent`` (``tasks/contrastive.py``).

**Training choices the paper leaves open** (``configs/clman.py``). Stage 2 fine-tunes the
whole network: the pretrained extractor initialises CLMAN's and trains with the
aggregation head and classifier at the same learning rate (the paper pretrains the
extractor "before formally training" and mentions no freezing; the trainer has no frozen
parameters). The paper gives SGD an "initial learning rate" of 1e-4 but no schedule, so
stage 2 keeps it constant (``schedule.name='constant'``); pretraining uses the cosine
annealing the paper names. LARS (pretraining) decays and trust-ratio-scales only weights,
not biases or normalisation parameters, as SimCLR (``usvjax.core.optim``).

Inputs: ``batch['frames']`` [B, T, H, W, C], ``batch['valid']`` [B, T]. Outputs:
``features`` [B, T, m], ``logits`` [B, K] (CLMAN); ``projections`` [B, 2, d] (SimCLR, T = 2
views).
"""
from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

from usvjax.errors import ConfigError
from usvjax.models import cnn_lstm
from usvjax.models import frame_classifier
from usvjax.models import layers

AGGREGATIONS = ('multi_meta', 'average', 'max', 'lstm', 'self_attention',
                'external_attention', 'efficient_mhsa')


def multi_meta_pool(features: jnp.ndarray, scores: jnp.ndarray, valid: jnp.ndarray
                    ) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Eqs. 5-6: sum_t softmax_t(scores)[t, d] * features[t, d] over the valid frames.

  Args:
    features: F, [B, T, m].
    scores: e, [B, T, m].
    valid: bool [B, T].
  Returns:
    F_bar [B, m] (zeros for a sequence without valid frames) and the weights a [B, T, m].
  """
  weights = layers.masked_softmax(scores, valid[..., None], axis=1)
  return jnp.sum(weights * features, axis=1), weights


class MultiMetaAttention(nn.Module):
  """Eqs. 4-6: cascaded Dense + tanh scores, softmax over frames per dimension (of the
  scores divided by ``temperature``), weighted sum: [B, T, m], [B, T] -> [B, m], and each
  frame's weight averaged over the m dimensions, [B, T] (what ``classify_video`` plots)."""
  layers: int = 2
  temperature: float = 1.0

  @nn.compact
  def __call__(self, features: jnp.ndarray,
               valid: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    if self.temperature <= 0:
      raise ConfigError(f'config.model.attention_temperature={self.temperature}: the softmax '
                        'temperature must be > 0 (1 is the paper\'s; below 1 sharpens it).')
    scores = features
    for i in range(self.layers):
      scores = jnp.tanh(nn.Dense(features.shape[-1], name=f'filter{i}')(scores))
    pooled, weights = multi_meta_pool(features, scores / self.temperature, valid)
    return pooled, jnp.mean(weights, axis=-1)


class ExternalAttention(nn.Module):
  """External attention (Guo et al., 2021, "Beyond self-attention: external attention
  using two linear layers"): A = Norm(F M_k^T), out = A M_v, with ``memory_units`` S
  learnable memory rows (S = 64, theirs) and double normalisation: a softmax over the
  frames (only the valid ones), then an l1 normalisation over the S units.
  [B, T, m], [B, T] -> [B, T, m]; padded frames' rows are 0."""
  memory_units: int = 64

  @nn.compact
  def __call__(self, x: jnp.ndarray, valid: jnp.ndarray) -> jnp.ndarray:
    attention = nn.Dense(self.memory_units, use_bias=False, name='memory_key')(x)
    attention = layers.masked_softmax(attention, valid[..., None], axis=1)
    attention = attention / (1e-9 + jnp.sum(attention, axis=-1, keepdims=True))
    return nn.Dense(x.shape[-1], use_bias=False, name='memory_value')(attention)


class EfficientMHSA(nn.Module):
  """Efficient multi-head self-attention of ResT (Zhang & Yang, 2021) over frames.

  Queries from every frame; keys and values from the sequence shortened by ``reduction``
  s: a depth-wise convolution over frames (kernel s + 1, stride s, left padding s // 2 as
  ResT) and LayerNorm; ``heads`` heads of scaled dot products; with more than one head,
  ResT's head interaction (a 1x1 convolution across heads before the softmax; its bias is
  left out, as a constant along a softmax row changes nothing) and an instance
  normalisation of each head's attention map after it; then an output projection.
  Padding: padded frames are zeroed before the reduction and the convolution is padded by
  s on the right, so the reduced keys whose window holds a valid frame are exactly those of
  the unpadded sequence (ceil-like count (n + s // 2 - 1) // s + 1 for n valid frames);
  the other keys, and padded queries, are masked, the instance norm's statistics included.
  ResT's 512-channel stage uses 8 heads (our default) and no reduction; we reduce by 2,
  the module's defining economy, since the paper names it "efficient".
  [B, T, m], [B, T] -> [B, T, m].
  """
  heads: int = 8
  reduction: int = 2

  @nn.compact
  def __call__(self, x: jnp.ndarray, valid: jnp.ndarray) -> jnp.ndarray:
    b, t, c = x.shape
    if c % self.heads:
      raise ConfigError(f'config.model.attention_heads={self.heads} does not divide the '
                        f'{c} feature dimensions.')
    split = lambda y: y.reshape(y.shape[:2] + (self.heads, c // self.heads))
    q = split(nn.Dense(c, name='q')(x))
    keys, key_valid = x, valid
    if self.reduction > 1:
      s = self.reduction
      keys = nn.Conv(c, (s + 1,), (s,), padding=[(s // 2, s)], feature_group_count=c,
                     name='reduce')(jnp.where(valid[..., None], x, 0.0))
      keys = nn.LayerNorm(name='reduce_norm')(keys)
      count = (jnp.sum(valid, axis=1) + s // 2 - 1) // s + 1
      key_valid = jnp.arange(keys.shape[1])[None] < count[:, None]
    k, v = jnp.split(nn.Dense(2 * c, name='kv')(keys), 2, axis=-1)
    logits = jnp.einsum('bnhd,bmhd->bnmh', q, split(k)) * (c // self.heads) ** -0.5
    pair_valid = (valid[:, :, None] & key_valid[:, None, :])[..., None]
    if self.heads > 1:
      logits = nn.Dense(self.heads, use_bias=False, name='transform')(logits)
    attention = layers.masked_softmax(logits, key_valid[:, None, :, None], axis=2)
    if self.heads > 1:
      mean = frame_classifier.masked_mean(attention, pair_valid, axis=(1, 2))
      centred = jnp.where(pair_valid, attention - mean[:, None, None], 0.0)
      var = frame_classifier.masked_mean(centred**2, pair_valid, axis=(1, 2))
      attention = centred / jnp.sqrt(var[:, None, None] + 1e-5)
    out = jnp.einsum('bnmh,bmhd->bnhd', attention, split(v)).reshape(b, t, c)
    return nn.Dense(c, name='proj')(out)


class AttentionPool(nn.Module):
  """x + A(LayerNorm(x)) over the valid frames, then their average: [B, T, m] -> [B, m].

  ``kind`` picks A: 'self_attention' (one head, Flax's dot-product attention),
  'external_attention' or 'efficient_mhsa' (the classes above, with ``memory_units``,
  ``heads`` and ``reduction``)."""
  kind: str = 'self_attention'
  memory_units: int = 64
  heads: int = 8
  reduction: int = 2

  @nn.compact
  def __call__(self, features: jnp.ndarray, valid: jnp.ndarray) -> jnp.ndarray:
    y = nn.LayerNorm(name='norm')(features)
    if self.kind == 'self_attention':
      y = nn.MultiHeadDotProductAttention(num_heads=1, name='attention')(
          y, y, mask=nn.make_attention_mask(valid, valid))
    elif self.kind == 'external_attention':
      y = ExternalAttention(self.memory_units, name='attention')(y, valid)
    else:
      y = EfficientMHSA(self.heads, self.reduction, name='attention')(y, valid)
    return frame_classifier.masked_mean(features + y, valid)


def _masked_max(features: jnp.ndarray, valid: jnp.ndarray) -> jnp.ndarray:
  pooled = jnp.max(jnp.where(valid[..., None], features, -jnp.inf), axis=1)
  return jnp.where(jnp.any(valid, axis=1)[:, None], pooled, 0.0)


class CLMAN(frame_classifier.VideoClassifierBase):
  """CLMAN; see the module docstring for the fields."""
  backbone: str = 'resnet18'
  norm: str = 'group'
  nonlocal_stages: Sequence[int] = (3, 4)
  aggregation: str = 'multi_meta'
  attention_layers: int = 2
  attention_temperature: float = 1.0  # Eq. 5's softmax temperature ('multi_meta').
  hidden: int = 256  # LSTM units ('lstm' aggregation).
  memory_units: int = 64  # 'external_attention'.
  attention_heads: int = 8  # 'efficient_mhsa'.
  attention_reduction: int = 2  # 'efficient_mhsa'.

  @nn.compact
  def __call__(self, batch: dict[str, jnp.ndarray], *, train: bool) -> dict[str, jnp.ndarray]:
    if self.aggregation not in AGGREGATIONS:
      raise ConfigError(f'config.model.aggregation={self.aggregation!r}: use one of '
                        f'{AGGREGATIONS}.')
    valid = batch['valid']
    features = self.frame_features(batch, train)
    out = {'features': features}
    if self.aggregation == 'multi_meta':
      pooled, out['frame_weights'] = MultiMetaAttention(
          self.attention_layers, self.attention_temperature, name='attention')(features, valid)
    elif self.aggregation == 'average':
      pooled = frame_classifier.masked_mean(features, valid)
    elif self.aggregation == 'max':
      pooled = _masked_max(features, valid)
    elif self.aggregation == 'lstm':
      lengths = jnp.sum(valid, axis=1).astype(jnp.int32)
      (_, pooled), _ = cnn_lstm.MaskedLSTM(self.hidden, name='lstm')(features, lengths)
    else:
      pooled = AttentionPool(self.aggregation, self.memory_units, self.attention_heads,
                             self.attention_reduction, name=self.aggregation)(features, valid)
    return {**out, 'logits': nn.Dense(self.num_classes, name='classifier')(pooled)}


class SimCLR(frame_classifier.VideoClassifierBase):
  """CLMAN's extractor with an MLP projection head, for contrastive pretraining."""
  backbone: str = 'resnet18'
  norm: str = 'group'
  nonlocal_stages: Sequence[int] = (3, 4)
  projection: Sequence[int] = (512, 128)

  @nn.compact
  def __call__(self, batch: dict[str, jnp.ndarray], *, train: bool) -> dict[str, jnp.ndarray]:
    x = self.frame_features(batch, train)  # [B, 2 views, m].
    for i, width in enumerate(self.projection):
      x = nn.Dense(width, name=f'projection{i}')(x)
      if i < len(self.projection) - 1:
        x = nn.relu(x)
    return {'projections': x}
