"""Decision thresholds chosen on validation predictions
(usvjax/tasks/classification_evaluation.py)."""
import numpy as np
import pytest

from usvjax.tasks import classification_evaluation

# p(class 1) and labels; ROC from the top: 0.8 (pos), 0.6 (neg), 0.35 (pos), 0.3, 0.1 (neg):
# (fpr, tpr) = (0, 1/2), (1/3, 1/2), (1/3, 1), (2/3, 1), (1, 1).
P1 = np.array([0.1, 0.3, 0.35, 0.6, 0.8])
LABELS = np.array([0, 0, 1, 0, 1])
PROBS = np.stack([1 - P1, P1], axis=1)


@pytest.mark.parametrize('rule,expected', [
    ('youden', 0.35),  # J = 1 - 1/3, the largest.
    ('sensitivity=0.5', 0.8),  # The most specific threshold keeping half the positives.
    ('sensitivity=0.9', 0.35),
    ('sensitivity=1', 0.35),
])
def test_threshold_rules_pick_the_hand_computed_threshold(rule, expected):
  assert classification_evaluation.choose_threshold(PROBS, LABELS, rule) == expected


@pytest.mark.parametrize('rule', ['yuoden', 'sensitivity=1.5', 'sensitivity=', 'specificity=0.9'])
def test_a_bad_rule_names_the_key(rule):
  with pytest.raises(ValueError, match=f"config.task.threshold_rule='{rule}'"):
    classification_evaluation.choose_threshold(PROBS, LABELS, rule)


def test_one_class_in_validation_is_an_error():
  with pytest.raises(ValueError, match='both classes'):
    classification_evaluation.choose_threshold(PROBS, np.zeros(5, int), 'youden')
