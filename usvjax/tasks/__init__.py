"""Tasks turn model outputs and a batch into a loss (on device) and metrics (on host).

``create_task(config)`` picks the task from ``config.input.task``. A task has:

* ``loss(outputs, batch) -> (scalar, {name: scalar})``: traced inside the train step;
  padded examples (``valid`` all False) get zero weight.
* ``eval_outputs(outputs, batch) -> {name: array}``: what evaluation brings to the host
  (predictions and the labels they are scored against), computed on device.
* ``evaluator()``: a host-side accumulator with ``update(eval_outputs)``, ``result()``
  (exact metrics over the whole split) and ``video_rows()`` (per-video results).
"""
from __future__ import annotations

import ml_collections

from usvjax.tasks.classification import ClassificationTask
from usvjax.tasks.contrastive import ContrastiveTask
from usvjax.tasks.segmentation import SegmentationTask

TASKS = {'segmentation': SegmentationTask, 'classification': ClassificationTask,
         'contrastive': ContrastiveTask}


def create_task(config: ml_collections.ConfigDict):
  name = config.input.task
  if name not in TASKS:
    raise ValueError(f'config.input.task={name!r}: use one of {sorted(TASKS)}.')
  return TASKS[name](config.task, config.input.batch_size)
