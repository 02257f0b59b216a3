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


def softmax_cross_entropy(logits: jnp.ndarray, labels: jnp.ndarray) -> jnp.ndarray:
  """Cross-entropy of integer labels: logits [..., K], labels [...] -> [...]."""
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def weighted_mean(values: jnp.ndarray, weights: jnp.ndarray) -> jnp.ndarray:
  """Mean of ``values`` with ``weights`` (0 for padding); 0 when all weights are 0."""
  weights = weights.astype(values.dtype)
  return jnp.sum(values * weights) / jnp.maximum(jnp.sum(weights), 1.0)
