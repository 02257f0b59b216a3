"""Metrics: agreement with pysodmetrics, the empty-mask rule, FLA-Net's F-measure, HD95 and
ASSD, the paired bootstrap and classification, by hand; the robustness study's speckle at
the frames' own resolution."""
import types

import numpy as np
import py_sod_metrics
import pytest
import tensorflow as tf

from input_pipeline import preprocess
from input_pipeline import speckled
from usvjax.metrics import classification
from usvjax.metrics import distances
from usvjax.metrics import segmentation
from usvjax.metrics import statistics


def _random_frame(rng, empty=False):
  gt = np.zeros((40, 48), bool)
  if not empty:
    y, x = rng.integers(0, 25), rng.integers(0, 30)
    gt[y:y + rng.integers(5, 15), x:x + rng.integers(5, 18)] = True
  prob = np.clip(0.6 * gt + rng.uniform(0, 0.55, gt.shape), 0, 1)
  return prob, gt


def test_dice_iou_mae_agree_with_pysodmetrics():
  rng = np.random.default_rng(0)
  evaluator = segmentation.SegmentationEvaluator()
  handlers = {name: cls(with_dynamic=False, with_adaptive=False, with_binary=True,
                        sample_based=True)
              for name, cls in (('dice', py_sod_metrics.DICEHandler),
                                ('iou', py_sod_metrics.IOUHandler))}
  reference = py_sod_metrics.FmeasureV2(handlers)
  mae = py_sod_metrics.MAE()
  for _ in range(12):
    prob, gt = _random_frame(rng)
    row = evaluator.update(prob, gt)
    single = py_sod_metrics.FmeasureV2({k: type(h)(with_dynamic=False, with_adaptive=False,
                                                   with_binary=True, sample_based=True)
                                        for k, h in handlers.items()})
    single.step(prob, gt, normalize=False)
    assert row['dice'] == pytest.approx(single.get_results()['dice']['binary'])
    assert row['iou'] == pytest.approx(single.get_results()['iou']['binary'])
    reference.step(prob, gt, normalize=False)
    mae.step(prob, gt, normalize=False)
  result = evaluator.result()
  assert result['mean_dice'] == pytest.approx(reference.get_results()['dice']['binary'])
  assert result['mean_iou'] == pytest.approx(reference.get_results()['iou']['binary'])
  assert result['mean_mae'] == pytest.approx(mae.get_results()['mae'])
  assert result['scored_frames'] == 12


def test_overlap_metrics_by_hand():
  # 2x2 true square, prediction covers 3 of its 4 pixels and 1 outside.
  gt = np.zeros((4, 4), bool)
  gt[:2, :2] = True
  prob = np.zeros((4, 4))
  prob[0, 0] = prob[0, 1] = prob[1, 0] = prob[3, 3] = 0.9
  tp, fp, fn = segmentation.confusion(prob, gt)
  assert (tp, fp, fn) == (3, 1, 1)
  m = segmentation.overlap_metrics(tp, fp, fn)
  assert m['dice'] == pytest.approx(6 / 8)
  assert m['iou'] == pytest.approx(3 / 5)
  assert m['precision'] == m['recall'] == pytest.approx(0.75)


def test_empty_mask_rule():
  empty = np.zeros((8, 8), bool)
  assert segmentation.overlap_metrics(*segmentation.confusion(np.zeros((8, 8)), empty)) == {
      'dice': 1.0, 'iou': 1.0, 'precision': 1.0, 'recall': 1.0}
  false_alarm = np.zeros((8, 8))
  false_alarm[0, 0] = 1.0
  m = segmentation.overlap_metrics(*segmentation.confusion(false_alarm, empty))
  assert m['dice'] == m['iou'] == m['precision'] == 0.0
  # A complete miss is 0 everywhere.
  gt = np.zeros((8, 8), bool)
  gt[4:, 4:] = True
  m = segmentation.overlap_metrics(*segmentation.confusion(false_alarm, gt))
  assert m == {'dice': 0.0, 'iou': 0.0, 'precision': 0.0, 'recall': 0.0}


def test_reports_give_the_share_of_empty_ground_truth_frames():
  evaluator = segmentation.SegmentationEvaluator()
  lesion = np.zeros((8, 8))
  lesion[2:5, 2:5] = 1.0
  for gt in (np.zeros((8, 8)), lesion, np.zeros((8, 8)), lesion):
    evaluator.update(np.zeros((8, 8)), gt)  # Finds nothing: Dice 1 on the empty frames.
  result = evaluator.result()
  assert result['empty_gt_fraction'] == 0.5
  assert result['mean_dice'] == 0.5 and result['pooled_dice'] == 0.0


