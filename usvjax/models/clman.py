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
``cnn_lstm.MaskedLSTM``), 'self_attention' (one single-head self-attention layer over the
valid frames, residual, then the average of the valid frames).

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
not biases or normalisation parameters, as SimCLR (``usvjax.optim``).

Inputs: ``batch['frames']`` [B, T, H, W, C], ``batch['valid']`` [B, T]. Outputs:
``features`` [B, T, m], ``logits`` [B, K] (CLMAN); ``projections`` [B, 2, d] (SimCLR, T = 2
views).
"""
from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

from usvjax.models import cnn_lstm
from usvjax.models import frame_classifier
from usvjax.models import layers

AGGREGATIONS = ('multi_meta', 'average', 'max', 'lstm', 'self_attention')


def multi_meta_pool(features: jnp.ndarray, scores: jnp.ndarray, valid: jnp.ndarray
                    ) -> jnp.ndarray:
  """Eqs. 5-6: sum_t softmax_t(scores)[t, d] * features[t, d] over the valid frames.

  Args:
    features: F, [B, T, m].
    scores: e, [B, T, m].
    valid: bool [B, T].
  Returns:
    F_bar [B, m] (zeros for a sequence without valid frames).
  """
  weights = layers.masked_softmax(scores, valid[..., None], axis=1)
  return jnp.sum(weights * features, axis=1)


class MultiMetaAttention(nn.Module):
  """Eqs. 4-6: cascaded Dense + tanh scores, softmax over frames per dimension (of the
  scores divided by ``temperature``), weighted sum: [B, T, m], [B, T] -> [B, m]."""
  layers: int = 2
  temperature: float = 1.0

  @nn.compact
  def __call__(self, features: jnp.ndarray, valid: jnp.ndarray) -> jnp.ndarray:
    scores = features
    for i in range(self.layers):
      scores = jnp.tanh(nn.Dense(features.shape[-1], name=f'filter{i}')(scores))
    return multi_meta_pool(features, scores / self.temperature, valid)


class SequenceSelfAttention(nn.Module):
  """x + SA(LayerNorm(x)) over the valid frames, then their average: [B, T, m] -> [B, m]."""

  @nn.compact
  def __call__(self, features: jnp.ndarray, valid: jnp.ndarray) -> jnp.ndarray:
    y = nn.LayerNorm(name='norm')(features)
    mask = nn.make_attention_mask(valid, valid)
    y = nn.MultiHeadDotProductAttention(num_heads=1, name='attention')(y, y, mask=mask)
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

  @nn.compact
  def __call__(self, batch: dict[str, jnp.ndarray], *, train: bool) -> dict[str, jnp.ndarray]:
    if self.aggregation not in AGGREGATIONS:
      raise ValueError(f'config.model.aggregation={self.aggregation!r}: use one of '
                       f'{AGGREGATIONS}.')
    valid = batch['valid']
    features = self.frame_features(batch, train)
    if self.aggregation == 'multi_meta':
      pooled = MultiMetaAttention(self.attention_layers, self.attention_temperature,
                                  name='attention')(features, valid)
    elif self.aggregation == 'average':
      pooled = frame_classifier.masked_mean(features, valid)
    elif self.aggregation == 'max':
      pooled = _masked_max(features, valid)
    elif self.aggregation == 'lstm':
      lengths = jnp.sum(valid, axis=1).astype(jnp.int32)
      (_, pooled), _ = cnn_lstm.MaskedLSTM(self.hidden, name='lstm')(features, lengths)
    else:
      pooled = SequenceSelfAttention(name='self_attention')(features, valid)
    return {'features': features,
            'logits': nn.Dense(self.num_classes, name='classifier')(pooled)}


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
