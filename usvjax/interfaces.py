"""What the trainer, the evaluator and the comparison expect of the parts they are given.

The trainer, ``evaluate`` and ``compare`` never name a method or a task: they speak to a
``Task`` (from ``usvjax.tasks``), its ``Evaluation``, a model (from ``usvjax.models``)
with optional ``LossTerm``s and the ``Capabilities`` its registry entry declares, a
``StreamingModel`` where a model carries a state from frame to frame, and a ``Runner``
(``usvjax.runners``) that trains and evaluates a run.
"""
from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple, Protocol, runtime_checkable

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

  Optional methods that ``usvjax.core.evaluate`` calls where an evaluation has them:
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

  def paired_values(self) -> dict[str, dict]:
    """{name: {video: value}} that a comparison's paired tests resample (``compare_report``:
    'video_dice' or 'video_probs'); {} where there are none."""

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


@dataclasses.dataclass(frozen=True)
class Capabilities:
  """What a model takes, declared with its registry entry (``usvjax.models.register``).

  The run checks (``usvjax.core.run_checks``) refuse a config that asks a model for something
  it cannot do, naming the config key; streaming (``usvjax.core.streaming``) reads how the
  model is streamed. The defaults suit a model that takes anything: a model declares only
  what sets it apart.
  """
  # ``config.input.image_size`` must be a multiple of it: the encoder's total downsampling
  # where the decoder needs it exact (a U-Net's 2**(levels-1)), a ViT's patch size.
  output_stride: int = 1
  # The fewest frames of a clip (``config.input.clip_length``) the model reads: the target
  # and its predecessors (FLA-Net's t, t-1, t-2).
  min_frames: int = 1
  # The most frames one example may have (a clip's ``config.input.clip_length``, a
  # sequence's longest ``config.input.length_buckets``); None: any number.
  max_frames: int | None = None
  # Reads only the target frame of a clip, so a video shorter than a clip is no problem.
  single_frame: bool = False
  # Propagates the first frame's given mask (``start`` returns no logits): evaluated with
  # ``config.input.eval_protocol='first_frame'``, and a single video needs that mask.
  needs_first_mask: bool = False
  # Has ``start`` and ``step`` (``StreamingModel``): carries its own state between frames.
  streaming: bool = False

  def __post_init__(self):
    if self.output_stride < 1 or self.min_frames < 1:
      raise ValueError(f'{self}: output_stride and min_frames are at least 1.')
    if self.max_frames is not None and self.max_frames < self.min_frames:
      raise ValueError(f'{self}: max_frames is below min_frames.')
    if self.needs_first_mask and not self.streaming:
      raise ValueError(f'{self}: a model given the first mask is streamed from it '
                       '(needs_first_mask needs streaming).')


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


class Headline(NamedTuple):
  """The row a comparison shows for a run."""
  row: str  # The row's name (a model name, or a two-stage run's headline row).
  config: ml_collections.ConfigDict  # The config of the run that row scores.
  log_dir: str  # Its run directory, relative to the run's workdir ('' for the workdir).


class Runner(Protocol):
  """Trains and evaluates a run: one model (``single``), a frame CNN then sequence models
  (``two_stage``), or contrastive pretraining then the classifier (``pretrain_finetune``)."""

  def train(self, config: ml_collections.ConfigDict, workdir: str,
            which: str = 'best') -> dict[str, Metrics]:
    """Trains (resuming) every stage; {stage: validation metrics at its last step}."""

  def evaluate(self, config: ml_collections.ConfigDict, workdir: str, split: str = '',
               which: str = 'best', output_dir: str = '') -> dict[str, Any]:
    """{row: evaluate.Report} of every row the run scores on ``split``."""

  def headline(self, config: ml_collections.ConfigDict, workdir: str = '') -> Headline:
    """What a comparison reports and plots for this run. ``workdir`` (the run's directory)
    is where the row's config finds the run's own files (a two-stage run's feature cache);
    '' when only the row's name, task or directory is needed."""
