"""Input pipelines: simulator, TFDS builders, tf.data clip and sequence pipelines.

Importing the package imports no TensorFlow: the example sources' declarations
(``spec``, ``clips``, ``sequences``, ``view_pairs``) are read by models, tasks and the train
step where TensorFlow may be absent (``scripts/device_check.py``). Every module that runs
tf.data imports ``tf_setup`` first, which configures TensorFlow once.
"""
