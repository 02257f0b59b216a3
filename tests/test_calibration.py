"""Calibration: the ECE and its bins, the fitted temperature, and evaluate --calibrate on a
CNN_Aver run (validation-fitted temperature applied to the test split, calibration.json,
the reliability diagram, the threshold's validation operating point) carried to export."""
import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import helpers
from usvjax import runners
from usvjax.core import evaluate
from usvjax.core import run as run_lib
from usvjax.errors import ConfigError
from usvjax.export import functions
from usvjax.metrics import classification


def test_ece_is_the_count_weighted_gap_of_15_equal_bins():
  probs = np.array([[0.05, 0.95], [0.1, 0.9], [0.62, 0.38], [0.3, 0.7]])
  labels = np.array([1, 0, 0, 1])
  # Bins of the confidences 0.95, 0.9, 0.62, 0.7: [14/15, 1], [13/15, 14/15), [9/15, 10/15),
  # [10/15, 11/15); accuracies 1, 0, 1, 1.
  expected = (abs(1 - 0.95) + abs(0 - 0.9) + abs(1 - 0.62) + abs(1 - 0.7)) / 4
  assert classification.expected_calibration_error(probs, labels) == pytest.approx(expected)
  count, _, _ = classification.reliability_bins(probs, labels)
  assert count.tolist()[9:] == [1, 1, 0, 0, 1, 1] and count.sum() == 4
  # Two videos in one bin (|1/2 - 0.845|), one in another (|1 - 0.6|): weighted 2:1.
  uneven = np.array([[0.15, 0.85], [0.16, 0.84], [0.6, 0.4]])
  assert classification.expected_calibration_error(uneven, np.array([1, 0, 0])) == (
      pytest.approx((2 * 0.345 + 0.4) / 3))


def test_the_fitted_temperature_undoes_a_known_overconfidence():
  rng = np.random.default_rng(0)
  logits = rng.normal(0, 3, (4000, 3))
  true = np.exp(logits / 2.5)
  true /= true.sum(1, keepdims=True)
  labels = np.array([rng.choice(3, p=p) for p in true])
  probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)  # Over-confident by T = 2.5.
  temperature = classification.fit_temperature(probs, labels)
  assert temperature == pytest.approx(2.5, rel=0.08)
  scaled = classification.temperature_scaled(probs, temperature)
  np.testing.assert_allclose(scaled, true, atol=0.03)
  assert (scaled.argmax(1) == probs.argmax(1)).all()
  assert (classification.expected_calibration_error(scaled, labels)
          < classification.expected_calibration_error(probs, labels) / 3)


@pytest.fixture(scope='module')
def trained(data_dir, tmp_path_factory):
  """(config, workdir) of a CNN_Aver run with a Youden threshold: a step-0 checkpoint of
  initial weights, the probabilities of any model do."""
  root = tmp_path_factory.mktemp('cnn_aver')
  config = helpers.from_initial_weights(
      helpers.load_config('cnn_aver', data_dir, **{'task.threshold_rule': 'youden'}),
      str(root / 'init'))
  workdir = str(root / 'run')
  runners.train(config, workdir)
  return config, workdir


def _probs(directory):
  with open(directory / 'per_video.csv', newline='') as f:
    return {r['video_id']: [float(r['prob_benign']), float(r['prob_malignant'])]
            for r in csv.DictReader(f)}


def test_calibrate_fits_on_validation_applies_to_test_and_reaches_export(trained, tmp_path):
  config, workdir = trained
  plain = evaluate.evaluate_checkpoint(run_lib.resolve(config), workdir, 'latest', 'test',
                                       str(tmp_path / 'plain'))
  assert 'temperature' not in plain.metrics and 0 <= plain.metrics['ece'] <= 1
  calibrated_config = config.copy_and_resolve_references()
  calibrated_config.evaluation.calibrate = True
  report = evaluate.evaluate_checkpoint(run_lib.resolve(calibrated_config), workdir, 'latest',
                                        'test', str(tmp_path / 'calibrated'))
  m, temperature = report.metrics, report.metrics['temperature']
  assert temperature != pytest.approx(1.0)
  path = os.path.join(workdir, evaluate.CALIBRATION_FILE)
  with open(path, encoding='utf-8') as f:
    stored = json.load(f)
  assert stored['temperature'] == temperature and stored['step'] == m['step']
  assert m['validation_nll_after'] <= m['validation_nll_before']
  assert m['threshold_split'] == 'validation' and 'validation_sensitivity' in m
  assert m['ece_uncalibrated'] == pytest.approx(plain.metrics['ece'])
  raw, scaled = _probs(tmp_path / 'plain'), _probs(tmp_path / 'calibrated')
  for video, probs in raw.items():
    np.testing.assert_allclose(scaled[video], classification.temperature_scaled(
        np.array([probs]), temperature)[0], atol=1e-5)
  assert (tmp_path / 'calibrated' / 'reliability.png').stat().st_size > 0
  # Export (and predict, which runs the exported function) applies the temperature.
  prepared = functions.prepare(functions.resolve(config), workdir, 'latest')
  assert prepared.metadata['temperature'] == temperature
  assert prepared.metadata['threshold'] == pytest.approx(m['threshold'])
  os.rename(path, path + '.aside')
  unscaled = functions.prepare(functions.resolve(config), workdir, 'latest')
  os.rename(path + '.aside', path)
  assert unscaled.metadata['temperature'] == 1.0
  frames = np.random.default_rng(0).uniform(size=(2, 4, 32, 32, 1)).astype(np.float32)
  valid = np.ones((2, 4), bool)
  np.testing.assert_allclose(
      prepared.functions['predict'](frames, valid)[0], classification.temperature_scaled(
          np.asarray(unscaled.functions['predict'](frames, valid)[0]), temperature), atol=1e-5)
  with pytest.raises(ConfigError, match='calibration.json holds the temperature of'):
    evaluate.stored_temperature(workdir, m['step'] + 1)
  # A row stored under another name (the two-stage frame-CNN rows) leaves the readers' file.
  before = open(path, encoding='utf-8').read()
  evaluate.evaluate_checkpoint(run_lib.resolve(calibrated_config), workdir, 'latest', 'test',
                               str(tmp_path / 'other'), 'calibration_other.json')
  assert open(path, encoding='utf-8').read() == before
  other = json.loads(open(os.path.join(workdir, 'calibration_other.json')).read())
  assert other['temperature'] == pytest.approx(temperature) and other['step'] == m['step']


