"""Input pipelines: simulator, TFDS builders, tf.data clip and sequence pipelines.

TensorFlow is used for tf.data only; GPUs are hidden from it on import so that it never
competes with JAX for accelerator memory.
"""
import tensorflow as tf

tf.config.set_visible_devices([], 'GPU')
