"""Classification examples: frame (or cached feature) sequences sampled over a whole video.

Sequences are ``frames`` [n, H, W, C] (or cached per-frame ``features`` [n, D], see
``usvjax.feature_cache``) sampled uniformly over the whole video: frame i of n sampled from
a video of N frames is the one at the centre of the i-th of n equal segments,
floor((i + 1/2) N / n), so one frame is the middle frame and the ends, where the lesion is
often out of view, are never favoured. ``input.sampling`` 'up_to' takes
n = min(N, max_frames) (all frames of a short video); 'exact' takes n = max_frames (frames
of a shorter video repeat: Cui et al.'s equal-frame datasets). Sequences are padded to the
smallest length bucket (``input.length_buckets``) that holds the batch's longest one, with
``valid[B, T]`` marking real frames, so a step function compiles at most once per bucket.
"""
from __future__ import annotations

from collections.abc import Mapping

import ml_collections
import numpy as np
import tensorflow as tf

from input_pipeline import preprocess
from input_pipeline import spec as spec_lib
from usvjax.errors import ConfigError

SAMPLINGS = ('up_to', 'exact')


def sequence_key(features: Mapping | None) -> str:
  """What a sequence is made of: cached 'features' if the dataset has them, else 'frames'."""
  return 'features' if features is not None and 'features' in features else 'frames'


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


def check_input(input_config: ml_collections.ConfigDict) -> None:
  if max(input_config.length_buckets) < input_config.max_frames:
    raise ConfigError(f'config.input.length_buckets {list(input_config.length_buckets)} must '
                      f'include a bucket >= config.input.max_frames={input_config.max_frames}.')
  if input_config.sampling not in SAMPLINGS:
    raise ConfigError(f'config.input.sampling={input_config.sampling!r}: use one of '
                      f'{SAMPLINGS}.')


class Sequences:
  """The example source of video classification (``spec.ExampleSource``)."""

  def required_features(self, features: Mapping) -> tuple[str, ...]:
    return (sequence_key(features), 'label')

  def fields(self, config: ml_collections.ConfigDict, train: bool,
             features: Mapping | None) -> spec_lib.Spec:
    if sequence_key(features) == 'features':
      dim = features['features'].shape[-1]
      out = {'features': spec_lib.Field((None, dim), np.dtype(np.float32), time=True)}
    else:
      out = {'frames': spec_lib.image_field(config, None)}
    out['label'] = spec_lib.Field((), np.dtype(np.int64))
    return {**out, **spec_lib.common_fields(train, None)}

  def items(self, videos: tf.data.Dataset, config: ml_collections.ConfigDict,
            train: bool) -> tf.data.Dataset:
    del train
    check_input(config.input)
    key = 'features' if 'features' in videos.element_spec else 'frames'
    return videos.map(lambda v: _sequence(v, key, config.input.max_frames,
                                          config.input.sampling))

  augment = staticmethod(preprocess.augment_frames)

  def batch(self, ds: tf.data.Dataset, config: ml_collections.ConfigDict,
            fields: spec_lib.Spec, batch_size: int, drop_remainder: bool,
            train: bool) -> tf.data.Dataset:
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
