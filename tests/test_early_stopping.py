"""Early stopping (config.early_stopping_patience): the count of evaluations without an
improvement of best_metric, its log line, and a resumed run stopping at the step an
uninterrupted one stops at."""
import json
import math

import pytest

import helpers
from usvjax.core import early_stopping
from usvjax.core import run as run_lib
from usvjax.core import train


@pytest.mark.parametrize('mode, values, stops_at', [
    ('max', [0.5, 0.7, 0.7, 0.6], 4),  # A tie is no improvement.
    ('min', [0.5, 0.4, 0.6, 0.3, 0.35, 0.3], 6),
    ('max', [math.nan, 0.1, math.nan, math.nan], 4),  # NaN never improves.
])
def test_stops_after_patience_evaluations_without_improvement(mode, values, stops_at):
  tracker = early_stopping.EarlyStopping(2, 'auc', mode)
  stopped = [step for step, v in enumerate(values, 1) if tracker.update(step, v)]
  assert stopped[0] == stops_at
  assert not early_stopping.EarlyStopping(0, 'auc', mode).update(1, math.nan)  # 0 is off.


def _steps(workdir):
  with open(f'{workdir}/metrics.jsonl', encoding='utf-8') as f:
    return [json.loads(line)['step'] for line in f if 'val/auc' in line]


def test_a_resumed_run_stops_at_the_step_of_an_uninterrupted_one(data_dir, tmp_path, capsys):
  # lr 0: the validation AUC never changes, so the first evaluation stays the best.
  config = helpers.load_config('cnn_aver', data_dir, total_steps=10, eval_every=1,
                               checkpoint_every=1, early_stopping_patience=2,
                               **{'optimizer.lr': 0.0})
  run = run_lib.resolve(config)
  train.train_and_evaluate(run, str(tmp_path / 'whole'))
  assert _steps(tmp_path / 'whole') == [1, 2, 3]
  assert 'early stopping at step 3: val/auc has not improved for 2 evaluations' in (
      capsys.readouterr().out)
  with config.unlocked():
    config.total_steps = 2  # Interrupted after step 2, then resumed for 10 steps.
  train.train_and_evaluate(run_lib.resolve(config), str(tmp_path / 'resumed'))
  with config.unlocked():
    config.total_steps = 10
  for _ in range(2):  # The second rerun finds the run stopped: it trains nothing.
    train.train_and_evaluate(run_lib.resolve(config), str(tmp_path / 'resumed'))
    assert _steps(tmp_path / 'resumed') == [1, 2, 3]
  assert 'best ' in capsys.readouterr().out
