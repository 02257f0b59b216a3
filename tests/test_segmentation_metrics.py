"""Segmentation metrics that a wrong model cannot win (issue 42), by hand: the lesion-frame
headline, the undefined-ratio rule, distances penalised instead of dropped, MONAI's HD95
beside MedPy's, the normalised surface Dice, the papers' min-max normalisation, the
default best metric against a model that predicts nothing, and the report's warning."""
import json

import numpy as np
import py_sod_metrics
import pytest
from medpy.metric import binary as medpy_binary

from configs import common
from input_pipeline import spec
from usvjax.core import checkpoint
from usvjax.metrics import distances
from usvjax.metrics import segmentation
from usvjax.tasks import segmentation_evaluation

SQRT5, SQRT8 = 5 ** 0.5, 8 ** 0.5


def _square(top, left, size=3, shape=(12, 16)):
  mask = np.zeros(shape, bool)
  mask[top:top + size, left:left + size] = True
  return mask


def _four_frames():
  """(prob, gt) of two lesion frames (one three-quarters found with one false pixel, one
  missed) and two lesion-free frames (one predicted empty, one with 2 false pixels)."""
  lesion = np.zeros((8, 8))
  lesion[:2, :2] = 1.0
  found = np.zeros((8, 8))
  found[0, 0] = found[0, 1] = found[1, 0] = found[7, 7] = 0.9
  alarm = np.zeros((8, 8))
  alarm[5, 5:7] = 0.8
  empty = np.zeros((8, 8))
  return [(found, lesion), (empty, lesion), (empty, empty), (alarm, empty)]


def test_undefined_ratios_follow_one_rule():
  # Nothing to find, nothing found: a perfect frame.
  assert segmentation.overlap_metrics(0, 0, 0) == dict.fromkeys(
      ('dice', 'iou', 'precision', 'recall'), 1.0)
  # A missed lesion: precision 0/0 is a miss, not 1.
  assert segmentation.overlap_metrics(0, 0, 5) == dict.fromkeys(
      ('dice', 'iou', 'precision', 'recall'), 0.0)
  # A lesion predicted on a lesion-free frame: recall 0/0 is 0 as well.
  assert segmentation.overlap_metrics(0, 3, 0) == dict.fromkeys(
      ('dice', 'iou', 'precision', 'recall'), 0.0)


def test_lesion_frames_and_lesion_free_frames_apart_by_hand():
  evaluator = segmentation.SegmentationEvaluator()
  for prob, gt in _four_frames():
    evaluator.update(prob, gt)
  r = evaluator.result()
  # Lesion frames: (Dice 6/8, IoU 3/5, P 3/4, R 3/4) and the miss (0, 0, 0, 0).
  assert r['lesion_dice'] == pytest.approx(3 / 8)
  assert r['lesion_iou'] == pytest.approx(3 / 10)
  assert r['lesion_precision'] == pytest.approx(3 / 8)  # Not (3/4 + 1) / 2.
  assert r['lesion_recall'] == pytest.approx(3 / 8)
  assert r['num_lesion_frames'] == 2 and r['empty_gt_fraction'] == 0.5
  # Every frame: the correct lesion-free frame counts 1, the false alarm 0 (recall too).
  assert r['mean_dice'] == pytest.approx((6 / 8 + 1) / 4)
  assert r['mean_precision'] == pytest.approx((3 / 4 + 1) / 4)
  assert r['mean_recall'] == pytest.approx((3 / 4 + 1) / 4)
  # Pooled: TP 3, FP 1 + 2, FN 1 + 4.
  assert r['pooled_dice'] == pytest.approx(6 / 14)
  assert r['pooled_precision'] == pytest.approx(3 / 6)
  assert r['pooled_recall'] == pytest.approx(3 / 8)
  # Lesion-free frames: one of two with a predicted lesion of 2 of 64 pixels.
  assert r['empty_fp_rate'] == 0.5
  assert r['empty_predicted_area'] == pytest.approx(1 / 64)
  assert r['lesion_empty_prediction_rate'] == 0.5


