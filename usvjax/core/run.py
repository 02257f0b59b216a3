"""A run resolved once: config -> prepared dataset, example source, task, model, mesh.

Every command resolves its config here, once, and hands the ``Run`` to whatever it does:
training (``train.train_and_evaluate``), evaluation (``evaluate.evaluate_checkpoint``), the
single-video tools (``segment_video``, ``classify_video``), the feature cache and every
study. Nothing downstream builds a dataset, a model, a task or a mesh again, so

* the dataset is prepared (converted, fingerprinted, stale conversions replaced) once per
  command: ``prepared_once()`` scopes a command, and every ``resolve`` inside it that names
  the same dataset (a two-stage run's stages, a pretraining and its fine-tuning, the folds
  of a cross-validation) reuses the builder prepared first;
* evaluation runs exactly the program that training validates with: the model is wrapped
  once by ``execution.wrap`` (``compute_dtype``, ``remat``, ``pointwise_matmul``), and one
  eval step is compiled per run;
* the run checks (``run_checks.check_run``) pass before anything is written or trained.

The example source (``config.input.task``'s, from the task registry) is part of the run:
the input pipeline takes it as an argument and never looks at the task registry itself.
"""
from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import jax
import ml_collections

from input_pipeline import pipeline
from input_pipeline import spec
from usvjax import interfaces
from usvjax import models
from usvjax import tasks
from usvjax.core import checkpoint
from usvjax.core import eval_step as eval_step_lib
from usvjax.core import execution
from usvjax.core import parallel
from usvjax.core import run_checks
from usvjax.core import state as state_lib

# Builders prepared in the current command (``prepared_once``), by dataset identity; None
# outside a command scope (every ``resolve`` then prepares its own).
_prepared: dict[str, Any] | None = None


@contextlib.contextmanager
def prepared_once() -> Iterator[None]:
  """Scopes one command: inside, each dataset is prepared once and reused by every
  ``resolve``. Nested scopes share the outermost one's builders."""
  global _prepared
  if _prepared is not None:
    yield
    return
  _prepared = {}
  try:
    yield
  finally:
    _prepared = None


def _dataset_key(dataset: ml_collections.ConfigDict) -> str:
  """What makes two dataset configs one prepared builder (folds select videos of it)."""
  return json.dumps({k: v for k, v in dataset.to_dict().items() if k != 'folds'},
                    sort_keys=True, default=str)


def prepare_dataset(dataset: ml_collections.ConfigDict):
  """The prepared TFDS builder of ``config.dataset`` (``pipeline.get_builder``), once per
  ``prepared_once`` scope."""
  if _prepared is None:
    return pipeline.get_builder(dataset)
  key = _dataset_key(dataset)
  if key not in _prepared:
    _prepared[key] = pipeline.get_builder(dataset)
  return _prepared[key]


class Restored(NamedTuple):
  variables: dict  # {'params': ..., 'batch_stats': ...}, replicated over the run's mesh.
  step: int


