"""Exact, host-side evaluation metrics; import the submodule you need:

* ``keys``: the names of the metrics each evaluation reports (no dependencies, so the task
  registry can name them without importing the metrics themselves);
* ``segmentation``: per-frame overlap (Dice, IoU, precision, recall) with its one rule for
  undefined ratios, the lesion-frame and lesion-free-frame summaries, the F-measure curves,
  the structure metrics (S, E, weighted F, MAE; pysodmetrics; raw and min-max normalised as
  the papers' released code) and ``SegmentationEvaluator``, which accumulates them over a
  split;
* ``distances``: boundary metrics of one frame (HD95 in MONAI's and MedPy's forms, ASSD,
  normalised surface Dice) with the penalty for a missing mask;
* ``classification``: video-level class predictions, accuracy, precision, sensitivity,
  specificity, F1, AUC and AP (scikit-learn);
* ``statistics``: means over defined values, per-video bootstrap confidence intervals and
  the paired bootstrap tests of two methods (of a metric's mean and of the AUC).
"""
