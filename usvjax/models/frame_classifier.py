"""Frame CNN of Cui et al. (Sec. 3.2) and its video rules CNN_Aver and CNN_Vote (Table 3).

A 2-D CNN classifies every frame of a sequence independently: backbone features (the
512-d average-pooled ResNet-18 output in the paper, returned as ``features`` for the
feature cache), then fully-connected layers of widths ``head`` with ReLU, then a linear
layer to the K classes (the paper's "three fully-connected layers" down to 2 classes is
``head=(256, 128)``; it does not give the widths, so halving steps are our choice).
Per-frame logits become the video's class probabilities by ``aggregation``:

* 'average' (CNN_Aver): p_video = sum_t valid_t softmax(f(x_t)) / sum_t valid_t.
* 'vote' (CNN_Vote): the fraction of real frames whose arg-max is each class,
  p_video[k] = sum_t valid_t [argmax f(x_t) = k] / sum_t valid_t. The evaluation decides a
  video's class from p_video as for every classifier (``metrics.class_predictions``): two
  classes, malignant when p_video[1] >= ``config.task.threshold`` (0.5), so a tie (half the
  votes each) is called malignant; more classes, the arg-max (a tie goes to the lower
  index). The paper does not say how ties are broken; calling a tie malignant is the
  conservative clinical choice (a split vote is no evidence of a benign lesion), and it is
  what one rule for every row of Table 3 gives.

Padded frames are computed (their shapes are static) but never contribute. Training uses
the per-frame loss (``config.task.frame_loss``), so the rule only matters at evaluation.

**BatchNorm never sees padding.** A clip batch is padded to its bucket length, so up to
half of the frames a frame CNN sees in train mode can be padding. ``FrameEncoder`` computes
every BatchNorm's batch statistics (and so its running averages) over the valid frames
only: each ``nn.BatchNorm`` call inside the frame CNN gets ``mask`` = the frame's ``valid``
flag (``nn.intercept_methods``, so the backbones need no mask argument of their own). We
chose masked statistics over gathering the valid frames into a smaller frame batch: a
gather to a static size still leaves slots beyond the valid count that BatchNorm would
average over, and a size below B*T could overflow. The frame CNN therefore still computes
the padded frames, but the loss, the outputs of the valid frames and the updated
``batch_stats`` are the same whatever the padding (tests/test_cnn_lstm.py). A batch with no
valid frame at all uses every frame (it has no statistics otherwise). GroupNorm is
per-frame and needs no mask.

Input ``frames`` [B, T, H, W, C], ``valid`` [B, T] bool. Outputs ``features`` [B, T, D],
``frame_logits`` [B, T, K] and ``logits`` [B, K] = log p_video (softmax(logits) = p_video).
"""
from __future__ import annotations

from collections.abc import Callable
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from usvjax.errors import ConfigError
from usvjax.models import layers
from usvjax.models.backbones import resnet


def masked_mean(values: jnp.ndarray, valid: jnp.ndarray,
                axis: int | tuple[int, ...] = 1) -> jnp.ndarray:
  """Mean of ``values`` over ``axis`` counting only ``valid`` entries (0 if none); ``valid``
  has the leading axes of ``values`` (missing trailing axes broadcast)."""
  weights = valid.astype(values.dtype).reshape(valid.shape + (1,) * (values.ndim - valid.ndim))
  total = jnp.sum(values * weights, axis=axis)
  return total / jnp.maximum(jnp.sum(weights, axis=axis), 1.0)


