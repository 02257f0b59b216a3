"""Clip-consistent augmentation: one draw of every parameter per clip.

Every frame of a clip and every mask get the same flip, the same crop box and the same
brightness/contrast change, so the clip stays temporally coherent and masks stay aligned
with frames. Speckle draws one look number L per clip; its noise is drawn per frame (speckle
is a per-frame process). All randomness is stateless, from a per-example seed, so an
example's augmentation depends only on (run seed, example position): a resumed run sees
exactly the same augmented data as an uninterrupted one.
"""
from __future__ import annotations

import ml_collections
import tensorflow as tf

from input_pipeline import tf_setup  # pylint: disable=unused-import  (configures TensorFlow)
from input_pipeline import speckle


def _split(seed: tf.Tensor, n: int) -> list[tf.Tensor]:
  return tf.unstack(tf.random.experimental.stateless_split(seed, n))


def _maybe(condition: tf.Tensor, transform, value: tf.Tensor | None) -> tf.Tensor | None:
  """``transform(value)`` where ``condition`` holds, else ``value``; None passes through."""
  if value is None:
    return None
  return tf.cond(condition, lambda: transform(value), lambda: value)


def augment_clip(example: dict, seed: tf.Tensor, cfg: ml_collections.ConfigDict) -> dict:
  """Augments ``frames`` [T, H, W, C] float in [0, 1], ``masks`` [T, H, W, 1], ``boxes`` [T, 4].

  ``cfg`` fields: flip (bool), crop_scale (min area fraction; 1 disables), brightness,
  contrast (max relative change; 0 disables), speckle_prob and speckle_looks (min, max),
  elastic_prob and elastic_alpha (see ``_elastic``).
  """
  seeds = _split(seed, 7)
  frames, boxes = example['frames'], example.get('boxes')
  masks = example.get('masks')
  if cfg.flip:
    flip = tf.random.stateless_uniform([], seeds[0]) < 0.5
    frames = _maybe(flip, lambda x: tf.reverse(x, axis=[2]), frames)
    masks = _maybe(flip, lambda x: tf.reverse(x, axis=[2]), masks)
    boxes = _maybe(flip, lambda b: tf.stack([b[:, 0], 1 - b[:, 3], b[:, 2], 1 - b[:, 1]], 1),
                   boxes)
  if cfg.crop_scale < 1.0:
    frames, masks, boxes = _random_crop(frames, masks, boxes, seeds[1], cfg.crop_scale)
  if cfg.elastic_prob > 0:
    s_use, s_field = _split(seeds[6], 2)
    use = tf.random.stateless_uniform([], s_use) < cfg.elastic_prob
    warped = lambda: _elastic(frames, masks, s_field, cfg.elastic_alpha)  # pylint: disable=unnecessary-lambda-assignment
    if masks is None:
      frames = tf.cond(use, lambda: warped()[0], lambda: frames)
    else:
      frames, masks = tf.cond(use, warped, lambda: (frames, masks))
  if cfg.brightness > 0 or cfg.contrast > 0:
    delta = tf.random.stateless_uniform([], seeds[2], -cfg.brightness, cfg.brightness)
    factor = tf.random.stateless_uniform([], seeds[3], 1 - cfg.contrast, 1 + cfg.contrast)
    mean = tf.reduce_mean(frames)
    frames = tf.clip_by_value((frames - mean) * factor + mean + delta, 0.0, 1.0)
  if cfg.speckle_prob > 0:
    looks = tf.random.stateless_uniform([], seeds[4], *cfg.speckle_looks)
    use = tf.random.stateless_uniform([], tf.reverse(seeds[4], [0])) < cfg.speckle_prob
    frames = _maybe(use, lambda x: speckle.add_speckle(x, looks, seeds[5]), frames)
  out = dict(example, frames=frames)
  if masks is not None:
    out['masks'] = masks
  if boxes is not None:
    out['boxes'] = boxes
  return out


