"""ROC, PR and confusion-matrix pictures (usvjax/reporting/plots.py): the files are written, the curves
are scikit-learn's own and the confusion matrix holds the counts at the given threshold."""
import os

import cv2
import numpy as np
from sklearn import metrics as skm

from usvjax.reporting import plots

# Eight videos; p(malignant) and the true label of each.
P_MALIGNANT = np.array([0.1, 0.4, 0.6, 0.35, 0.7, 0.9, 0.2, 0.05])
LABELS = np.array([0, 0, 0, 1, 1, 1, 1, 0])


def _pictures(directory) -> dict[str, np.ndarray]:
  return {name: cv2.imread(os.path.join(directory, f'{name}.png'))
          for name in ('roc', 'pr', 'confusion_matrix')}


def test_binary_curves_are_sklearns_and_the_matrix_counts_at_the_threshold(tmp_path):
  probs = np.stack([1 - P_MALIGNANT, P_MALIGNANT], axis=1)
  displays = plots.classification_curves(probs, LABELS, str(tmp_path), ['benign', 'malignant'],
                                         {'accuracy': 0.625}, threshold=0.3)
  for name, image in _pictures(tmp_path).items():
    assert image is not None and image.shape[:2] == (540, 540), name  # 4.5 inches at 120 dpi.
  [roc], [pr], [matrix] = displays['roc'], displays['pr'], displays['confusion_matrix']
  fpr, tpr, _ = skm.roc_curve(LABELS, P_MALIGNANT)
  np.testing.assert_array_equal(roc.fpr, fpr)
  np.testing.assert_array_equal(roc.tpr, tpr)
  np.testing.assert_array_equal(roc.line_.get_xydata(), np.stack([fpr, tpr], axis=1))
  precision, recall, _ = skm.precision_recall_curve(LABELS, P_MALIGNANT)
  np.testing.assert_array_equal(pr.precision, precision)
  np.testing.assert_array_equal(pr.recall, recall)
  assert roc.roc_auc == skm.roc_auc_score(LABELS, P_MALIGNANT)
  # p >= 0.3 is malignant: benign videos 0.1, 0.4, 0.6, 0.05 -> 2 right, 2 wrong; malignant
  # videos 0.35, 0.7, 0.9, 0.2 -> 3 right, 1 wrong (at 0.5 it would be 3/1 and 2/2).
  np.testing.assert_array_equal(matrix.confusion_matrix, [[2, 2], [1, 3]])
  texts = [[t.get_text() for t in row] for row in matrix.text_]
  assert texts == [['2\n(50%)', '2\n(50%)'], ['1\n(25%)', '3\n(75%)']]
  assert 'threshold 0.3' in matrix.ax_.get_title()


def test_multiclass_curves_are_one_vs_rest_and_skip_an_absent_class(tmp_path):
  rng = np.random.default_rng(0)
  labels = np.array([0, 1, 0, 1, 1, 0, 0, 1, 1, 0])  # Class 2 never occurs.
  probs = rng.dirichlet(np.ones(3), size=len(labels))
  displays = plots.classification_curves(probs, labels, str(tmp_path), None, {})
  assert all(image is not None for image in _pictures(tmp_path).values())
  assert [d.name for d in displays['roc']] == ['0', '1']
  for k, roc in enumerate(displays['roc']):
    fpr, tpr, _ = skm.roc_curve(labels == k, probs[:, k])
    np.testing.assert_array_equal(roc.fpr, fpr)
    np.testing.assert_array_equal(roc.tpr, tpr)
  [matrix] = displays['confusion_matrix']
  np.testing.assert_array_equal(
      matrix.confusion_matrix,
      skm.confusion_matrix(labels, probs.argmax(axis=1), labels=[0, 1, 2]))
  assert matrix.confusion_matrix.sum() == len(labels)
  assert [t.get_text() for t in matrix.text_[2]] == ['0\n(0%)'] * 3  # No video of class 2.
