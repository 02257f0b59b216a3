"""TensorFlow as the input pipelines use it (imported by every module that runs tf.data).

TensorFlow is used for tf.data only. On import, GPUs are hidden from it so that it never
competes with JAX for accelerator memory, and Grappler's arithmetic optimizer is turned
off: it regroups float sums and products in tf.data map functions (the contrast
augmentation's ``(x - mean) * factor + mean + delta``) and tf.data does not apply the
rewritten function to every call alike, so the same example came out different in the last
bit from one run to the next, and two trainings with one seed drifted apart. Without it,
tf.data computes exactly what the code says (bitwise as eager TensorFlow does), and a run is
reproducible.

``as_written`` marks the functions given to ``map``, ``filter`` and ``flat_map``: tf.data
traces them as they are, without AutoGraph rewriting their source first. They hold no
Python control flow that depends on a tensor (branches on tensors are ``tf.cond``; a Python
``if`` on a tensor fails at tracing), so the traced graph is the same, and the rewriting is
saved: in a 4-step training with six evaluations (tests/test_run.py, 2 cores), building
the pipelines took 18 s with it and 10 s without.
"""
from collections.abc import Callable

import tensorflow as tf

tf.config.set_visible_devices([], 'GPU')
tf.config.optimizer.set_experimental_options({'arithmetic_optimization': False})


def as_written(function: Callable) -> Callable:
  """``function``, traced by tf.data without AutoGraph conversion."""
  return tf.autograph.experimental.do_not_convert(function)
