"""Losses. Each returns per-example values [B]; tasks average them over valid examples."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def sigmoid_bce(logits: jnp.ndarray, targets: jnp.ndarray) -> jnp.ndarray:
  """Binary cross-entropy per example, averaged over pixels: [B, H, W, 1] -> [B]."""
  per_pixel = optax.sigmoid_binary_cross_entropy(logits, targets)
  return jnp.mean(per_pixel, axis=tuple(range(1, per_pixel.ndim)))


def soft_dice(logits: jnp.ndarray, targets: jnp.ndarray, smooth: float = 1.0) -> jnp.ndarray:
  """1 - (2 sum(p y) + s) / (sum(p) + sum(y) + s) per example, p = sigmoid(logits): -> [B]."""
  probs = jax.nn.sigmoid(logits)
  axes = tuple(range(1, probs.ndim))
  intersection = jnp.sum(probs * targets, axis=axes)
  total = jnp.sum(probs, axis=axes) + jnp.sum(targets, axis=axes)
  return 1.0 - (2.0 * intersection + smooth) / (total + smooth)


def soft_iou(logits: jnp.ndarray, targets: jnp.ndarray, smooth: float = 1.0) -> jnp.ndarray:
  """1 - (sum(p y) + s) / (sum(p) + sum(y) - sum(p y) + s) per example: -> [B]."""
  probs = jax.nn.sigmoid(logits)
  axes = tuple(range(1, probs.ndim))
  intersection = jnp.sum(probs * targets, axis=axes)
  union = jnp.sum(probs, axis=axes) + jnp.sum(targets, axis=axes) - intersection
  return 1.0 - (intersection + smooth) / (union + smooth)


def structure_weights(masks: jnp.ndarray, kernel: int = 31, strength: float = 5.0
                      ) -> jnp.ndarray:
  """F3Net's pixel weights 1 + strength * |avgpool_k(mask) - mask| (stride 1, zero padding
  counted in the mean, as PyTorch's avg_pool2d): [B, H, W, 1] -> [B, H, W, 1]. Pixels near
  a boundary weigh up to 1 + strength.

  The k x k window sum is taken as a k x 1 then a 1 x k sum: 2k additions per pixel
  instead of k^2 (XLA:CPU runs a 2-D reduce-window pixel by pixel)."""
  pad = kernel // 2
  total = masks
  for window in ((1, kernel, 1, 1), (1, 1, kernel, 1)):
    padding = tuple((pad, pad) if size > 1 else (0, 0) for size in window)
    total = jax.lax.reduce_window(total, 0.0, jax.lax.add, window, (1, 1, 1, 1), padding)
  return 1.0 + strength * jnp.abs(total / kernel**2 - masks)


def weighted_bce(logits: jnp.ndarray, targets: jnp.ndarray, weights: jnp.ndarray
                 ) -> jnp.ndarray:
  """sum(w * BCE) / sum(w) per example (F3Net's wBCE): [B, H, W, 1] -> [B]."""
  axes = tuple(range(1, logits.ndim))
  per_pixel = optax.sigmoid_binary_cross_entropy(logits, targets)
  return jnp.sum(weights * per_pixel, axis=axes) / jnp.sum(weights, axis=axes)


def weighted_iou(logits: jnp.ndarray, targets: jnp.ndarray, weights: jnp.ndarray
                 ) -> jnp.ndarray:
  """1 - (I + 1) / (U - I + 1) with I = sum(w p y), U = sum(w (p + y)) (F3Net's wIoU): -> [B]."""
  probs = jax.nn.sigmoid(logits)
  axes = tuple(range(1, logits.ndim))
  intersection = jnp.sum(weights * probs * targets, axis=axes)
  union = jnp.sum(weights * (probs + targets), axis=axes)
  return 1.0 - (intersection + 1.0) / (union - intersection + 1.0)


def mean_squared_error(a: jnp.ndarray, b: jnp.ndarray) -> jnp.ndarray:
  """Mean over all but the first axis of (a - b)^2: [B, ...] -> [B]."""
  return jnp.mean((a - b) ** 2, axis=tuple(range(1, a.ndim)))


def location_contrastive(heatmap: jnp.ndarray, positive: jnp.ndarray, negative: jnp.ndarray,
                         margin: float) -> jnp.ndarray:
  """FLA-Net's location-based contrastive (triplet) loss, Eq. (1) of Lin et al.:
  max(MSE(H_t, H_{t-1}) - MSE(H_t, N_t) + margin, 0) per example: [B, H, W, 1] -> [B].

  ``positive`` is the heatmap of a neighbouring frame of the same video, ``negative`` that
  of a frame of another video (see ``tasks.segmentation`` for how they are drawn).
  """
  return jnp.maximum(mean_squared_error(heatmap, positive)
                     - mean_squared_error(heatmap, negative) + margin, 0.0)


def nt_xent_logits(projections: jnp.ndarray, temperature: float, valid: jnp.ndarray
                   ) -> tuple[jnp.ndarray, jnp.ndarray]:
  """SimCLR's similarity logits of the 2B views and each view's positive.

  As in SimCLR (and CLMAN Sec. 3.2: "negative samples composed of other images"), every
  view of every other valid example is a negative, other frames of the same video included.

  Args:
    projections: [B, 2, d], two views of each example.
    temperature: tau.
    valid: bool [B]; padded examples are never negatives.
  Returns:
    logits [2B, 2B] = cos(z_i, z_k) / tau, -inf where k is not a candidate (k = i or
    padded); positive [2B], the index of each view's other view (views are ordered view 1
    of every example, then view 2).
  """
  b = projections.shape[0]
  z = jnp.concatenate([projections[:, 0], projections[:, 1]], axis=0)
  # rsqrt of a floored squared norm: finite gradients even for an all-zero projection.
  z = z * jax.lax.rsqrt(jnp.maximum(jnp.sum(z**2, axis=-1, keepdims=True), 1e-24))
  index = jnp.arange(2 * b)
  positive = (index + b) % (2 * b)
  candidate = valid[index % b][None, :] & (index[None, :] != index[:, None])
  return jnp.where(candidate, z @ z.T / temperature, -jnp.inf), positive


def nt_xent(logits: jnp.ndarray, positive: jnp.ndarray, valid: jnp.ndarray) -> jnp.ndarray:
  """NT-Xent (SimCLR, Chen et al. 2020) per example [B] from ``nt_xent_logits``: the mean
  over its two views of -log(exp(s_ip / tau) / sum_{k candidate} exp(s_ik / tau)),
  s = cosine similarity."""
  per_view = (jax.nn.logsumexp(logits, axis=-1)
              - jnp.take_along_axis(logits, positive[:, None], axis=-1)[:, 0])
  per_view = jnp.where(jnp.concatenate([valid, valid]), per_view, 0.0)  # Padding: 0, not NaN.
  b = valid.shape[0]
  return (per_view[:b] + per_view[b:]) / 2


def softmax_cross_entropy(logits: jnp.ndarray, labels: jnp.ndarray) -> jnp.ndarray:
  """Cross-entropy of integer labels: logits [..., K], labels [...] -> [...]."""
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def scored_frames(batch: dict, frame: int) -> jnp.ndarray:
  """bool [B]: whether frame ``frame`` of each clip has a target, valid and annotated
  (``batch['annotated']``: the frames with a traced mask, ``input_pipeline/clips.py``)."""
  return batch['valid'][:, frame] & batch['annotated'][:, frame]


def weighted_mean(values: jnp.ndarray, weights: jnp.ndarray) -> jnp.ndarray:
  """Mean of ``values`` with ``weights`` (0 for padding); 0 when all weights are 0."""
  weights = weights.astype(values.dtype)
  return jnp.sum(values * weights) / jnp.maximum(jnp.sum(weights), 1.0)


MASK_TERMS = (('bce', 'bce_weight', sigmoid_bce), ('soft_dice_loss', 'dice_weight', soft_dice),
              ('soft_iou_loss', 'iou_weight', soft_iou))
STRUCTURE_TERMS = (('wbce', 'wbce_weight', weighted_bce), ('wiou', 'wiou_weight', weighted_iou))


def mask_loss(logits: jnp.ndarray, target: jnp.ndarray, weights: jnp.ndarray,
              config, prefix: str = '') -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:
  """The mask loss of one frame and its named parts (means over the batch, ``weights``).

  ``bce_weight`` * BCE + ``dice_weight`` * soft Dice + ``iou_weight`` * soft IoU +
  ``wbce_weight`` * wBCE + ``wiou_weight`` * wIoU (the last two weighted by F3Net's boundary
  weights, ``structure_weights``), the weights read from ``config`` (``config.task``).

  Args:
    logits, target: [B, H, W, 1].
    weights: [B], 0 for padded examples.
  """
  terms = [(name, config[key], fn) for name, key, fn in MASK_TERMS]
  if config.wbce_weight or config.wiou_weight:
    boundary = structure_weights(target)
    terms += [(name, config[key], lambda x, y, fn=fn: fn(x, y, boundary))
              for name, key, fn in STRUCTURE_TERMS]
  parts = {prefix + name: weighted_mean(fn(logits, target), weights)
           for name, weight, fn in terms if weight}
  total = sum(weight * parts[prefix + name] for name, weight, _ in terms if weight)
  return total, parts
