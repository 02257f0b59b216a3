"""The evaluation step: the model's eval outputs for a batch, as global arrays.

``make_eval_step(model, task, protocol)`` is made once per run (``run.Run.eval_step``):
each new step function would be compiled again.
"""
from __future__ import annotations

import jax

from usvjax.core import parallel
from usvjax.core import streaming


def make_eval_step(model, task, protocol: str = 'clip'):
  """``eval_step(variables, local_batch, mesh)`` yields the task's eval outputs (global
  arrays) for the batch's examples.

  ``protocol`` 'clip' runs the model once on the batch of clips (or sequences);
  'first_frame' streams batches of whole videos (``streaming.first_frame_eval_step``).
  """
  if protocol == 'first_frame':
    return streaming.first_frame_eval_step(model, task)

  @jax.jit
  def forward(variables, batch):
    return task.eval_outputs(model.apply(variables, batch, train=False), batch)

  def eval_step(variables, batch, mesh):
    yield forward(variables, parallel.global_batch(batch, mesh))
  return eval_step
