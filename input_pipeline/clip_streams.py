"""The tf.data side of the segmentation examples (``clips.Clips``): clips of each video, or
whole videos, and their batches (see ``input_pipeline/clips.py`` for what a clip is)."""
from __future__ import annotations

import ml_collections
import tensorflow as tf

from input_pipeline import tf_setup  # pylint: disable=unused-import  (configures TensorFlow)
from input_pipeline import clips
from input_pipeline import preprocess
from input_pipeline import spec as spec_lib

augment = preprocess.augment_frames


def clips_of(video: dict, clip_length: int, distinct: bool = False) -> tf.data.Dataset:
  """The clips of a video, target t last: one per frame, previous frames clamped at the
  first frame, or with ``distinct`` only those whose clip_length frames are all distinct."""
  num = tf.shape(video['frames'])[0]
  target = tf.range(clip_length - 1 if distinct else 0, num)
  index = tf.maximum(target[:, None] + tf.range(1 - clip_length, 1)[None, :], 0)
  examples = {k: tf.gather(video[k], index) for k in ('frames', 'masks', 'boxes')}
  examples['video_id'] = tf.fill(tf.shape(target), video['video_id'])
  examples['frame_index'] = target
  return tf.data.Dataset.from_tensor_slices(examples)


def items(videos: tf.data.Dataset, config: ml_collections.ConfigDict,
          train: bool) -> tf.data.Dataset:
  """Encoded clips (or whole videos) from a stream of encoded videos."""
  if clips.whole_videos(config, train):
    return videos.map(lambda v: {k: v[k] for k in ('frames', 'masks', 'boxes', 'video_id')})
  distinct = clips.distinct_clips(config, train)
  return videos.flat_map(lambda v: clips_of(v, config.input.clip_length, distinct))


def batch(ds: tf.data.Dataset, config: ml_collections.ConfigDict, fields: spec_lib.Spec,
          batch_size: int, drop_remainder: bool, train: bool) -> tf.data.Dataset:
  """Batches of clips; whole videos of different lengths are padded (``valid`` False)."""
  del fields
  if clips.whole_videos(config, train):
    return ds.padded_batch(batch_size, drop_remainder=drop_remainder)
  return ds.batch(batch_size, drop_remainder=drop_remainder)
