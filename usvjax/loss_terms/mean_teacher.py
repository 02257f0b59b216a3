"""Mean teacher: consistency with an exponential moving average of the model on the frames
that have no mask.

Tarvainen & Valpola, "Mean teachers are better role models: Weight-averaged consistency
targets improve semi-supervised deep learning results", NeurIPS 2017. The teacher is the
EMA of the student's parameters (``config.optimizer.ema_decay``, ``usvjax.core.state``);
it sees the batch as it is, the student sees its frames with Gaussian noise of std
``config.task.consistency_noise`` (the paper's input noise; the frames are in [0, 1]), and
the student's target-frame probabilities are pulled towards the teacher's with a mean
squared error, weighted by ``config.task.consistency_weight``, on the clips whose target
frame is valid and unannotated (``batch['annotated'][:, -1]`` False).

Any segmenter works: the term reads only ``outputs['logits']`` [B, H, W, 1] of the target
frame, and the teacher is the same model applied to the same batch. The train step
(``usvjax.core.train_step``) runs the teacher when the task has one (``task.teacher``):
``student_batch`` makes the student's input, ``targets`` the teacher's outputs that join
the student's (``outputs['teacher_probs']``, under ``stop_gradient``).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from usvjax import losses


class MeanTeacher:
  """The consistency term (``interfaces.LossTerm``) and what the train step asks of it."""

  def __init__(self, weight: float, noise: float):
    self.weight, self.noise = weight, noise

  def student_batch(self, batch: dict, rng: jax.Array) -> dict:
    """``batch`` with Gaussian noise of std ``noise`` on its frames [B, T, H, W, C]."""
    frames = batch['frames']
    return dict(batch, frames=frames + self.noise * jax.random.normal(
        rng, frames.shape, frames.dtype))

  def targets(self, teacher_outputs: dict) -> dict:
    """{'teacher_probs': [B, H, W, 1]}: the teacher's target-frame probabilities."""
    return {'teacher_probs': jax.nn.sigmoid(teacher_outputs['logits'].astype(jnp.float32))}

  def __call__(self, outputs: dict, batch: dict) -> tuple[jnp.ndarray, dict]:
    """``weight`` * the mean over pixels of (sigmoid(student logits) - teacher_probs)^2,
    averaged over the valid unannotated target frames (0 when there are none)."""
    probs = jax.nn.sigmoid(outputs['logits'].astype(jnp.float32))
    per_frame = jnp.mean(jnp.square(probs - outputs['teacher_probs']), axis=(1, 2, 3))
    unannotated = batch['valid'][:, -1] & ~batch['annotated'][:, -1]
    value = losses.weighted_mean(per_frame, unannotated)
    return self.weight * value, {'consistency': value}


def create(task_config: ml_collections.ConfigDict) -> MeanTeacher | None:
  """The mean teacher of ``config.task`` (``consistency_weight``, ``consistency_noise``);
  None when its weight is 0 (the supervised step, unchanged)."""
  weight, noise = task_config.consistency_weight, task_config.consistency_noise
  return MeanTeacher(weight, noise) if weight > 0 else None
