"""The tf.data side of the classification examples (``sequences.Sequences``): sequences of
one frame per equal segment of each video (a random one in training, the centre in
evaluation) and their length-bucketed batches (see ``input_pipeline/sequences.py``)."""
from __future__ import annotations

import ml_collections
import tensorflow as tf

from input_pipeline import tf_setup  # (configures TensorFlow on import)
from input_pipeline import preprocess
from input_pipeline import sequences
from input_pipeline import spec as spec_lib

augment = preprocess.augment_frames
# Folded into (run seed, video position): the frame draws' own random stream, apart from the
# augmentation's, which starts from (run seed, item position).
_SAMPLING_STREAM = 1


def segment_indices(num: tf.Tensor, count: tf.Tensor, offsets: tf.Tensor) -> tf.Tensor:
  """int32 [count]: frame floor((i + u_i) num / count) of segment i = [i num / count,
  (i + 1) num / count) of ``num`` frames, u = ``offsets`` float64 [count] in [0, 1);
  kept inside its segment where rounding would carry it past the end."""
  segment = tf.range(count, dtype=tf.float64)
  num, count = tf.cast(num, tf.float64), tf.cast(count, tf.float64)
  index = tf.math.floor((segment + offsets) * num / count)
  last = tf.math.ceil((segment + 1) * num / count) - 1
  return tf.cast(tf.minimum(index, last), tf.int32)


def uniform_indices(num: tf.Tensor, count: tf.Tensor, offset: float = 0.5) -> tf.Tensor:
  """int32 [count]: the frame at ``offset`` (u) of each of ``count`` equal segments of
  ``num`` frames (u = 1/2, the centres: evaluation's frames)."""
  return segment_indices(num, count, tf.fill([count], tf.constant(offset, tf.float64)))


def random_indices(num: tf.Tensor, count: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
  """int32 [count]: one frame drawn uniformly in each of ``count`` equal segments of ``num``
  frames (TSN's segment sampling), from the stateless ``seed`` (int [2])."""
  offsets = tf.random.stateless_uniform([count], seed, dtype=tf.float64)
  return segment_indices(num, count, offsets)


def sampling_seed(run_seed: int, position: tf.Tensor) -> tf.Tensor:
  """The stateless seed of the frame draw of the ``position``-th video of a training
  stream (the videos repeat and are shuffled with the run seed, so the position tells the
  pass over the data apart)."""
  pair = tf.stack([tf.constant(run_seed, tf.int64), tf.cast(position, tf.int64)])
  return tf.random.experimental.stateless_fold_in(pair, _SAMPLING_STREAM)


def _sequence(video: dict, key: str, max_frames: int, sampling: str,
              seed: tf.Tensor | None, offset: float = 0.5) -> dict:
  """``max_frames`` frames (``sampling`` 'exact') or up to that many ('up_to') of ``key``:
  random ones in their segments with a ``seed`` (training), else the one at ``offset``."""
  num = tf.shape(video[key])[0]
  count = max_frames if sampling == 'exact' else tf.minimum(num, max_frames)
  indices = (uniform_indices(num, count, offset) if seed is None
             else random_indices(num, count, seed))
  return {key: tf.gather(video[key], indices), 'label': video['label'],
          'video_id': video['video_id']}


def items(videos: tf.data.Dataset, config: ml_collections.ConfigDict,
          train: bool) -> tf.data.Dataset:
  """One encoded sequence per video of a stream of encoded videos: its frames drawn anew
  for every video of a training stream (seeded by its position), fixed in evaluation (at
  the segments' ``config.input.eval_offset``, 1/2 unless ``evaluate --clips`` sets it)."""
  sequences.check_input(config.input)
  key = sequences.sequence_key(videos.element_spec)
  max_frames, sampling = config.input.max_frames, config.input.sampling
  if not train:
    offset = float(config.input.eval_offset)
    return videos.map(tf_setup.as_written(
        lambda v: _sequence(v, key, max_frames, sampling, None, offset)))
  return videos.enumerate().map(tf_setup.as_written(lambda position, v: _sequence(
      v, key, max_frames, sampling, sampling_seed(config.seed, position))))


def batch(ds: tf.data.Dataset, config: ml_collections.ConfigDict, fields: spec_lib.Spec,
          batch_size: int, drop_remainder: bool, train: bool) -> tf.data.Dataset:
  """Padded batches, their time axis padded further to the smallest length bucket."""
  del train
  buckets = sorted(config.input.length_buckets)
  ds = ds.padded_batch(batch_size, drop_remainder=drop_remainder)
  return ds.map(tf_setup.as_written(
      lambda b: _pad_to_bucket(b, buckets, spec_lib.time_keys(fields))))


def _pad_to_bucket(batch: dict, buckets: list[int], time_keys: list[str]) -> dict:
  """Pads the time axis of a padded batch to the smallest bucket >= its length."""
  length = tf.shape(batch['valid'])[1]
  bucket = tf.reduce_min(tf.boolean_mask(buckets, tf.constant(buckets) >= length))
  out = dict(batch)
  for key in time_keys:
    pad = [[0, 0], [0, bucket - length]] + [[0, 0]] * (len(batch[key].shape) - 2)
    out[key] = tf.pad(batch[key], pad)
  return out
