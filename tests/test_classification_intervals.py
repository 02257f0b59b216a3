"""Bootstrap intervals of the classification metrics: by video, or by patient where the
videos carry one, pinned to their percentiles on hand-built cases; the frame-weighted
segmentation interval resamples videos, not frames."""
import json
import types

import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from input_pipeline import spec
from usvjax.metrics import classification
from usvjax.metrics import statistics
from usvjax.tasks import classification_evaluation

# Four videos: two positives ranked above two negatives (AUC 1), the last negative wrongly
# called positive, so the predictions are correct, correct, correct, wrong.
PROBS = np.array([[0.1, 0.9], [0.2, 0.8], [0.8, 0.2], [0.3, 0.7]])
LABELS = np.array([1, 1, 0, 0])
PATIENTS = ['a', 'a', 'b', 'b']  # Patient a: both positives; b: both negatives.


def test_video_intervals_are_the_percentiles_of_the_resampled_videos():
  """By video the accuracy of a resample is k/4, k ~ Binomial(4, 3/4): P(k = 0) = 1/256 and
  P(k <= 1) = 13/256 straddle the 2.5th percentile (0.25), P(k = 4) = 81/256 holds the
  97.5th (1.0)."""
  found = classification.bootstrap_intervals(PROBS, LABELS)
  assert found['accuracy_ci95'] == [0.25, 1.0]
  assert found['sensitivity_ci95'] == [1.0, 1.0]  # Every positive is found.
  assert found['auc_ci95'] == [1.0, 1.0] and found['ap_ci95'] == [1.0, 1.0]
  assert found['bootstrap_unit'] == 'video' and found['bootstrap_units'] == 4
  assert classification.bootstrap_intervals(PROBS, LABELS) == found  # Fixed seed.


def test_patient_intervals_draw_a_patients_videos_together():
  """By patient a resample is aa (accuracy 1), ab (3/4) or bb (1/2), with probabilities
  1/4, 1/2, 1/4: the interval is [0.5, 1.0], not the by-video [0.25, 1.0]; and the
  negatives are always both of b's videos, so specificity is 1/2 in every resample that
  has negatives."""
  found = classification.bootstrap_intervals(PROBS, LABELS, units=PATIENTS)
  assert found['accuracy_ci95'] == [0.5, 1.0]
  assert found['specificity_ci95'] == [0.5, 0.5]
  assert found['bootstrap_unit'] == 'patient' and found['bootstrap_units'] == 2


@pytest.mark.parametrize('num_classes', [2, 3])
def test_weighted_metrics_are_the_metrics_of_the_repeated_videos(num_classes):
  """A resample scored with weights equals scikit-learn on the videos it draws, repeated
  (tied scores included: the probabilities are rounded to one decimal)."""
  rng = np.random.default_rng(1)
  probs = rng.dirichlet(np.ones(num_classes), 40).round(1) + 1e-3
  probs /= probs.sum(1, keepdims=True)
  labels = rng.integers(0, num_classes, 40)
  weights = rng.integers(0, 3, (6, 40))
  found = classification.weighted_metrics(probs, labels, classification.class_predictions(probs),
                                          weights)
  for r in range(len(weights)):
    drawn = np.repeat(np.arange(40), weights[r])
    expected = classification.classification_metrics(probs[drawn], labels[drawn])
    for key in classification.CI_KEYS:
      assert found[key][r] == pytest.approx(expected[key], abs=1e-12), key


def test_undefined_resamples_are_left_out():
  """A resample without negatives has no specificity, AUC or AP; it is not counted as 1."""
  found = classification.weighted_metrics(PROBS, LABELS, classification.class_predictions(PROBS),
                                          np.array([[1, 1, 0, 0], [1, 0, 1, 1]]))
  assert np.isnan(found['specificity'][0]) and np.isnan(found['auc'][0])
  assert found['specificity'][1] == 0.5 and found['auc'][1] == 1.0
  assert statistics.percentile_interval(np.array([np.nan, 0.5])) == [0.5, 0.5]


def test_frame_weighted_interval_resamples_videos_not_frames():
  """Two videos of ten frames, Dice 1 and 0: resampled as videos the mean is 1, 1/2 or 0
  (interval [0, 1]); ten frames per video resampled one by one would give about
  [0.3, 0.7]."""
  assert statistics.video_bootstrap_ci(np.array([1.0, 0.0]), np.array([10, 10])) == [0.0, 1.0]
  frames = np.repeat([1.0, 0.0], 10)
  by_frame = stats.bootstrap((frames,), np.mean, n_resamples=statistics.BOOTSTRAP_RESAMPLES,
                             method='percentile', rng=np.random.default_rng(0))
  assert 0.2 < by_frame.confidence_interval.low < by_frame.confidence_interval.high < 0.8


class _StoredVideos:
  """A stand-in for a TFDS builder: the ids and groups of the stored split."""
  info = types.SimpleNamespace(features={'frames': None, 'video_id': None, 'group': None})

  def as_dataset(self, split, decoders, shuffle_files):
    del split, decoders, shuffle_files
    return tf.data.Dataset.from_tensor_slices(
        {'video_id': [f'v{i}' for i in range(4)], 'group': PATIENTS})


def _key(video: str) -> np.ndarray:
  key = np.zeros(spec.VIDEO_KEY_BYTES, np.uint8)
  key[:len(video)] = list(video.encode())
  return key


def test_report_holds_patient_intervals(tmp_path):
  evaluation = classification_evaluation.ClassificationEvaluation(threshold=0.5)
  config = types.SimpleNamespace(dataset=types.SimpleNamespace(
      folds=types.SimpleNamespace(num=0), train_split='train'))
  evaluation.use_split(config, _StoredVideos(), 'test')
  evaluation.update({'valid': np.ones(4, bool), 'num_frames': np.full(4, 3),
                     'video_key': np.stack([_key(f'v{i}') for i in range(4)]),
                     'label': LABELS, 'probs': PROBS})
  evaluation.write_report(str(tmp_path), evaluation.result())
  written = json.loads((tmp_path / 'metrics.json').read_text())
  assert written['accuracy_ci95'] == [0.5, 1.0]  # By patient (by video: [0.25, 1.0]).
  assert written['bootstrap_unit'] == 'patient' and written['accuracy'] == 0.75
  assert {f'{k}_ci95' for k in classification.CI_KEYS} <= set(written)
