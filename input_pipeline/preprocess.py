"""The one preprocessing of every example: decode, resize, augment, and keep the spec's keys.

``Preprocessor`` turns an encoded example (frames and masks still PNG/JPEG bytes) into the
fields of the batch specification (``input_pipeline.spec``): frames as float32 in [0, 1]
at ``input.image_size`` with ``input.channels``, binary float masks, boxes, Gaussian
heatmaps (``input.heatmap_sigma`` > 0), ``valid``, ``video_hash`` and, in evaluation, the
encoded ``video_key``. Augmentation is the example source's (``ExampleSource.augment``),
keyed by the run seed and the example's position in the stream, so it is reproducible and
resumable. Cached CNN features pass through undecoded.
"""
from __future__ import annotations

import ml_collections
import tensorflow as tf

from input_pipeline import tf_setup  # pylint: disable=unused-import  (configures TensorFlow)
from input_pipeline import augment as augment_lib
from input_pipeline import spec as spec_lib


def decode(encoded: tf.Tensor, channels_stored: int) -> tf.Tensor:
  """[T] encoded images -> uint8 [T, h, w, channels_stored]."""
  return tf.map_fn(
      lambda s: tf.io.decode_image(s, channels=channels_stored, expand_animations=False),
      encoded, fn_output_signature=tf.TensorSpec([None, None, channels_stored], tf.uint8))


def resize(images: tf.Tensor, size: int, method: str) -> tf.Tensor:
  """Resizes [T, h, w, c] to [T, size, size, c] (antialiased when shrinking); a no-op when
  the images already have that size."""
  same = tf.reduce_all(tf.shape(images)[1:3] == size)
  return tf.cond(same, lambda: images,
                 lambda: tf.image.resize(images, [size, size], method=method,
                                         antialias=method == 'bilinear'))


def frames_to_model(frames: tf.Tensor, size: int, channels: int) -> tf.Tensor:
  """uint8 [T, h, w, c] -> float32 [T, size, size, channels] in [0, 1]."""
  frames = resize(tf.cast(frames, tf.float32) / 255.0, size, 'bilinear')
  have = frames.shape[-1]
  if have == 3 and channels == 1:
    frames = tf.image.rgb_to_grayscale(frames)
  elif have == 1 and channels == 3:
    frames = tf.image.grayscale_to_rgb(frames)
  return tf.clip_by_value(frames, 0.0, 1.0)


def gaussian_heatmaps(boxes: tf.Tensor, size: int, sigma: float) -> tf.Tensor:
  """FLA-Net's location target: a Gaussian (peak 1, std ``sigma`` pixels) at each box centre.

  Args:
    boxes: [T, 4] normalised (ymin, xmin, ymax, xmax); an all-zero box means no lesion.
  Returns:
    float32 [T, size, size, 1]; all zeros where the box is empty.
  """
  cy = (boxes[:, 0] + boxes[:, 2]) / 2 * size
  cx = (boxes[:, 1] + boxes[:, 3]) / 2 * size
  grid = tf.range(size, dtype=tf.float32) + 0.5
  dy = (grid[None, :] - cy[:, None]) ** 2
  dx = (grid[None, :] - cx[:, None]) ** 2
  heat = tf.exp(-(dy[:, :, None] + dx[:, None, :]) / (2 * sigma**2))
  present = tf.cast(tf.reduce_any(boxes > 0, axis=1), tf.float32)
  return (heat * present[:, None, None])[..., None]


def encode_key(video_id: tf.Tensor) -> tf.Tensor:
  """A video id as uint8 [VIDEO_KEY_BYTES], zero-padded, so that it can travel with the
  batch through device computations and cross-process gathers (longer ids are cut)."""
  raw = tf.io.decode_raw(video_id, tf.uint8)[:spec_lib.VIDEO_KEY_BYTES]
  return tf.pad(raw, [[0, spec_lib.VIDEO_KEY_BYTES - tf.shape(raw)[0]]])


def augment_frames(example: dict, seed: tf.Tensor, input_config: ml_collections.ConfigDict,
                   train: bool) -> dict:
  """The augmentation of clips and sequences: ``input.augment`` in training (one draw for
  all frames of the example, masks alike); none in evaluation (the robustness study adds
  its speckle to the stored frames, ``usvjax.studies.robustness``)."""
  if train:
    return augment_lib.augment_clip(example, seed, input_config.augment)
  return example


class Preprocessor:
  """Decodes, resizes and augments one example into the fields of ``fields``."""

  def __init__(self, config: ml_collections.ConfigDict, builder, train: bool,
               source: spec_lib.ExampleSource, fields: spec_lib.Spec):
    self.input, self.seed, self.train = config.input, config.seed, train
    self.source, self.fields = source, fields
    if 'frames' in builder.info.features:
      self.channels_stored = builder.info.features['frames'].shape[-1]

  def __call__(self, position: tf.Tensor, item: dict) -> dict:
    out = {k: item[k] for k in ('features', 'label', 'frame_index', 'frame_offset', 'boxes',
                                'annotated') if k in item}
    if 'frames' in item:
      out['frames'] = frames_to_model(decode(item['frames'], self.channels_stored),
                                      self.input.image_size, self.input.channels)
    if 'masks' in item:
      masks = resize(decode(item['masks'], 1), self.input.image_size, 'nearest')
      out['masks'] = tf.cast(masks > 0, tf.float32)
    if 'frames' in out:
      seed = tf.cast(tf.stack([tf.cast(self.seed, tf.int64), tf.cast(position, tf.int64)]),
                     tf.int32)
      out = self.source.augment(out, seed, self.input, self.train)
    if 'heatmaps' in self.fields:
      out['heatmaps'] = gaussian_heatmaps(out['boxes'], self.input.image_size,
                                          self.input.heatmap_sigma)
    if 'video_key' in self.fields:
      out['video_key'] = encode_key(item['video_id'])
    out['video_hash'] = tf.cast(tf.strings.to_hash_bucket_fast(item['video_id'], 2**31 - 1),
                                tf.int32)
    out['valid'] = tf.ones([tf.shape(out['features' if 'features' in out else 'frames'])[0]],
                           tf.bool)
    return {k: tf.cast(out[k], self.fields[k].dtype) for k in self.fields}