def test_pooled_differs_from_frame_mean():
  evaluator = segmentation.SegmentationEvaluator()
  big = np.zeros((10, 10), bool)
  big[:, :5] = True
  evaluator.update(big.astype(float), big)  # Perfect on a large lesion.
  small_gt = np.zeros((10, 10), bool)
  small_gt[0, 0] = True
  evaluator.update(np.zeros((10, 10)), small_gt)  # Misses a 1-pixel lesion.
  result = evaluator.result()
  assert result['mean_dice'] == pytest.approx(0.5)
  assert result['pooled_dice'] == pytest.approx(100 / 101)
  assert result['max_f'] == pytest.approx(0.5)  # F curve: 1 and 0, at every threshold.


def test_flanet_f_measure_by_hand():
  """``max_f_mean_pr`` (FLA-Net's released evaluator): F(beta^2 = 0.3) of the frame-mean
  precision and recall of ``prob >= th``, maximised over th; here not the Dice, not F1
  (beta^2 = 1) and not ``max_f`` (the mean of per-frame F)."""
  evaluator = segmentation.SegmentationEvaluator()
  evaluator.update(np.array([[0.9, 0.4], [0.6, 0.1]]), np.array([[1, 1], [0, 0]]))  # A
  evaluator.update(np.array([[0.8, 0.7], [0.2, 0.2]]), np.array([[1, 0], [0, 0]]))  # B
  result = evaluator.result()
  # Dice at 0.5: A finds 0.9 and 0.6 (1/2), B finds 0.8 and 0.7 (2/3).
  assert result['mean_dice'] == pytest.approx((1 / 2 + 2 / 3) / 2)
  # Per th (P, R) of A, B -> mean (P, R) -> F:
  #   th <= 0.1:   (1/2, 1), (1/4, 1)  -> (3/8, 1)     -> 0.438
  #   (0.1, 0.2]:  (2/3, 1), (1/4, 1)  -> (11/24, 1)   -> 0.524
  #   (0.2, 0.4]:  (2/3, 1), (1/2, 1)  -> (7/12, 1)    -> 0.645
  #   (0.4, 0.6]:  (1/2, 1/2), (1/2, 1) -> (1/2, 3/4)  -> 0.542
  #   (0.6, 0.7]:  (1, 1/2), (1/2, 1)  -> (3/4, 3/4)   -> 0.750
  #   (0.7, 0.8]:  (1, 1/2), (1, 1)    -> (1, 3/4)     -> 1.3 * 3/4 / (0.3 + 3/4) = 13/14
  #   (0.8, 0.9]:  (1, 1/2), (0, 0)    -> (1/2, 1/4)   -> 0.406; above 0.9: 0.
  assert result['max_f_mean_pr'] == pytest.approx(13 / 14)
  assert segmentation.f_measure(np.array(1.0), np.array(0.75), beta2=1.0) == pytest.approx(6 / 7)
  # The mean of per-frame F there: (1.3 * 1/2 / 0.8 + 1) / 2 = 0.906 (pysodmetrics' rounding
  # of prob to 256 levels moves its thresholds, not this value).
  assert result['max_f'] == pytest.approx((1.3 * 0.5 / 0.8 + 1) / 2)
  # Nothing predicted (th > 0 on zeros; th = 0 takes every pixel), or no lesion: precision
  # (recall) 0, as in the released evaluator.
  precision, recall = segmentation.precision_recall_curve(np.zeros((2, 2)), np.eye(2))
  assert precision[0] == 0.5 and not precision[1:].any() and not recall[1:].any()
  precision, recall = segmentation.precision_recall_curve(np.full((2, 2), 0.9), np.zeros((2, 2)))
  assert not precision.any() and not recall.any()


def _square(top, left, size=3, shape=(12, 16)):
  mask = np.zeros(shape, bool)
  mask[top:top + size, left:left + size] = True
  return mask