class Run:
  """One config, resolved: read its parts, never rebuild them.

  Attributes:
    config: the resolved config.
    builder: the prepared TFDS builder (None for a run resolved without data).
    source: the task's example source (clips, sequences, view pairs).
    definition: the task's registry entry (``tasks.TaskDefinition``).
    task: the task, with the model's loss terms (or the one given: the feature cache's).
    model: the model as ``execution.wrap`` runs it (train and evaluation alike).
    capabilities: what the model takes, as its registry entry declares it.
    mesh: the device mesh.
  """

  def __init__(self, config: ml_collections.ConfigDict, builder, mesh: jax.sharding.Mesh,
               task: interfaces.Task | None = None):
    self.config, self.builder, self.mesh = config, builder, mesh
    self.definition = tasks.definition(config.input.task)
    self.source = tasks.example_source(config)
    self.task = task or tasks.create_task(config)
    self.model = execution.wrap(models.create_model(config.model), config)
    self.capabilities = models.capabilities(config.model)
    self._eval_step = None
    self._counts: dict[str, int] = {}
    self._eval_datasets: dict[tuple[str, int], tuple[Any, pipeline.EvalDataset]] = {}

  def with_data(self) -> Run:
    """This run with its dataset prepared and checked (for a run resolved without data)."""
    if self.builder is None:
      self.builder = prepare_dataset(self.config.dataset)
      run_checks.check_run(self.config, self.builder)
    return self

  @property
  def features(self):
    """The dataset's features (None without data: a dataset of frames with every label)."""
    return self.builder.info.features if self.builder is not None else None

  def fields(self, train: bool) -> spec.Spec:
    """Every field of the run's training (``train``) or evaluation batches."""
    return self.source.fields(self.config, train, self.features)

  def class_names(self) -> list[str] | None:
    """The dataset's class names (None for data without labels)."""
    features = self.features
    return list(features['label'].names) if features and 'label' in features else None

  def train_batches(self, start_step: int = 0) -> Iterator[dict]:
    return pipeline.train_batches(self.config, self.builder, self.source, start_step)

  def eval_batches(self, split: str, builder=None) -> tuple[Iterator[dict], int]:
    """Exact evaluation batches of ``split`` of the run's data (or of ``builder``, a view of
    it with the same videos) and their number. The split's items are counted once per run,
    and its pipeline is built once per run and builder (every validation reads it again)."""
    builder = builder or self.builder
    if split not in self._counts:
      self._counts[split] = pipeline.count_items(self.config, builder, self.source, split)
    key = (split, id(builder))
    if key not in self._eval_datasets:  # The builder is kept: its id stays its own.
      self._eval_datasets[key] = builder, pipeline.eval_dataset(
          self.config, builder, self.source, split, self._counts[split])
    return pipeline.eval_batches(self.config, builder, self.source, split,
                                 self._eval_datasets[key][1])

  def eval_step(self):
    """The run's one evaluation step (``eval_step.make_eval_step``), compiled once."""
    if self._eval_step is None:
      self._eval_step = eval_step_lib.make_eval_step(self.model, self.task,
                                                     self.config.input.eval_protocol)
    return self._eval_step

  def restore(self, workdir: str, which: str, weights: str = 'ema') -> Restored:
    """The ``params`` and ``batch_stats`` of checkpoint ``which`` ('best', 'latest' or a
    step) of ``workdir``, replicated over the mesh, and its step; of a run that keeps EMA
    weights, those unless ``weights`` is 'raw' (``checkpoint.restore_variables``).

    The structure comes from ``jax.eval_shape`` of the model's initialisation on the batch
    specification: no data is read, and the optimizer state is neither built nor restored.
    """
    c = self.config
    with checkpoint.create_manager(workdir, c.keep_checkpoints, c.best_metric, c.best_mode,
                                   read_only=True) as manager:
      batch = state_lib.init_batch(c, self.fields(True))
      abstract = state_lib.abstract_variables(self.model, batch, self.mesh)
      # A damaged 'best' or 'latest' falls back to the newest intact checkpoint.
      return Restored(*checkpoint.restore_chosen(
          manager, which, lambda step: checkpoint.restore_variables(manager, step, abstract,
                                                                  weights)))


def resolve(config: ml_collections.ConfigDict, split: str = '', data: bool = True,
            devices: Sequence[jax.Device] | None = None,
            task: interfaces.Task | None = None) -> Run:
  """Resolves ``config`` once: prepares its dataset (unless ``data`` is False: a run that
  reads no split, such as ``segment_video``), checks the run (``run_checks``; ``split``,
  when given, is the split a command will score), and builds its task, wrapped model and
  mesh (over ``devices``, default all); ``task`` replaces the config's task (a run that
  evaluates for another purpose, such as the feature cache)."""
  mesh = parallel.create_mesh(devices)
  builder = prepare_dataset(config.dataset) if data else None
  if builder is not None:
    run_checks.check_run(config, builder, split)
  return Run(config, builder, mesh, task)
