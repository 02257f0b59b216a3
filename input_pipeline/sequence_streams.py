"""The tf.data side of the classification examples (``sequences.Sequences``): uniformly
sampled sequences of each video and their length-bucketed batches (see
``input_pipeline/sequences.py``)."""
from __future__ import annotations

import ml_collections
import tensorflow as tf

from input_pipeline import tf_setup  # pylint: disable=unused-import  (configures TensorFlow)
from input_pipeline import preprocess
from input_pipeline import sequences
from input_pipeline import spec as spec_lib

augment = preprocess.augment_frames


def uniform_indices(num: tf.Tensor, count: tf.Tensor) -> tf.Tensor:
  """int32 [count]: the centre frame of each of ``count`` equal segments of ``num`` frames."""
  centres = (tf.range(count, dtype=tf.float64) + 0.5) * tf.cast(num, tf.float64)
  return tf.cast(tf.math.floor(centres / tf.cast(count, tf.float64)), tf.int32)


def _sequence(video: dict, key: str, max_frames: int, sampling: str) -> dict:
  """``max_frames`` frames (``sampling`` 'exact') or up to that many ('up_to') of ``key``."""
  num = tf.shape(video[key])[0]
  count = max_frames if sampling == 'exact' else tf.minimum(num, max_frames)
  return {key: tf.gather(video[key], uniform_indices(num, count)), 'label': video['label'],
          'video_id': video['video_id']}


def items(videos: tf.data.Dataset, config: ml_collections.ConfigDict,
          train: bool) -> tf.data.Dataset:
  """One encoded sequence per video of a stream of encoded videos."""
  del train
  sequences.check_input(config.input)
  key = sequences.sequence_key(videos.element_spec)
  return videos.map(lambda v: _sequence(v, key, config.input.max_frames,
                                        config.input.sampling))


def batch(ds: tf.data.Dataset, config: ml_collections.ConfigDict, fields: spec_lib.Spec,
          batch_size: int, drop_remainder: bool, train: bool) -> tf.data.Dataset:
  """Padded batches, their time axis padded further to the smallest length bucket."""
  del train
  buckets = sorted(config.input.length_buckets)
  ds = ds.padded_batch(batch_size, drop_remainder=drop_remainder)
  return ds.map(lambda b: _pad_to_bucket(b, buckets, spec_lib.time_keys(fields)))


def _pad_to_bucket(batch: dict, buckets: list[int], time_keys: list[str]) -> dict:
  """Pads the time axis of a padded batch to the smallest bucket >= its length."""
  length = tf.shape(batch['valid'])[1]
  bucket = tf.reduce_min(tf.boolean_mask(buckets, tf.constant(buckets) >= length))
  out = dict(batch)
  for key in time_keys:
    pad = [[0, 0], [0, bucket - length]] + [[0, 0]] * (len(batch[key].shape) - 2)
    out[key] = tf.pad(batch[key], pad)
  return out