def test_a_split_without_lesion_free_frames_or_lesion_frames_says_nan():
  evaluator = segmentation.SegmentationEvaluator()
  evaluator.update(np.zeros((4, 4)), np.zeros((4, 4)))
  r = evaluator.result()
  assert np.isnan(r['lesion_dice']) and np.isnan(r['lesion_empty_prediction_rate'])
  assert r['empty_fp_rate'] == 0.0 and r['mean_dice'] == 1.0
  assert np.isnan(r['hd95']) and r['num_distance_frames'] == 0


def test_distances_penalise_a_missing_mask_instead_of_dropping_the_frame():
  evaluator = segmentation.SegmentationEvaluator(nsd_tolerance_px=2.0)
  empty = np.zeros((12, 16), bool)
  evaluator.update(_square(4, 2).astype(float), _square(4, 6))  # HD95 4, ASSD 3.
  evaluator.update(_square(4, 2).astype(float), _square(4, 8))  # HD95 6, ASSD 5.
  evaluator.update(np.zeros((12, 16)), _square(4, 2))  # Missed lesion: penalty 20.
  evaluator.update(_square(4, 2).astype(float), empty)  # False alarm: penalty 20.
  evaluator.update(np.zeros((12, 16)), empty)  # Correct lesion-free frame: no boundary.
  r = evaluator.result()
  diagonal = np.hypot(12, 16)
  assert diagonal == 20.0
  assert r['hd95'] == pytest.approx((4 + 6 + 20 + 20) / 4)
  assert r['hd95_pooled'] == pytest.approx((4 + 6 + 20 + 20) / 4)
  assert r['assd'] == pytest.approx((3 + 5 + 20 + 20) / 4)
  # NSD at 2 px: squares 4 apart have distances 2, 2, 2, 3, 3, 4, 4, 4 each way (6 of 16
  # within 2 px); 6 apart none; the penalised frames 0.
  assert r['nsd'] == pytest.approx(6 / 16 / 4)
  assert r['distance_penalised_frames'] == 2 and r['num_distance_frames'] == 4
  assert [np.isnan(row['hd95']) for row in evaluator.rows] == [False] * 4 + [True]
  assert 'hd95_mm' not in r and r['nsd_tolerance_px'] == 2.0
  # In mm (rows 0.5 mm, columns 0.3 mm): the squares' distances are 2, 3 and 4 columns
  # (0.6, 0.9, 1.2 mm: 10 of 16 within the 1 mm tolerance), the penalty the frame's
  # diagonal in mm.
  evaluator.update(_square(4, 2).astype(float), _square(4, 6), spacing=(0.5, 0.3))
  evaluator.update(np.zeros((12, 16)), _square(4, 2), spacing=(0.5, 0.3))
  r = evaluator.result()
  assert r['hd95_mm'] == pytest.approx((4 * 0.3 + np.hypot(12 * 0.5, 16 * 0.3)) / 2)
  assert r['nsd_mm'] == pytest.approx(10 / 16 / 2) and r['nsd_tolerance_mm'] == 1.0


def _block_and_ring():
  """A 2x2 prediction in the corner of a 4x4 true lesion (test_native_eval's frame)."""
  gt = np.zeros((8, 8), bool)
  gt[2:6, 2:6] = True
  pred = np.zeros((8, 8), bool)
  pred[2:4, 2:4] = True
  return pred, gt


def test_hd95_is_monais_directed_form_and_hd95_pooled_medpys():
  """Block -> ring: 0, 0, 0, 1 (95th percentile 0.85); ring -> block (12 pixels): 0 x3,
  1 x2, 2 x4, sqrt(5) x2, sqrt(8) (position 10.45: sqrt(5) + 0.45 (sqrt(8) - sqrt(5))).
  MONAI takes the larger; MedPy pools the 16 (position 14.25)."""
  pred, gt = _block_and_ring()
  d = distances.frame_distances(pred, gt, 1.0, 1.0)
  assert d['hd95'] == pytest.approx(SQRT5 + 0.45 * (SQRT8 - SQRT5))
  assert d['hd95_pooled'] == pytest.approx(SQRT5 + 0.25 * (SQRT8 - SQRT5))
  assert d['hd95_pooled'] == pytest.approx(medpy_binary.hd95(pred, gt))
  assert d['assd'] == pytest.approx(medpy_binary.assd(pred, gt))
  assert d['nsd'] == pytest.approx(9 / 16)  # Within 1 pixel: 6 zeros and 3 ones.
  assert distances.frame_distances(pred, gt, 2.0, 1.0)['nsd'] == pytest.approx(13 / 16)
  assert not d['distance_penalised']


