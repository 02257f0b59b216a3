"""What the trainer, the evaluator and the comparison expect of the parts they are given.

The trainer, ``evaluate`` and ``compare`` never name a method or a task: they speak to a
``Task`` (from ``usvjax.tasks``), its ``Evaluation``, a model (from ``usvjax.models``)
with optional ``LossTerm``s, a ``StreamingModel`` where a model carries a state from frame
to frame, and a ``Runner`` (``usvjax.runners``) that trains and evaluates a run.
"""
from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import jax.numpy as jnp
import ml_collections

Metrics = dict[str, float]


class LossTerm(Protocol):
  """A method's own loss term: ``(outputs, batch) -> (weighted value, {name: scalar})``,
  traced inside the train step; the task adds the value to its loss and logs the parts."""

  def __call__(self, outputs: dict, batch: dict) -> tuple[jnp.ndarray, dict]:
    ...


class Evaluation(Protocol):
  """A host-side accumulator of one split's evaluation outputs.

  Optional methods that ``usvjax.evaluate`` calls where an evaluation has them:
  ``use_split(config, builder, split)`` before the first batch (the segmentation evaluation
  reads the stored masks of the split to score at native resolution); ``pictures() ->
  {name: uint8 image}`` for TensorBoard at each validation; ``export(directory) -> paths``
  for ``evaluate --export``.
  """

  def update(self, outputs: dict[str, Any]) -> None:
    """Adds one batch of the task's ``eval_outputs`` (host arrays, all processes')."""

  def result(self) -> Metrics:
    """Exact metrics over everything added."""

  def video_rows(self) -> list[dict]:
    """One row per video (or, without videos, per split)."""

  def write_report(self, directory: str, metrics: Metrics,
                   class_names: list[str] | None) -> None:
    """Writes metrics.json, per_video.csv and the task's pictures into ``directory``."""


class Task(Protocol):
  """How model outputs and a batch become a loss (on device) and an evaluation (on host)."""

  def loss(self, outputs: dict, batch: dict) -> tuple[jnp.ndarray, dict]:
    """(scalar loss, {name: scalar}) over the valid examples; traced inside the step."""

  def eval_outputs(self, outputs: dict, batch: dict) -> dict:
    """What evaluation brings to the host, per example (computed on device)."""

  def evaluator(self) -> Evaluation:
    """A fresh accumulator for one split."""

  # Optional: ``calibrates`` (bool) and ``calibrate(validation_evaluation) -> dict``: a task
  # that chooses a setting on the validation split before the test split is scored (the
  # classification task's decision threshold; ``evaluate.calibrate``).


@runtime_checkable
class StreamingModel(Protocol):
  """A segmentation model that carries a fixed-shape state from frame to frame.

  ``start(frame [B, H, W, C], mask [B, H, W, 1]) -> (state, logits [B, H, W, 1] or None)``
  takes a video's first frame (None: the model propagates the given mask, which is the
  first frame's result); ``step(state, frame) -> (state, logits)`` the next one. Applied
  with ``model.apply(variables, ..., method='start'|'step')``.
  """

  def start(self, frame: jnp.ndarray, mask: jnp.ndarray) -> tuple[Any, jnp.ndarray | None]:
    ...

  def step(self, state: Any, frame: jnp.ndarray) -> tuple[Any, jnp.ndarray]:
    ...


class Runner(Protocol):
  """Trains and evaluates a run: one model (``single``), a frame CNN then sequence models
  (``two_stage``), or contrastive pretraining then the classifier (``pretrain_finetune``)."""

  def train(self, config: ml_collections.ConfigDict, workdir: str,
            which: str = 'best') -> dict[str, Metrics]:
    """Trains (resuming) every stage; {stage: validation metrics at its last step}."""

  def evaluate(self, config: ml_collections.ConfigDict, workdir: str, split: str = '',
               which: str = 'best', output_dir: str = '') -> dict[str, Any]:
    """{row: evaluate.Report} of every row the run scores on ``split``."""

  def headline(self, config: ml_collections.ConfigDict, workdir: str = ''
               ) -> tuple[str, ml_collections.ConfigDict, str]:
    """(row, its config, its run directory relative to the workdir): what a comparison
    reports and plots for this run. ``workdir`` (the run's directory) is where the row's
    config finds the run's own files (a two-stage run's feature cache); '' when only the
    row's name, task or directory is needed."""
