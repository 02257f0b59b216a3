"""Contrastive pretraining, host side: the means of the task's per-pair evaluation outputs
(``usvjax.tasks.contrastive.ContrastiveTask.eval_outputs``) and their report. It needs only
NumPy, so the task imports it at the top."""
from __future__ import annotations

import numpy as np

from usvjax.reporting import reports


class ContrastiveEvaluation:
  """Means of NT-Xent and retrieval accuracy over the valid pairs of a split (an
  ``interfaces.Evaluation``; its report is metrics.json and a one-row per_video.csv: a
  pretraining run is judged by the classifier it initialises, see ``usvjax.runners``).

  Negatives come from each evaluation batch, so these numbers depend on the eval batch
  size: compare runs at the same ``config.input.eval_batch_size``.
  """

  def __init__(self):
    self.losses: list[float] = []
    self.correct: list[float] = []

  def update(self, outputs: dict) -> None:
    keep = np.asarray(outputs['valid'], bool)
    self.losses.extend(np.asarray(outputs['nt_xent'])[keep].tolist())
    self.correct.extend(np.asarray(outputs['correct'])[keep].tolist())

  def result(self) -> dict[str, float]:
    return {'nt_xent': float(np.mean(self.losses)),
            'contrastive_accuracy': float(np.mean(self.correct)),
            'num_pairs': len(self.losses)}

  def video_rows(self) -> list[dict]:
    return [self.result()]

  def paired_values(self) -> dict[str, dict]:
    """Nothing for a comparison's paired tests (they pair videos)."""
    return {}

  def write_report(self, directory: str, metrics_: dict,
                   class_names: list[str] | None = None) -> None:
    del class_names
    reports.write_tables(directory, metrics_, self.video_rows())
