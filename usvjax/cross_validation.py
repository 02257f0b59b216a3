"""k-fold cross-validation of any classification config, split by video.

Folds come from ``input_pipeline.pipeline.fold_assignment`` over ``config.dataset.train_split``
(use e.g. 'train+validation+test' for the whole dataset): by video, stratified by label,
fixed by the seed. For fold i the model trains on the other folds and its final checkpoint
is evaluated on fold i (periodic validation during training also reports fold i, for the
curves; picking the best checkpoint on it would leak the held-out fold, so it is not used).
Runs live in ``<workdir>/fold_<i>`` and resume like any run, so an interrupted
cross-validation continues where it stopped.

Writes ``cv_results.json`` (per fold and mean ± sample std), ``cv_table.md``, and ROC, PR
and normalised confusion-matrix PNGs of all folds' held-out predictions pooled.
"""
from __future__ import annotations

import json
import os

import jax
import ml_collections
import numpy as np

from input_pipeline import pipeline
from usvjax import evaluate
from usvjax import metrics as metrics_lib
from usvjax import plots
from usvjax import train

KEYS = ('accuracy', 'precision', 'sensitivity', 'specificity', 'f1', 'auc', 'ap')


def run(config: ml_collections.ConfigDict, workdir: str, num_folds: int = 5,
        seed: int = 0) -> dict:
  """Trains and evaluates every fold; returns {'folds': [...], 'mean': ..., 'std': ...}."""
  if config.input.task != 'classification':
    raise ValueError('cross-validation is for classification configs '
                     f'(config.input.task={config.input.task!r}).')
  folds, probs, labels = [], [], []
  for index in range(num_folds):
    fold_config = config.copy_and_resolve_references()
    fold_config.dataset.folds.update(num=num_folds, index=index, seed=seed)
    fold_dir = os.path.join(workdir, f'fold_{index}')
    train.train_and_evaluate(fold_config, fold_dir)
    report = evaluate.evaluate_checkpoint(fold_config, fold_dir, 'latest',
                                          config.dataset.train_split,
                                          os.path.join(fold_dir, 'held_out'))
    folds.append({k: report.metrics[k] for k in KEYS + ('num_videos',)})
    fold_probs, fold_labels = report.evaluation.arrays()
    probs.append(fold_probs)
    labels.append(fold_labels)
  table = np.array([[fold[k] for k in KEYS] for fold in folds])
  summary = {'folds': folds, 'num_folds': num_folds, 'seed': seed,
             'mean': dict(zip(KEYS, np.nanmean(table, axis=0).tolist())),
             'std': dict(zip(KEYS, np.nanstd(table, axis=0, ddof=1).tolist())),
             'pooled': metrics_lib.classification_metrics(
                 np.concatenate(probs), np.concatenate(labels), config.task.threshold)}
  if jax.process_index() == 0:
    _write(summary, workdir, np.concatenate(probs), np.concatenate(labels), config)
  return summary


def markdown_table(summary: dict) -> str:
  header = '| fold | videos | ' + ' | '.join(KEYS) + ' |\n|' + '---|' * (len(KEYS) + 2) + '\n'
  rows = [f'| {i} | {int(f["num_videos"])} | ' + ' | '.join(f'{f[k]:.3f}' for k in KEYS) + ' |'
          for i, f in enumerate(summary['folds'])]
  rows.append('| mean ± std | | ' + ' | '.join(
      f'{summary["mean"][k]:.3f} ± {summary["std"][k]:.3f}' for k in KEYS) + ' |')
  return header + '\n'.join(rows) + '\n'


def _write(summary, workdir, probs, labels, config) -> None:
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, 'cv_results.json'), 'w') as f:
    json.dump(summary, f, indent=2)
  with open(os.path.join(workdir, 'cv_table.md'), 'w') as f:
    f.write(markdown_table(summary))
  builder = pipeline.get_builder(config.dataset)
  class_names = builder.info.features['label'].names
  plots.classification_curves(probs, labels, workdir, class_names, summary['pooled'],
                              config.task.threshold)
