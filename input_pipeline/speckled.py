"""A dataset builder whose videos carry speckle at their stored resolution (the speckle
robustness study, ``usvjax.studies.robustness``, and ``config.evals`` with ``speckle_looks``).

Each frame gets multiplicative Gamma speckle of look number L (``speckle.add_speckle``) at
its stored size and is stored again as an 8-bit PNG, as an acquired frame would be; the
usual pipeline then decodes and resizes it. The noise of a video is fixed by the seed and
the video id, so every model sees the same noisy frames.
"""
from __future__ import annotations

import tensorflow as tf

from input_pipeline import tf_setup  # (configures TensorFlow on import)
from input_pipeline import preprocess
from input_pipeline import speckle


def speckle_encoded_frames(encoded: tf.Tensor, looks: float, seed: tf.Tensor,
                           channels: int) -> tf.Tensor:
  """Speckle at the frames' own resolution: [T] encoded images -> [T] PNG-encoded noisy
  images of the same size (8 bits, as an acquired frame), noise drawn with ``seed``."""
  frames = tf.cast(preprocess.decode(encoded, channels), tf.float32) / 255.0
  noisy = speckle.add_speckle(frames, looks, seed)
  noisy = tf.cast(tf.round(noisy * 255.0), tf.uint8)
  return tf.map_fn(tf.io.encode_png, noisy, fn_output_signature=tf.string)


class SpeckledBuilder:
  """A dataset builder whose videos carry speckle of look number ``looks`` at their stored
  resolution; everything else (``info``, masks, ids, ...) is ``builder``'s."""

  def __init__(self, builder, looks: float, seed: int):
    self.builder, self.looks, self.seed = builder, looks, seed

  def __getattr__(self, name: str):
    return getattr(self.builder, name)

  def as_dataset(self, **kwargs) -> tf.data.Dataset:
    channels = self.info.features['frames'].shape[-1]

    def noisy(video: dict) -> dict:
      key = tf.strings.to_hash_bucket_fast(video['video_id'], 2**31 - 1)
      seed = tf.cast(tf.stack([tf.cast(self.seed, tf.int64), key]), tf.int32)
      return dict(video, frames=speckle_encoded_frames(video['frames'], self.looks, seed,
                                                       channels))
    return self.builder.as_dataset(**kwargs).map(tf_setup.as_written(noisy))
