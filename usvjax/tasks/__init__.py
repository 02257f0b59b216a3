"""The task registry: how examples are made, what the loss is, how a split is scored.

A task is an entry of ``TASKS``, picked by ``config.input.task``; it is the only place
where a task's name is looked at. An entry gives:

* ``task``: the class of the ``interfaces.Task`` (``loss``, ``eval_outputs``, ``evaluator``),
  made by ``create_task(config)`` with the model's own loss terms (``usvjax.models``);
* ``examples``: the input pipeline's ``spec.ExampleSource`` (clips, sequences, view pairs);
* ``columns``: {header: metric} of a comparison table (``usvjax.studies.compare``);
* ``curve_metric``: the validation metric whose curve a comparison plots;
* ``metrics``: every metric its evaluation reports (what ``config.best_metric`` may name);
* ``pooled``: whether its evaluations give video probabilities and labels (``arrays()``)
  that k-fold cross-validation pools over folds.

A task's ``config.task`` keys and their defaults, its own ``config.input`` keys and its
default ``config.best_metric`` are plain data in ``configs/common.py:TASKS`` (configs import
no library code); tests/test_pure_configs.py checks them against the tasks.
"""
from __future__ import annotations

from typing import NamedTuple

import ml_collections

from input_pipeline import clips
from input_pipeline import sequences
from input_pipeline import spec
from input_pipeline import view_pairs
from usvjax import interfaces
from usvjax import models
from usvjax.errors import ConfigError
from usvjax.metrics import keys as metric_keys
from usvjax.tasks.classification import ClassificationTask
from usvjax.tasks.contrastive import ContrastiveTask
from usvjax.tasks.segmentation import SegmentationTask


class TaskDefinition(NamedTuple):
  task: type
  examples: spec.ExampleSource
  columns: dict[str, str]
  curve_metric: str
  metrics: tuple[str, ...]
  pooled: bool = False


TASKS: dict[str, TaskDefinition] = {
    'segmentation': TaskDefinition(
        SegmentationTask, clips.Clips(),
        {'lesion Dice': 'lesion_dice', 'pooled Dice': 'pooled_dice', 'lesion IoU': 'lesion_iou',
         'lesion recall': 'lesion_recall', 'empty FP rate': 'empty_fp_rate',
         'max F': 'max_f_mean_pr', 'HD95': 'hd95', 'NSD': 'nsd', 'MAE': 'mean_mae',
         'S-measure': 'mean_s_measure', 'E-measure': 'mean_e_measure', 'mean Dice': 'mean_dice'},
        'lesion_dice', metric_keys.SEGMENTATION_RESULT_KEYS),
    'classification': TaskDefinition(
        ClassificationTask, sequences.Sequences(),
        {'Acc': 'accuracy', 'Precision': 'precision', 'Sens': 'sensitivity',
         'Spec': 'specificity', 'F1': 'f1', 'AUC': 'auc', 'AP': 'ap'}, 'auc',
        metric_keys.CLASSIFICATION_KEYS, pooled=True),
    'contrastive': TaskDefinition(
        ContrastiveTask, view_pairs.ViewPairs(),
        {'retrieval accuracy': 'contrastive_accuracy', 'NT-Xent': 'nt_xent'},
        'contrastive_accuracy', metric_keys.CONTRASTIVE_KEYS),
}


def definition(name: str) -> TaskDefinition:
  if name not in TASKS:
    raise ConfigError(f'config.input.task={name!r}: use one of {sorted(TASKS)}.')
  return TASKS[name]


def example_source(config: ml_collections.ConfigDict) -> spec.ExampleSource:
  return definition(config.input.task).examples


def create_task(config: ml_collections.ConfigDict) -> interfaces.Task:
  """The task of ``config`` with its model's loss terms."""
  return definition(config.input.task).task(config.task, config.input.batch_size,
                                            models.create_loss_terms(config))


def batch_spec(config: ml_collections.ConfigDict, train: bool,
               features=None) -> spec.Spec:
  """Every field of the training (``train``) or evaluation batches of ``config``: its
  example source's (``features``: the dataset's, which tell cached features from frames;
  None stands for a dataset of frames with every label)."""
  return example_source(config).fields(config, train, features)