def _overconfident_folds(seed: int, sizes=(300, 300, 300)):
  """[N_i, 2] probabilities over-confident by T = 3 and their labels, per fold."""
  rng = np.random.default_rng(seed)
  folds = []
  for n in sizes:
    logit = rng.normal(0, 4, n)
    labels = (rng.random(n) < 1 / (1 + np.exp(-logit / 3))).astype(int)
    p1 = 1 / (1 + np.exp(-logit))
    folds.append((np.stack([1 - p1, p1], 1), labels))
  return folds


def test_a_folds_temperature_is_fitted_on_the_other_folds_only():
  folds = _overconfident_folds(0)
  probs, labels = [p for p, _ in folds], [l for _, l in folds]
  temperatures = classification.cross_fitted_temperatures(probs, labels)
  assert temperatures[1] == pytest.approx(classification.fit_temperature(
      np.concatenate([probs[0], probs[2]]), np.concatenate([labels[0], labels[2]])))
  assert all(2.3 < t < 3.9 for t in temperatures)
  flipped = [1 - labels[0]] + labels[1:]  # Fold 0's labels must not set fold 0's T.
  again = classification.cross_fitted_temperatures(probs, flipped)
  assert again[0] == temperatures[0] and again[1] != temperatures[1]


def test_cross_fitted_calibration_script_writes_a_row_per_fold_and_the_pooled_row(tmp_path):
  folds = _overconfident_folds(1, (200, 150, 250))
  with open(tmp_path / 'results.csv', 'w', newline='') as f:
    writer = csv.DictWriter(f, ['dataset', 'image_size', 'steps', 'method', 'variant', 'fold',
                                'seed', 'auc'])
    writer.writeheader()
    for fold in range(3):
      writer.writerow(dict(dataset='d', image_size=64, steps=9, method='m', variant='v',
                           fold=fold, seed=0, auc=0))
  for fold, (probs, labels) in enumerate(folds):
    directory = tmp_path / 'm' / f'fold_{fold}' / 'seed0' / 'held_out'
    directory.mkdir(parents=True)
    with open(directory / 'per_video.csv', 'w', newline='') as f:
      writer = csv.DictWriter(f, ['video_id', 'label', 'prob_benign', 'prob_malignant'])
      writer.writeheader()
      writer.writerows({'video_id': i, 'label': l, 'prob_benign': p[0], 'prob_malignant': p[1]}
                       for i, (p, l) in enumerate(zip(probs, labels)))
  output = tmp_path / 'calibration.csv'
  subprocess.run([sys.executable, 'scripts/cross_fitted_calibration.py',
                  f'--workdir={tmp_path}', '--method=m', f'--output={output}'],
                 cwd=helpers.REPO, check=True, capture_output=True)
  with open(output, newline='') as f:
    rows = list(csv.DictReader(f))
  assert [row['fold'] for row in rows] == ['0', '1', '2', 'pooled']
  temperatures = classification.cross_fitted_temperatures([p for p, _ in folds],
                                                          [l for _, l in folds])
  for row, t, (probs, labels) in zip(rows, temperatures, folds):
    assert (row['dataset'], row['variant'], int(row['num_videos'])) == ('d', 'v', len(labels))
    assert float(row['temperature']) == pytest.approx(t)
    scaled = classification.temperature_scaled(probs, t)
    assert float(row['ece_calibrated']) == pytest.approx(
        classification.expected_calibration_error(scaled, labels))
    assert float(row['ece_calibrated']) < float(row['ece'])
  scaled = np.concatenate([classification.temperature_scaled(p, t)
                           for (p, _), t in zip(folds, temperatures)])
  pooled_labels = np.concatenate([l for _, l in folds])
  assert float(rows[-1]['ece_calibrated']) == pytest.approx(
      classification.expected_calibration_error(scaled, pooled_labels))
  assert int(rows[-1]['num_videos']) == 600