def test_pooled_forms_agree_with_medpy_on_random_masks():
  rng = np.random.default_rng(1)
  for _ in range(6):
    pred, gt = rng.uniform(size=(2, 20, 24)) > [[[0.7]], [[0.6]]]
    spacing = tuple(rng.uniform(0.1, 1.0, 2))
    d = distances.frame_distances(pred, gt, 2.0, 1.0, spacing)
    assert d['hd95_pooled'] == pytest.approx(medpy_binary.hd95(pred, gt))
    assert d['assd'] == pytest.approx(medpy_binary.assd(pred, gt))
    assert d['hd95_pooled_mm'] == pytest.approx(medpy_binary.hd95(pred, gt, spacing))
    assert d['assd_mm'] == pytest.approx(medpy_binary.assd(pred, gt, spacing))
    assert d['hd95'] >= d['hd95_pooled'] - 1e-12


def test_paper_variants_min_max_normalise_each_frame():
  evaluator = segmentation.SegmentationEvaluator()
  # (0.9, 0.5, 0.3, 0.1) -> (1, 0.5, 0.25, 0): MAE 0.1875 against the raw 0.25.
  row = evaluator.update(np.array([[0.9, 0.5], [0.3, 0.1]]), np.array([[1, 1], [0, 0]]))
  assert row['mae'] == pytest.approx(0.25)
  assert row['mae_paper'] == pytest.approx(0.1875, abs=1e-7)
  # A constant map becomes 0, as (p - min) / (max - min + 1e-8) of the released code.
  row = evaluator.update(np.full((2, 2), 0.7), np.array([[1, 0], [0, 0]]))
  assert row['mae'] == pytest.approx(0.6) and row['mae_paper'] == pytest.approx(0.25)
  # A map that is the lesion once stretched: perfect paper scores, imperfect raw ones.
  gt = _square(5, 5, size=6, shape=(16, 16))
  row = evaluator.update(0.2 + 0.4 * gt, gt)
  # (The mean E-measure's last of 256 thresholds lies above the stretched map's maximum,
  # 1 - 2.5e-8: there it sees an empty map.)
  for key, perfect, tolerance in (('mae', 0.0, 1e-6), ('s_measure', 1.0, 1e-6),
                                  ('e_measure', 1.0, 1 / 256), ('weighted_f', 1.0, 1e-6)):
    assert row[f'{key}_paper'] == pytest.approx(perfect, abs=tolerance), key
    assert abs(row[key] - perfect) > 0.05, key
  s = py_sod_metrics.Smeasure()
  s.step(np.zeros((2, 2)), np.array([[True, False], [False, False]]), normalize=False)
  assert evaluator.rows[1]['s_measure_paper'] == pytest.approx(s.get_results()['sm'])
  result = evaluator.result()
  assert result['mean_mae_paper'] == pytest.approx((0.1875 + 0.25 + 0) / 3, abs=1e-6)


def _sparsely_traced(evaluator, prediction):
  """One traced lesion frame among nine untraced (empty) ones, scored with ``prediction``:
  'empty' (nothing anywhere) or 'mediocre' (half the lesion, two false alarms)."""
  lesion = _square(2, 2, size=4, shape=(8, 8))
  half = np.zeros((8, 8))
  half[2:4, 2:6] = 1.0
  alarm = _square(6, 6, size=1, shape=(8, 8)).astype(float)
  empty = np.zeros((8, 8))
  frames = [(half if prediction == 'mediocre' else empty, lesion)]
  frames += [(alarm if prediction == 'mediocre' and i < 2 else empty, empty) for i in range(9)]
  for i, (prob, gt) in enumerate(frames):
    evaluator.update(prob, gt, video_id=f'v{i % 2}')
  return evaluator


