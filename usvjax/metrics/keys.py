"""The names of the metrics the evaluations report, without importing the metrics: the task
registry (``usvjax.tasks``) and the tables name them where no metric is computed. The
definitions are in ``usvjax.metrics.segmentation`` and ``usvjax.metrics.distances``."""
from __future__ import annotations

# The paper-normalised structure metrics (each frame's map min-max stretched first).
PAPER_KEYS = ('mae_paper', 's_measure_paper', 'e_measure_paper', 'weighted_f_paper')
# Per-frame segmentation metrics, averaged over every scored frame as ``mean_<key>``.
SEGMENTATION_KEYS = ('dice', 'iou', 'precision', 'recall', 'mae', 's_measure', 'e_measure',
                     'weighted_f') + PAPER_KEYS
# Overlap metrics averaged over the frames whose ground truth holds a lesion, as
# ``lesion_<key>``, and pooled over the dataset as ``pooled_<key>``.
LESION_KEYS = ('dice', 'iou', 'precision', 'recall')
POOLED_KEYS = LESION_KEYS
# What the lesion-free frames report: the share with any predicted lesion pixel and the
# mean predicted share of the frame; and the share of lesion frames where nothing is
# predicted (a report warns above EMPTY_PREDICTION_WARNING).
EMPTY_FRAME_KEYS = ('empty_fp_rate', 'empty_predicted_area')
MISSED_KEY = 'lesion_empty_prediction_rate'
EMPTY_PREDICTION_WARNING = 0.5
# Boundary metrics per frame on the distance frame set (every frame with a lesion in its
# ground truth or its prediction; the penalty where one of them is empty): in pixels (nsd:
# tolerance in pixels) always, in mm (nsd_mm: tolerance in mm) where the spacing is known.
DISTANCE_KEYS = ('hd95', 'hd95_pooled', 'assd', 'nsd')
DISTANCE_MM_KEYS = ('hd95_mm', 'hd95_pooled_mm', 'assd_mm', 'nsd_mm')
# Every metric SegmentationEvaluator.result() always reports (besides counts and the NSD
# tolerances; the mm distances come with a pixel spacing).
SEGMENTATION_RESULT_KEYS = (tuple(f'mean_{k}' for k in SEGMENTATION_KEYS) +
                            tuple(f'lesion_{k}' for k in LESION_KEYS) +
                            tuple(f'pooled_{k}' for k in POOLED_KEYS) +
                            EMPTY_FRAME_KEYS + (MISSED_KEY, 'max_f', 'max_f_mean_pr') +
                            DISTANCE_KEYS)
# The metrics that get a per-video bootstrap confidence interval in reports, the headline
# first.
CI_KEYS = (('lesion_dice', 'lesion_iou', 'pooled_dice', 'mean_dice', 'mean_iou') +
           DISTANCE_KEYS + DISTANCE_MM_KEYS)
# What classification_metrics() reports (besides the count of videos); ece is the expected
# calibration error of the videos' top-class probabilities.
CLASSIFICATION_KEYS = ('accuracy', 'precision', 'sensitivity', 'specificity', 'f1', 'auc',
                       'ap', 'ece')
# What the contrastive pretraining's evaluation reports (besides the count of pairs).
CONTRASTIVE_KEYS = ('contrastive_accuracy', 'nt_xent')
