"""The names of the metrics the evaluations report, without importing the metrics: the task
registry (``usvjax.tasks``) and the tables name them where no metric is computed."""
from __future__ import annotations

# Per-frame segmentation metrics, averaged over frames as ``mean_<key>``.
SEGMENTATION_KEYS = ('dice', 'iou', 'precision', 'recall', 'mae', 's_measure', 'e_measure',
                     'weighted_f')
# Overlap metrics also pooled over the dataset as ``pooled_<key>``.
POOLED_KEYS = ('dice', 'iou', 'precision', 'recall')
# Boundary distances per frame: in pixels always, in mm where the pixel spacing is known.
DISTANCE_KEYS = ('hd95', 'assd')
DISTANCE_MM_KEYS = ('hd95_mm', 'assd_mm')
# Every metric SegmentationEvaluator.result() always reports (besides counts; the mm
# distances come with a pixel spacing).
SEGMENTATION_RESULT_KEYS = (tuple(f'mean_{k}' for k in SEGMENTATION_KEYS) +
                            tuple(f'pooled_{k}' for k in POOLED_KEYS) +
                            ('max_f', 'max_f_mean_pr') + DISTANCE_KEYS)
# The headline metrics that get a per-video bootstrap confidence interval in reports.
CI_KEYS = ('mean_dice', 'mean_iou') + DISTANCE_KEYS + DISTANCE_MM_KEYS
# What classification_metrics() reports (besides the count of videos).
CLASSIFICATION_KEYS = ('accuracy', 'precision', 'sensitivity', 'specificity', 'f1', 'auc',
                       'ap')
# What the contrastive pretraining's evaluation reports (besides the count of pairs).
CONTRASTIVE_KEYS = ('contrastive_accuracy', 'nt_xent')
