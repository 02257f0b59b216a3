"""Clips from still images (STM's first training stage): one annotated frame becomes a clip
of ``input.clip_length`` frames, each a random affine deformation of it.

STM (Oh et al., ICCV 2019, Sec. 4.1) pre-trains on image datasets by "synthesizing a
video clip of three frames from a static image" with random affine transforms (rotation,
shearing, zooming, translation). With ``config.input.image_clips`` True, training clips are
made this way (``clip_streams``: a clip's every frame is its annotated target frame) and
``deform_clip`` warps each frame and its mask alike by a transform of its own, drawn
from the example's seed, so a clip is deterministic by (run seed, stream position) and a
resumed run sees exactly the same clips. The clip-consistent augmentation
(``augment.augment_clip``) follows. Any video segmenter trains on such clips, so still
images (1-frame videos) train FLA-Net, DSANet and STPFNet; evaluation uses the video's
real frames.

The transform maps an output pixel p to the input position A (p - c) + c + d, c the
frame centre: A = s R(theta) Sh(k) (zoom s, rotation theta, shear k), d a shift; each
drawn uniformly from ``input.augment.affine`` (``rotation`` and ``shear`` in degrees,
``zoom`` the largest relative change of scale, ``shift`` the largest fraction of the frame
size). STM gives no ranges; ours are moderate choices for ultrasound (a lesion stays in
view). Frames are sampled bilinearly, masks by nearest neighbour, outside the frame 0;
boxes are recomputed from the warped masks.
"""
from __future__ import annotations

import math

import ml_collections
import tensorflow as tf

from input_pipeline import tf_setup  # pylint: disable=unused-import  (configures TensorFlow)


def _uniform(seed: tf.Tensor, shape, bound: float) -> tf.Tensor:
  return tf.random.stateless_uniform(shape, seed, -bound, bound)


def random_affines(seed: tf.Tensor, num: int | tf.Tensor, height: tf.Tensor, width: tf.Tensor,
                   cfg: ml_collections.ConfigDict) -> tf.Tensor:
  """float32 [num, 8]: one projective-transform vector (output -> input, as
  ``tf.raw_ops.ImageProjectiveTransformV3`` takes) per frame (module docstring)."""
  seeds = tf.unstack(tf.random.experimental.stateless_split(seed, 5))
  angle = _uniform(seeds[0], [num], math.radians(cfg.rotation))
  shear = _uniform(seeds[1], [num], math.radians(cfg.shear))
  zoom = 1.0 + _uniform(seeds[2], [num], cfg.zoom)
  size = tf.cast(tf.stack([width, height]), tf.float32)
  shift = _uniform(seeds[3], [num, 2], cfg.shift) * size
  cos, sin, tan = tf.cos(angle), tf.sin(angle), tf.tan(shear)
  # A = zoom * R(angle) @ [[1, tan], [0, 1]] on (x, y) = (column, row).
  a00, a01 = zoom * cos, zoom * (cos * tan - sin)
  a10, a11 = zoom * sin, zoom * (sin * tan + cos)
  cx, cy = (size[0] - 1) / 2, (size[1] - 1) / 2
  bx = cx + shift[:, 0] - a00 * cx - a01 * cy
  by = cy + shift[:, 1] - a10 * cx - a11 * cy
  zeros = tf.zeros_like(a00)
  return tf.stack([a00, a01, bx, a10, a11, by, zeros, zeros], axis=1)


def _warp(images: tf.Tensor, transforms: tf.Tensor, interpolation: str) -> tf.Tensor:
  return tf.raw_ops.ImageProjectiveTransformV3(
      images=images, transforms=transforms, output_shape=tf.shape(images)[1:3],
      fill_value=0.0, interpolation=interpolation, fill_mode='CONSTANT')


def boxes_of(masks: tf.Tensor) -> tf.Tensor:
  """Normalised (ymin, xmin, ymax, xmax) [T, 4] of masks [T, H, W, 1]; zeros where empty
  (the convention of ``simulator.mask_to_box``)."""
  size = tf.cast(tf.shape(masks)[1:3], tf.float32)
  lesion = masks[..., 0] > 0.5

  def extent(present):  # [T, N] bool -> (first, last + 1) index of the True entries.
    index = tf.range(tf.shape(present)[1], dtype=tf.float32)[None]
    first = tf.reduce_min(tf.where(present, index, 1e9), axis=1)
    return first, tf.reduce_max(tf.where(present, index + 1, -1.0), axis=1)
  y0, y1 = extent(tf.reduce_any(lesion, axis=2))
  x0, x1 = extent(tf.reduce_any(lesion, axis=1))
  boxes = tf.stack([y0 / size[0], x0 / size[1], y1 / size[0], x1 / size[1]], axis=1)
  empty = ~tf.reduce_any(lesion, axis=[1, 2])
  return tf.where(empty[:, None], tf.zeros_like(boxes), boxes)


def deform_clip(example: dict, seed: tf.Tensor, cfg: ml_collections.ConfigDict) -> dict:
  """Each frame of ``example['frames']`` [T, H, W, C] and its mask warped by a random affine
  of its own (``cfg``: ``input.augment.affine``); boxes from the warped masks."""
  frames = example['frames']
  shape = tf.shape(frames)
  transforms = random_affines(seed, shape[0], shape[1], shape[2], cfg)
  masks = _warp(example['masks'], transforms, 'NEAREST')
  return dict(example, frames=_warp(frames, transforms, 'BILINEAR'), masks=masks,
              boxes=boxes_of(masks))
