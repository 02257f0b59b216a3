"""The tf.data side of the contrastive examples (``view_pairs.ViewPairs``): random frame
pairs of each video, each view augmented with its own seed (see
``input_pipeline/view_pairs.py``)."""
from __future__ import annotations

import ml_collections
import tensorflow as tf

from input_pipeline import tf_setup  # (configures TensorFlow on import)
from input_pipeline import augment as augment_lib
from input_pipeline import spec as spec_lib
from usvjax.errors import ConfigError

POSITIVES = ('same_frame', 'same_video')


def view_pairs(video: dict, position: tf.Tensor, input_config: ml_collections.ConfigDict,
               seed: int) -> tf.data.Dataset:
  """The contrastive examples of one video (see ``input_pipeline/view_pairs.py``)."""
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
  return tf.data.Dataset.from_tensor_slices({'frames': tf.gather(video['frames'], pairs),
                                             'video_id': tf.fill([count], video['video_id'])})


def items(videos: tf.data.Dataset, config: ml_collections.ConfigDict,
          train: bool) -> tf.data.Dataset:
  """The view pairs of every video of a stream of encoded videos."""
  del train
  return videos.enumerate().flat_map(tf_setup.as_written(
      lambda position, v: view_pairs(v, position, config.input, config.seed)))


def augment(example: dict, seed: tf.Tensor, input_config: ml_collections.ConfigDict,
            train: bool) -> dict:
  """Each view augmented with its own seed, in training and evaluation alike."""
  del train
  views = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  frames = [augment_lib.augment_clip({'frames': example['frames'][k:k + 1]}, views[k],
                                     input_config.augment)['frames'] for k in range(2)]
  return dict(example, frames=tf.concat(frames, axis=0))


def batch(ds: tf.data.Dataset, config: ml_collections.ConfigDict, fields: spec_lib.Spec,
          batch_size: int, drop_remainder: bool, train: bool) -> tf.data.Dataset:
  """Plain batches (view pairs have a fixed shape)."""
  del config, fields, train
  return ds.batch(batch_size, drop_remainder=drop_remainder)
