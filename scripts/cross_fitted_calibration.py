r"""Temperature scaling of k-fold cross-validation runs (issue 39): the expected calibration
error of each fold's held-out videos before and after a temperature cross-fitted on the
other folds (``usvjax.metrics.classification.cross_fitted_temperatures``: k-fold has no
validation split, so ``evaluate --calibrate`` cannot fit one), and of all folds pooled.

  python scripts/cross_fitted_calibration.py --workdir=runs/cal_pocus \
      --method=cnn_aver --method=clman_vanilla --seeds=0 \
      --output=docs/results/pocus_cv5_calibration.csv

``--workdir`` is an ``experiments.compare --folds=K`` workdir: each method's held-out
predictions are read from ``<method>/fold_<i>/seed<S>/held_out/per_video.csv`` (the
``prob_<class>`` and ``label`` columns), and the run's dataset, image size, steps and
variant from the workdir's ``results.csv``. One CSV row per method, seed and fold, and one
with ``fold`` = 'pooled' (every fold's videos, each scaled by its own fold's temperature).
Temperature scaling keeps the arg-max, so accuracy, and a binary task's AUC, do not move.
"""
from __future__ import annotations

import argparse
import csv
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
from usvjax.metrics import classification

RUN_COLUMNS = ('dataset', 'image_size', 'steps', 'method', 'variant', 'fold', 'seed')
COLUMNS = RUN_COLUMNS + ('num_videos', 'temperature', 'ece', 'ece_calibrated', 'nll',
                         'nll_calibrated', 'accuracy', 'auc')


def held_out(path: str) -> tuple[np.ndarray, np.ndarray]:
  """(probabilities [N, K], labels [N]) of one fold's per_video.csv."""
  with open(path, newline='') as f:
    rows = list(csv.DictReader(f))
  if not rows:
    raise SystemExit(f'{path}: no videos.')
  columns = [c for c in rows[0] if c.startswith('prob_')]
  probs = np.array([[float(row[c]) for c in columns] for row in rows])
  return probs, np.array([int(row['label']) for row in rows])


def scores(probs: np.ndarray, labels: np.ndarray, temperature: float) -> dict:
  """ECE and NLL before and after ``temperature``, with accuracy and AUC."""
  scaled = classification.temperature_scaled(probs, temperature)
  plain = classification.classification_metrics(probs, labels)
  return {'num_videos': len(labels), 'temperature': temperature,
          'ece': classification.expected_calibration_error(probs, labels),
          'ece_calibrated': classification.expected_calibration_error(scaled, labels),
          'nll': classification.negative_log_likelihood(probs, labels),
          'nll_calibrated': classification.negative_log_likelihood(scaled, labels),
          'accuracy': plain['accuracy'], 'auc': plain['auc']}


def method_rows(workdir: str, method: str, seed: int, runs: dict) -> list[dict]:
  """The rows of one method and seed: per fold, then pooled."""
  folds = sorted(int(name.split('_')[1]) for name in os.listdir(os.path.join(workdir, method))
                 if name.startswith('fold_'))
  data = [held_out(os.path.join(workdir, method, f'fold_{fold}', f'seed{seed}', 'held_out',
                                'per_video.csv')) for fold in folds]
  probs, labels = [p for p, _ in data], [l for _, l in data]
  temperatures = classification.cross_fitted_temperatures(probs, labels)
  rows = []
  for fold, p, l, t in zip(folds, probs, labels, temperatures):
    rows.append(dict(runs[(method, str(fold), str(seed))], **scores(p, l, t)))
  pooled = scores(np.concatenate(probs), np.concatenate(labels), 1.0)
  scaled = np.concatenate([classification.temperature_scaled(p, t)
                           for p, t in zip(probs, temperatures)])
  pooled.update(temperature=float('nan'), ece_calibrated=classification.
                expected_calibration_error(scaled, np.concatenate(labels)),
                nll_calibrated=classification.negative_log_likelihood(
                    scaled, np.concatenate(labels)))
  rows.append(dict(rows[0], fold='pooled', **pooled))
  return rows


def compare_runs(workdir: str) -> dict:
  """{(method, fold, seed): the run's RUN_COLUMNS} from the workdir's results.csv."""
  path = os.path.join(workdir, 'results.csv')
  if not os.path.exists(path):
    raise SystemExit(f'{path} is missing: run experiments.compare --folds=K there first.')
  with open(path, newline='') as f:
    return {(row['method'], row['fold'], row['seed']): {k: row[k] for k in RUN_COLUMNS}
            for row in csv.DictReader(f)}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--workdir', required=True)
  parser.add_argument('--method', action='append', required=True)
  parser.add_argument('--seeds', default='0')
  parser.add_argument('--output', required=True)
  args = parser.parse_args()
  runs = compare_runs(args.workdir)
  rows = [row for method in args.method for seed in args.seeds.split(',')
          for row in method_rows(args.workdir, method, int(seed), runs)]
  with open(args.output, 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
  for row in rows:
    if row['fold'] == 'pooled':
      print(f"{row['method']} seed {row['seed']}: ECE {row['ece']:.3f} -> "
            f"{row['ece_calibrated']:.3f} (pooled {row['num_videos']} videos)")
  print(f'{len(rows)} rows written to {args.output}')


if __name__ == '__main__':
  main()