class FrameEncoder(nn.Module):
  """Per-frame features [B, T, D] of frames [B, T, H, W, C], one 2-D CNN for every frame.

  ``backbone`` 'conv' (a small conv encoder: ``width``, ``levels``) or a ResNet name from
  ``backbones.resnet.ARCHITECTURES`` (``backbone_width`` multiplies its channels, ``norm``
  and ``nonlocal_stages`` as in ``resnet.ResNet``; frames are ImageNet-normalised, grey
  frames repeated to 3 channels). Features are globally average-pooled.
  """
  backbone: str = 'conv'
  width: int = 16
  levels: int = 4
  backbone_width: float = 1.0
  norm: str = 'batch'
  nonlocal_stages: Sequence[int] = ()

  @nn.compact
  def __call__(self, frames: jnp.ndarray, *, train: bool,
               valid: jnp.ndarray | None = None) -> jnp.ndarray:
    """frames [B, T, H, W, C], valid [B, T] (None: all valid) -> features [B, T, D]."""
    b, t = frames.shape[:2]
    x = frames.reshape((b * t,) + frames.shape[2:])
    if valid is None:
      return self.encode(x, train).reshape(b, t, -1)
    frame_valid = valid.reshape(b * t)
    frame_valid = frame_valid | ~jnp.any(frame_valid)  # No valid frame: use them all.
    with nn.intercept_methods(_batch_norm_mask(frame_valid)):
      return self.encode(x, train).reshape(b, t, -1)

  def encode(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    """Frames [N, H, W, C] -> pooled features [N, D]."""
    if self.backbone == 'conv':
      x = layers.ConvEncoder(self.width, self.levels, name='backbone')(x * 2.0 - 1.0, train=train)
      x = jnp.mean(x[-1], axis=(1, 2))
    else:
      x = jnp.broadcast_to(x, x.shape[:-1] + (3,)) if x.shape[-1] == 1 else x
      x = resnet.ResNet(self.backbone, width=self.backbone_width, norm=self.norm,
                        nonlocal_stages=tuple(self.nonlocal_stages), name='backbone')(
                            resnet.imagenet_normalize(x), train=train)['pooled']
    return x


def _batch_norm_mask(frame_valid: jnp.ndarray) -> Callable:
  """A method interceptor that passes ``mask`` = ``frame_valid`` [N] (broadcast over the
  other axes) to every ``nn.BatchNorm`` call on an [N, ...] input."""
  def interceptor(next_fun, args, kwargs, context):
    if isinstance(context.module, nn.BatchNorm) and context.method_name == '__call__':
      x = args[0]
      if x.shape[0] != frame_valid.shape[0]:
        raise ValueError(f'a BatchNorm in the frame CNN normalises an input of shape {x.shape}'
                         f' whose leading axis is not the {frame_valid.shape[0]} frames.')
      kwargs = dict(kwargs, mask=frame_valid.reshape((-1,) + (1,) * (x.ndim - 1)))
    return next_fun(*args, **kwargs)
  return interceptor


def average_frame_probabilities(frame_logits: jnp.ndarray, valid: jnp.ndarray) -> jnp.ndarray:
  """log of the mean softmax over the valid frames: [B, T, K], [B, T] -> [B, K]."""
  probs = masked_mean(jax.nn.softmax(frame_logits), valid)
  return jnp.log(jnp.maximum(probs, 1e-12))


def frame_votes(frame_logits: jnp.ndarray, valid: jnp.ndarray) -> jnp.ndarray:
  """log of each class's share of the valid frames' arg-max votes: [B, T, K] -> [B, K]."""
  votes = jax.nn.one_hot(jnp.argmax(frame_logits, -1), frame_logits.shape[-1])
  return jnp.log(jnp.maximum(masked_mean(votes, valid), 1e-12))


AGGREGATIONS = {'average': average_frame_probabilities, 'vote': frame_votes}


class VideoClassifierBase(nn.Module):
  """Fields of the video classifiers that encode frames with a ``FrameEncoder``."""
  num_classes: int = 2
  backbone: str = 'conv'
  width: int = 16
  levels: int = 4
  backbone_width: float = 1.0
  norm: str = 'batch'
  nonlocal_stages: Sequence[int] = ()

  def frame_features(self, batch: dict[str, jnp.ndarray], train: bool) -> jnp.ndarray:
    """``batch['features']`` [B, T, D] if given (cached), else the encoded frames."""
    if 'features' in batch:
      return batch['features']
    return FrameEncoder(self.backbone, self.width, self.levels, self.backbone_width,
                        self.norm, tuple(self.nonlocal_stages), name='encoder')(
                            batch['frames'], train=train, valid=batch['valid'])


class FrameClassifier(VideoClassifierBase):
  """Frame CNN (see ``FrameEncoder``), an MLP head per frame, and a video rule."""
  head: tuple[int, ...] = ()
  aggregation: str = 'average'

  @nn.compact
  def __call__(self, batch: dict[str, jnp.ndarray], *, train: bool) -> dict[str, jnp.ndarray]:
    if self.aggregation not in AGGREGATIONS:
      raise ConfigError(f'config.model.aggregation={self.aggregation!r}: use one of '
                        f'{sorted(AGGREGATIONS)}.')
    features = self.frame_features(batch, train)
    x = features
    for i, width in enumerate(self.head):
      x = nn.relu(nn.Dense(width, name=f'head_{i}')(x))
    frame_logits = nn.Dense(self.num_classes, name='classifier')(x)
    return {'features': features, 'frame_logits': frame_logits,
            'logits': AGGREGATIONS[self.aggregation](frame_logits, batch['valid'])}
