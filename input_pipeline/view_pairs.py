"""Contrastive examples (SimCLR pretraining): two augmented views of frames of one video.

An example is ``frames[2, H, W, C]``: a frame and its positive, each view augmented
independently (also in evaluation, with fixed seeds, so that the views differ). From each
video (per pass) ``input.max_frames`` frames are drawn at random, seeded by the run seed
and the video's position in the stream; each is paired with itself
(``input.positives='same_frame'``, SimCLR) or with another random frame of the video
(``'same_video'``; itself if the video has one frame).
"""
from __future__ import annotations

from collections.abc import Mapping

import ml_collections
import tensorflow as tf

from input_pipeline import augment
from input_pipeline import spec as spec_lib
from usvjax.errors import ConfigError

POSITIVES = ('same_frame', 'same_video')


def view_pairs(video: dict, position: tf.Tensor, input_config: ml_collections.ConfigDict,
               seed: int) -> tf.data.Dataset:
  """The contrastive examples of one video (see the module docstring)."""
  if input_config.positives not in POSITIVES:
    raise ConfigError(f'config.input.positives={input_config.positives!r}: use one of '
                      f'{POSITIVES}.')
  num = tf.shape(video['frames'])[0]
  count = input_config.max_frames
  seed_anchor, seed_partner = tf.unstack(tf.random.experimental.stateless_split(
      tf.stack([tf.constant(seed, tf.int64), tf.cast(position, tf.int64)]), 2))
  anchors = tf.random.stateless_uniform([count], seed_anchor, 0, num, dtype=tf.int32)
  partners = anchors
  if input_config.positives == 'same_video':
    offsets = tf.random.stateless_uniform([count], seed_partner, 1, tf.maximum(num, 2),
                                          dtype=tf.int32)
    partners = tf.where(num > 1, (anchors + offsets) % num, anchors)
  pairs = tf.stack([anchors, partners], axis=1)
  return tf.data.Dataset.from_tensor_slices(
      {'frames': tf.gather(video['frames'], pairs), 'video_id': tf.fill([count], video['video_id'])})


class ViewPairs:
  """The example source of contrastive pretraining (``spec.ExampleSource``)."""

  def required_features(self, features: Mapping) -> tuple[str, ...]:
    del features
    return ('frames',)

  def fields(self, config: ml_collections.ConfigDict, train: bool,
             features: Mapping | None) -> spec_lib.Spec:
    del features
    return {'frames': spec_lib.image_field(config, 2), **spec_lib.common_fields(train, 2)}

  def items(self, videos: tf.data.Dataset, config: ml_collections.ConfigDict,
            train: bool) -> tf.data.Dataset:
    del train
    return videos.enumerate().flat_map(
        lambda position, v: view_pairs(v, position, config.input, config.seed))

  @staticmethod
  def augment(example: dict, seed: tf.Tensor, input_config: ml_collections.ConfigDict,
              train: bool) -> dict:
    """Each view augmented with its own seed, in training and evaluation alike."""
    del train
    views = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    frames = [augment.augment_clip({'frames': example['frames'][k:k + 1]}, views[k],
                                   input_config.augment)['frames'] for k in range(2)]
    return dict(example, frames=tf.concat(frames, axis=0))

  def batch(self, ds: tf.data.Dataset, config: ml_collections.ConfigDict,
            fields: spec_lib.Spec, batch_size: int, drop_remainder: bool,
            train: bool) -> tf.data.Dataset:
    del config, fields, train
    return ds.batch(batch_size, drop_remainder=drop_remainder)
