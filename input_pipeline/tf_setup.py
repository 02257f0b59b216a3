"""TensorFlow as the input pipelines use it (imported by every module that runs tf.data).

TensorFlow is used for tf.data only. On import, GPUs are hidden from it so that it never
competes with JAX for accelerator memory, and Grappler's arithmetic optimizer is turned
off: it regroups float sums and products in tf.data map functions (the contrast
augmentation's ``(x - mean) * factor + mean + delta``) and tf.data does not apply the
rewritten function to every call alike, so the same example came out different in the last
bit from one run to the next, and two trainings with one seed drifted apart. Without it,
tf.data computes exactly what the code says (bitwise as eager TensorFlow does), and a run is
reproducible.
"""
import tensorflow as tf

tf.config.set_visible_devices([], 'GPU')
tf.config.optimizer.set_experimental_options({'arithmetic_optimization': False})
