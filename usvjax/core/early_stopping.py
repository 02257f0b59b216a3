"""Early stopping: end training when ``config.best_metric`` has not improved on the
validation split for ``config.early_stopping_patience`` evaluations in a row (0: off).

An evaluation improves when its value is strictly better than the best so far (greater
with ``best_mode='max'``, smaller with 'min'; NaN never improves, the first finite value
always does). The count is derived from the run's validation history: ``metrics.jsonl``
(``train_logs.Writer``) holds ``val/<best_metric>`` of every evaluation up to the
checkpoint a run resumes from, so a resumed run counts on from where the interrupted one
was and stops at the same step as an uninterrupted run.
"""
from __future__ import annotations

import json
import math
import os


class EarlyStopping:
  """The best value so far, its step, and the evaluations since it."""

  def __init__(self, patience: int, metric: str, mode: str):
    self.patience, self.metric, self.mode = patience, metric, mode
    self.best: float | None = None
    self.best_step = 0
    self.since = 0  # Evaluations since the best one.

  def update(self, step: int, value: float) -> bool:
    """Records the evaluation of ``step``; True when training should stop."""
    value = float(value)
    better = not math.isnan(value) and (
        self.best is None or (value > self.best if self.mode == 'max' else value < self.best))
    if better:
      self.best, self.best_step, self.since = value, step, 0
    else:
      self.since += 1
    return self.stopped()

  def stopped(self) -> bool:
    return self.patience > 0 and self.since >= self.patience

  def message(self, step: int) -> str:
    """The log line of a stop at ``step``."""
    best = 'none' if self.best is None else f'{self.best:.4f} at step {self.best_step}'
    return (f'early stopping at step {step}: val/{self.metric} has not improved for '
            f'{self.since} evaluation{"s" * (self.since != 1)} '
            f'(config.early_stopping_patience={self.patience}); '
            f'best {best}')


def from_history(workdir: str, start_step: int, patience: int, metric: str,
                 mode: str) -> EarlyStopping:
  """The early stopping state of a run resumed at ``start_step``: every ``val/<metric>`` of
  ``workdir/metrics.jsonl`` logged at or before that step, in step order."""
  tracker = EarlyStopping(patience, metric, mode)
  path, key = os.path.join(workdir, 'metrics.jsonl'), f'val/{metric}'
  if not (patience and start_step and os.path.exists(path)):
    return tracker
  values = {}
  with open(path, encoding='utf-8') as f:
    for line in f:
      try:
        entry = json.loads(line)
      except json.JSONDecodeError:  # A line cut short by a kill.
        continue
      if key in entry and entry['step'] <= start_step:
        values[entry['step']] = entry[key]
  for step in sorted(values):
    tracker.update(step, values[step])
  return tracker