@pytest.mark.parametrize('offset', [3, 4, 6])
def test_hd95_and_assd_of_two_offset_squares_by_hand(offset):
  """3x3 squares k pixels apart along x: every pixel but the centre is border. From one
  square's border to the other's facing column: k (3 pixels), k - 1 (2), k - 2 (3), both
  ways; so ASSD = (6k + 4(k - 1) + 6(k - 2)) / 16 = k - 1, and the 95th percentile of the
  8 distances of each direction (numpy's linear rule, position 6.65 of the sorted ones,
  both k), and so of the 16 pooled, is k."""
  a, b = _square(4, 2), _square(4, 2 + offset)
  d = distances.frame_distances(a, b, 2.0, 1.0)
  assert d['hd95'] == d['hd95_pooled'] == pytest.approx(offset)
  assert d['assd'] == pytest.approx(offset - 1)
  assert np.isnan(d['hd95_mm']) and np.isnan(d['assd_mm'])  # No spacing given.
  # 0.5 mm rows, 0.2 mm columns: the shortest paths stay horizontal.
  mm = distances.frame_distances(a, b, 2.0, 1.0, spacing=(0.5, 0.2))
  assert mm['hd95_mm'] == pytest.approx(0.2 * offset)
  assert mm['assd_mm'] == pytest.approx(0.2 * (offset - 1))
  assert distances.frame_distances(b, a, 2.0, 1.0) == pytest.approx(d, nan_ok=True)


def test_paired_bootstrap_of_per_video_differences():
  weights = np.array([3, 1, 2, 5])
  better = statistics.paired_bootstrap(np.full(4, 0.1), weights)
  assert better['difference'] == pytest.approx(0.1)
  assert better['ci95_lo'] == pytest.approx(0.1) and better['ci95_hi'] == pytest.approx(0.1)
  assert better['p'] == 0.0
  mixed = statistics.paired_bootstrap(np.array([0.2, -0.2, 0.1, -0.04]), weights)
  # The frame-weighted mean: (0.6 - 0.2 + 0.2 - 0.2) / 11.
  assert mixed['difference'] == pytest.approx(0.4 / 11)
  assert mixed['ci95_lo'] < 0 < mixed['ci95_hi'] and 0.2 < mixed['p'] <= 1
  same = statistics.paired_bootstrap(np.zeros(4), weights)
  assert same['p'] == 1.0
  one = statistics.paired_bootstrap(np.array([0.3]), np.array([4]))
  assert one['difference'] == pytest.approx(0.3) and np.isnan(one['p'])


def test_binary_classification_by_hand():
  probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7], [0.45, 0.55]])
  labels = np.array([0, 1, 1, 0, 1])
  m = classification.classification_metrics(probs, labels)
  # Predictions at 0.5: [0, 1, 0, 1, 1] -> TP=2, FP=1, FN=1, TN=1.
  assert m['accuracy'] == pytest.approx(3 / 5)
  assert m['precision'] == pytest.approx(2 / 3)
  assert m['sensitivity'] == pytest.approx(2 / 3)
  assert m['specificity'] == pytest.approx(1 / 2)
  assert m['f1'] == pytest.approx(2 / 3)
  # Positive scores 0.8, 0.4, 0.55 vs negative 0.1, 0.7: 4 of 6 pairs ordered.
  assert m['auc'] == pytest.approx(4 / 6)
  m = classification.classification_metrics(probs, labels, threshold=0.75)
  assert m['sensitivity'] == pytest.approx(1 / 3) and m['specificity'] == 1.0


def test_multiclass_macro_metrics():
  probs = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.2, 0.7], [0.6, 0.3, 0.1]])
  labels = np.array([0, 1, 2, 1])
  m = classification.classification_metrics(probs, labels)
  assert m['accuracy'] == pytest.approx(3 / 4)
  # Per class recall: 1, 1/2, 1 -> macro 5/6; specificity: 2/3, 1, 1 -> 8/9.
  assert m['sensitivity'] == pytest.approx(5 / 6)
  assert m['specificity'] == pytest.approx(8 / 9)
  assert 0.0 <= m['auc'] <= 1.0 and 0.0 <= m['ap'] <= 1.0


def test_single_class_labels_give_nan_auc():
  m = classification.classification_metrics(np.array([[0.3, 0.7], [0.8, 0.2]]),
                                            np.array([1, 1]))
  assert np.isnan(m['auc']) and m['accuracy'] == 0.5


