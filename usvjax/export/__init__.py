"""Trained models outside the lab: ``jax.export`` (StableHLO) and TF SavedModel artifacts of
a run's inference functions, their loader and batch prediction over folders.

* ``artifact``: ``load(directory)``, which runs an exported model with only jax and numpy
  installed (no flax, no model code, no TensorFlow);
* ``functions``: the inference functions of a restored run and the ``export.json`` that
  describes them (preprocessing, threshold, class names, signature, provenance);
* ``writer``: ``export_run``, the artifact files (``experiments/export.py`` is the command);
* ``predict``: ``predict_folder``, masks and overlays or per-video probabilities of every
  image, frame folder, video and DICOM file of a folder (``experiments/predict.py``).

Only ``artifact`` is imported here, so ``usvjax.export.load`` needs nothing else.
"""
from usvjax.export.artifact import load

__all__ = ['load']