def test_the_default_best_metric_ranks_predicting_nothing_below_a_mediocre_model(tmp_path):
  config = common.base_config('segmentation')
  best, mode = config.best_metric, config.best_mode
  empty = _sparsely_traced(segmentation.SegmentationEvaluator(), 'empty').result()
  mediocre = _sparsely_traced(segmentation.SegmentationEvaluator(), 'mediocre').result()
  # The premise: mean Dice prefers the model that finds nothing (9 empty frames count 1).
  assert empty['mean_dice'] == pytest.approx(0.9)
  assert mediocre['mean_dice'] == pytest.approx((2 / 3 + 7) / 10)
  assert mode == 'max' and empty[best] == 0.0 and mediocre[best] == pytest.approx(2 / 3)
  # The checkpoint manager keeps the mediocre step as the best one, not the later empty one.
  manager = checkpoint.create_manager(str(tmp_path), keep=1, best_metric=best, best_mode=mode)
  for step, metrics in ((1, mediocre), (2, empty)):
    checkpoint.save(manager, step, {'w': np.full(2, step, np.float32)}, metrics)
  reader = checkpoint.create_manager(str(tmp_path), keep=1, best_metric=best, best_mode=mode,
                                     read_only=True)
  assert checkpoint.resolve_step(reader, 'best') == 1


def _outputs(frames):
  """One evaluation batch of the task's outputs: every frame of video 'v', valid."""
  key = np.pad(np.frombuffer(b'v', np.uint8), (0, spec.VIDEO_KEY_BYTES - 1))
  return {'probs': np.stack([p for p, _ in frames]).astype(np.float32),
          'masks': np.stack([g for _, g in frames]).astype(np.float32),
          'valid': np.ones(len(frames), bool),
          'frame_index': np.arange(len(frames), dtype=np.int32),
          'video_key': np.stack([key] * len(frames))}


def test_a_report_that_mostly_predicts_nothing_says_so_at_its_top(tmp_path):
  lesion = _square(1, 1, size=3, shape=(8, 8)).astype(float)
  empty = np.zeros((8, 8))
  frames = [(lesion, lesion), (empty, lesion), (empty, lesion), (empty, empty)]
  evaluation = segmentation_evaluation.SegmentationEvaluation(threshold=0.5)
  evaluation.update(_outputs(frames))
  metrics = evaluation.result()
  assert metrics['lesion_empty_prediction_rate'] == pytest.approx(2 / 3)
  evaluation.write_report(str(tmp_path / 'bad'), metrics)
  text = (tmp_path / 'bad' / 'metrics.json').read_text()
  assert text.startswith('{\n  "warnings": [\n    "predictions are empty on 66.7% of the 3 '
                         'lesion frames')
  written = json.loads(text)
  assert written['lesion_dice'] == pytest.approx(1 / 3) and 'lesion_dice_ci95' in written
  assert list(written)[1:] == sorted(list(written)[1:])
  # Half the lesion frames empty is not more than half: no warning.
  evaluation = segmentation_evaluation.SegmentationEvaluation(threshold=0.5)
  evaluation.update(_outputs(frames[:2] + frames[3:]))
  evaluation.write_report(str(tmp_path / 'fine'), evaluation.result())
  assert 'warnings' not in json.loads((tmp_path / 'fine' / 'metrics.json').read_text())


def test_intervals_weight_videos_by_the_metrics_own_frames():
  """Video v0: its lesion frame found (and three lesion-free frames predicted empty); v1:
  its lesion frame missed. Lesion Dice 1/2 and its resamples 0, 1/2 or 1; pooled Dice
  weights each video by 2TP + FP + FN (8 each: again 1/2)."""
  evaluator = segmentation.SegmentationEvaluator()
  lesion = _square(2, 2, size=2, shape=(6, 6))
  evaluator.update(lesion.astype(float), lesion, video_id='v0')
  for _ in range(3):
    evaluator.update(np.zeros((6, 6)), np.zeros((6, 6)), video_id='v0')
  evaluator.update(np.roll(lesion, 3, axis=1).astype(float), lesion, video_id='v1')
  r, intervals = evaluator.result(), evaluator.confidence_intervals()
  assert r['lesion_dice'] == 0.5 and r['pooled_dice'] == 0.5 and r['mean_dice'] == 0.8
  assert intervals['lesion_dice_ci95'] == [0.0, 1.0]
  assert intervals['pooled_dice_ci95'] == [0.0, 1.0]
  assert intervals['mean_dice_ci95'] == [0.0, 1.0]
  assert intervals['hd95_ci95'][0] == 0.0