def test_robustness_speckle_is_added_before_resizing():
  """A constant grey 256x256 video through the study's builder: at the stored resolution
  the speckle has its full variance x^2 / L; resized to a 32-pixel model input (8x8
  pixels averaged) it keeps only a small part of it, where noise added after resizing
  would keep all of it."""
  looks, grey = 20.0, 128 / 255
  frame = tf.io.encode_png(tf.fill([256, 256, 1], tf.constant(128, tf.uint8)))
  video = {'frames': tf.stack([frame, frame]), 'video_id': tf.constant('v')}
  frames_feature = types.SimpleNamespace(shape=(None, None, None, 1))
  builder = types.SimpleNamespace(info=types.SimpleNamespace(features={'frames': frames_feature}),
                                  as_dataset=lambda **_: tf.data.Dataset.from_tensors(video))
  noisy = speckled.SpeckledBuilder(builder, looks, seed=0)
  (encoded,) = list(noisy.as_dataset(split='test'))
  stored = preprocess.decode(encoded['frames'], 1)
  native = stored.numpy() / 255.0
  assert native.shape == (2, 256, 256, 1)
  assert native.mean() == pytest.approx(grey, rel=0.01)
  assert native.var() == pytest.approx(grey**2 / looks, rel=0.05)
  assert not np.array_equal(native[0], native[1])  # Every frame has its own noise.
  assert preprocess.frames_to_model(stored, 32, 1).numpy().var() < grey**2 / looks / 10
  (again,) = list(noisy.as_dataset(split='test'))  # The same noise every time.
  np.testing.assert_array_equal(again['frames'], encoded['frames'])


def test_paired_auc_bootstrap_by_hand():
  labels = np.array([0, 0, 0, 1, 1, 1])
  perfect = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
  reference = np.array([0.1, 0.8, 0.3, 0.7, 0.2, 0.9])  # AUC: 6 of 9 pairs ranked right.
  test = statistics.paired_auc_bootstrap(perfect, reference, labels)
  assert test['difference'] == pytest.approx(1 - 6 / 9)
  assert 0 <= test['ci95_lo'] <= test['difference'] <= test['ci95_hi'] <= 1
  assert 0 < test['p'] < 1
  reverse = statistics.paired_auc_bootstrap(reference, perfect, labels)
  assert reverse['difference'] == pytest.approx(-test['difference'])
  same = statistics.paired_auc_bootstrap(reference, reference, labels)
  assert same['difference'] == 0 and same['p'] == 1
  ties = np.full(6, 0.5)  # Average ranks: AUC 0.5, as scikit-learn's.
  assert statistics.paired_auc_bootstrap(ties, perfect, labels)['difference'] == pytest.approx(-0.5)
  assert np.isnan(statistics.paired_auc_bootstrap(perfect, reference, np.ones(6))['p'])


def test_compare_pairs_classifiers_by_auc_per_seed_and_pooled():
  from usvjax.studies import compare  # pylint: disable=g-import-not-at-top
  from usvjax.studies import compare_report  # pylint: disable=g-import-not-at-top
  labels = [0, 0, 0, 1, 1, 1]
  def run(seed, probs):
    return {'seed': seed, 'video_probs': {f'v{i}': [p, y] for i, (p, y) in
                                          enumerate(zip(probs, labels))}}
  first, better = [0.1, 0.8, 0.3, 0.7, 0.2, 0.9], [0.1, 0.2, 0.3, 0.7, 0.8, 0.9]
  results = {'first': [run(0, first), run(1, first)],
             'better': [run(0, better), run(1, better)]}
  pooled = compare_report.paired_tests(results)
  assert pooled['better']['metric'] == 'auc' and pooled['better']['reference'] == 'first'
  assert pooled['better']['difference'] == pytest.approx(1 - 6 / 9)
  assert results['better'][1]['paired_auc_difference'] == pytest.approx(1 - 6 / 9)

  # Another reference (compare --reference): every row against it, the first included.
  worse = [0.9, 0.8, 0.3, 0.7, 0.2, 0.1]
  results['worse'] = [run(0, worse), run(1, worse)]
  against = compare_report.paired_tests(results, reference='better')
  assert set(against) == {'first', 'worse'}
  assert against['first']['reference'] == 'better'
  assert against['first']['difference'] == pytest.approx(6 / 9 - 1)
  assert against['worse']['difference'] == pytest.approx(1 / 9 - 1)  # AUC 1/9: only 0.7 > 0.3.
  assert results['first'][0]['paired_auc_difference'] == pytest.approx(6 / 9 - 1)
  with pytest.raises(compare.ConfigError, match="reference 'best'.*'first', 'better', 'worse'"):
    compare_report.paired_tests(results, reference='best')
  with pytest.raises(compare.ConfigError, match="reference 'lsmt' is not a method"):
    compare.run([compare.parse_method('lstm=configs/cnn_lstm.py:tiny')], {}, [0], '/nonexistent',
                reference='lsmt')  # Refused before any run starts.
