"""compare's checkpoint-selection noise: beside the best-by-validation test score, each run
scores its last evaluated checkpoints, and the paired tests are made again on each video's
value averaged over them."""
import csv
import json
import os

import numpy as np
import pytest

from usvjax import tasks
from usvjax.metrics import statistics
from usvjax.studies import compare
from usvjax.studies import compare_report


METRIC = tasks.definition('segmentation').curve_metric  # What the spread is reported of.


def _test_score(run_dir, step: int) -> float:
  with open(os.path.join(run_dir, f'eval_test_step{step}', 'metrics.json')) as f:
    return json.load(f)[METRIC]


def test_runs_score_their_last_three_evaluated_checkpoints(data_dir, tmp_path):
  shared = compare.parse_overrides([f'dataset.data_dir={data_dir}', 'total_steps=9',
                                    'eval_every=3', 'checkpoint_every=3'])
  methods = [compare.parse_method('unet=configs/unet.py:tiny'),
             compare.parse_method('narrow=configs/unet.py:tiny;model.width=4')]
  assert compare.method_config(methods[0], shared, 0, str(tmp_path)).keep_checkpoints == 3
  results = compare.run(methods, shared, [0], str(tmp_path))
  run, run_dir = results['unet'][0], tmp_path / 'unet' / 'seed0'
  assert run['last_step'] == 9 and run['last3_checkpoints'] == 3
  scores = [_test_score(run_dir, step) for step in (3, 6, 9)]  # Each checkpoint's report.
  assert run[f'last_{METRIC}'] == scores[-1]
  assert run[f'last3_{METRIC}_mean'] == pytest.approx(np.mean(scores))
  assert (run[f'last3_{METRIC}_min'], run[f'last3_{METRIC}_max']) == (min(scores), max(scores))
  assert run[METRIC] == _test_score(run_dir, run['step'])  # The best, as before.
  assert set(run['last3_video_dice']) == set(run['video_dice'])
  table = (tmp_path / 'results.md').read_text()
  assert 'Checkpoint selection' in table and f'| unet ({METRIC}) |' in table
  assert "averaged over its run's last 3 evaluated checkpoints" in table
  with open(tmp_path / 'results.csv', newline='') as f:
    narrow = list(csv.DictReader(f))[1]
  assert narrow['paired_last3_dice_p'] and narrow['paired_dice_p'] and narrow[f'last_{METRIC}']


def _run(best: dict[str, float], last: dict[str, float]) -> dict:
  """A fake segmentation run: per-video [Dice, frames] at its best and over its last
  checkpoints."""
  return {'seed': 0, 'task': 'segmentation',
          'video_dice': {v: [d, 10] for v, d in best.items()},
          'last3_video_dice': {v: [d, 10] for v, d in last.items()}}


def test_last_checkpoint_tests_pair_the_averaged_values():
  """The best checkpoints favour b by 0.2 on every video; averaged over the last
  checkpoints a is ahead by 0.1: the second test must say so, not repeat the first."""
  videos = ['v0', 'v1', 'v2']
  results = {'a': [_run(dict.fromkeys(videos, 0.5), dict.fromkeys(videos, 0.6))],
             'b': [_run(dict.fromkeys(videos, 0.7), {'v0': 0.4, 'v1': 0.5, 'v2': 0.6})]}
  best = compare_report.paired_tests(results)['b']
  last = compare_report.paired_tests(results, 'a', compare_report.LAST_PREFIX)['b']
  assert best['difference'] == pytest.approx(0.2)
  expected = statistics.paired_bootstrap(np.array([0.4, 0.5, 0.6]) - 0.6, np.array([10, 10, 10]))
  assert last == dict(expected, reference='a', metric='dice')
  assert results['b'][0]['paired_last3_dice_difference'] == pytest.approx(-0.1)
  assert results['b'][0]['paired_dice_difference'] == pytest.approx(0.2)
  # A reference run made before the last checkpoints were scored: no second test.
  del results['a'][0]['last3_video_dice']
  assert compare_report.paired_tests(results, 'a', compare_report.LAST_PREFIX) == {}