def _random_crop(frames, masks, boxes, seed, min_scale):
  """One random crop box (area in [min_scale, 1], aspect in [3/4, 4/3]) for the whole clip."""
  s_area, s_aspect, s_y, s_x = _split(seed, 4)
  area = tf.random.stateless_uniform([], s_area, min_scale, 1.0)
  log_aspect = tf.random.stateless_uniform([], s_aspect, tf.math.log(3 / 4), tf.math.log(4 / 3))
  aspect = tf.exp(log_aspect)
  height = tf.minimum(tf.sqrt(area / aspect), 1.0)
  width = tf.minimum(tf.sqrt(area * aspect), 1.0)
  y0 = tf.random.stateless_uniform([], s_y) * (1 - height)
  x0 = tf.random.stateless_uniform([], s_x) * (1 - width)
  num = tf.shape(frames)[0]
  crop = tf.tile([[y0, x0, y0 + height, x0 + width]], [num, 1])
  size = tf.shape(frames)[1:3]
  index = tf.range(num)
  frames = tf.image.crop_and_resize(frames, crop, index, size, method='bilinear')
  if masks is not None:
    masks = tf.cast(tf.image.crop_and_resize(tf.cast(masks, tf.float32), crop, index, size,
                                             method='nearest'), masks.dtype)
  if boxes is not None:
    scale = tf.stack([height, width, height, width])
    offset = tf.stack([y0, x0, y0, x0])
    cropped = tf.clip_by_value((boxes - offset) / scale, 0.0, 1.0)
    empty = tf.reduce_all(boxes == 0, axis=1, keepdims=True)
    boxes = tf.where(empty, tf.zeros_like(cropped), cropped)
  return frames, masks, boxes


def _elastic(frames, masks, seed, alpha, grid=4):
  """Elastic deformation, one field for the whole clip: displacements drawn uniformly in
  [-alpha, alpha] (fractions of the frame size) on a ``grid`` x ``grid`` lattice, upsampled
  bicubically to a smooth field; frames resampled bilinearly, masks by nearest neighbour."""
  size = tf.shape(frames)[1:3]
  coarse = tf.random.stateless_uniform([1, grid, grid, 2], seed, -alpha, alpha)
  field = tf.image.resize(coarse, size, method='bicubic')[0] * tf.cast(size, tf.float32)
  rows, cols = tf.meshgrid(tf.range(size[0], dtype=tf.float32),
                           tf.range(size[1], dtype=tf.float32), indexing='ij')
  y, x = rows + field[..., 0], cols + field[..., 1]
  frames = _bilinear_sample(frames, y, x)
  if masks is not None:
    index = tf.stack([_clamp(tf.round(y), size[0]), _clamp(tf.round(x), size[1])], -1)
    masks = tf.transpose(tf.gather_nd(tf.transpose(masks, [1, 2, 0, 3]), index), [2, 0, 1, 3])
  return frames, masks


def _clamp(coordinate, size):
  return tf.clip_by_value(tf.cast(coordinate, tf.int32), 0, size - 1)


def _bilinear_sample(images, y, x):
  """images [T, H, W, C] sampled at float positions y, x [H, W] (edges clamped)."""
  size = tf.shape(images)[1:3]
  y = tf.clip_by_value(y, 0.0, tf.cast(size[0] - 1, tf.float32))
  x = tf.clip_by_value(x, 0.0, tf.cast(size[1] - 1, tf.float32))
  y0, x0 = tf.floor(y), tf.floor(x)
  wy, wx = (y - y0)[None, ..., None], (x - x0)[None, ..., None]
  by_position = tf.transpose(images, [1, 2, 0, 3])

  def at(rows, cols):
    index = tf.stack([_clamp(rows, size[0]), _clamp(cols, size[1])], -1)
    return tf.transpose(tf.gather_nd(by_position, index), [2, 0, 1, 3])
  top = at(y0, x0) * (1 - wx) + at(y0, x0 + 1) * wx
  bottom = at(y0 + 1, x0) * (1 - wx) + at(y0 + 1, x0 + 1) * wx
  return top * (1 - wy) + bottom * wy
