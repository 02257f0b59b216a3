"""Multiplicative speckle noise with look number L (DSANet, Sec. IV).

``y = clip(x * n, 0, 1)`` with ``n ~ Gamma(shape=L, rate=L)``: mean 1, variance 1 / L.
Smaller L means stronger speckle. The same function serves augmentation (random L) and the
robustness study (fixed L), so both use one noise model.
"""
import tensorflow as tf

from input_pipeline import tf_setup  # pylint: disable=unused-import  (configures TensorFlow)


def add_speckle(images: tf.Tensor, looks: float | tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
  """Applies multiplicative Gamma noise.

  One noise value per pixel is shared by all channels (grey frames stored as RGB get the
  same speckle in every channel).

  Args:
    images: float32 [..., H, W, C] intensities in [0, 1].
    looks: the look number L > 0.
    seed: int32 [2] stateless seed.

  Returns:
    Noisy images, same shape, clipped to [0, 1].
  """
  looks = tf.cast(looks, tf.float32)
  shape = tf.concat([tf.shape(images)[:-1], [1]], axis=0)
  noise = tf.random.stateless_gamma(shape, seed=seed, alpha=looks) / looks
  return tf.clip_by_value(images * noise, 0.0, 1.0)
