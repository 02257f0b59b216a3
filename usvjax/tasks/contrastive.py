"""Contrastive pretraining task (SimCLR; CLMAN Sec. 3.2), device side: NT-Xent on two views
per example.

The batch holds ``frames`` [B, 2, H, W, C], two augmented views of one frame ('same_frame'
positives) or of two frames of one video ('same_video'; see
``input_pipeline.pipeline``) and ``valid`` [B, 2]. The model gives
``projections`` [B, 2, d]. The loss is ``losses.nt_xent`` with temperature
``config.temperature``; as in SimCLR, every other example's views are negatives, other frames
of the same video included. CLMAN (Sec. 3.2) takes "different data augmentation of the same
image as positive samples together with negative samples composed of other images", SimCLR's
rule with no exception for a video's own frames, so none is made here (before issue 41 they
were left out, a choice the paper does not make).
Evaluation reports the mean NT-Xent and ``contrastive_accuracy``, the fraction of views
whose most similar candidate is their positive (over the validation split's pairs, with
fixed augmentations); those means are ``contrastive_evaluation.ContrastiveEvaluation``'s.
"""
from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp
import ml_collections

from usvjax.errors import ConfigError
from usvjax import interfaces
from usvjax import losses
from usvjax.tasks.contrastive_evaluation import ContrastiveEvaluation


class ContrastiveTask:
  """``interfaces.Task`` of contrastive pretraining."""

  def __init__(self, config: ml_collections.ConfigDict, batch_size: int,
               terms: Sequence[interfaces.LossTerm] = ()):
    if batch_size < 2:
      raise ConfigError(f'contrastive pretraining needs negatives: config.input.batch_size is '
                        f'{batch_size}, use >= 2 (the paper: 64).')
    if terms:
      raise ConfigError('contrastive pretraining takes no model loss terms.')
    self.config = config

  def _per_example(self, outputs: dict, batch: dict) -> tuple[jnp.ndarray, jnp.ndarray]:
    """NT-Xent and top-1 retrieval accuracy of each example: ([B], [B])."""
    valid = jnp.all(batch['valid'], axis=1)
    logits, positive = losses.nt_xent_logits(outputs['projections'], self.config.temperature,
                                             valid)
    correct = (jnp.argmax(logits, axis=-1) == positive).astype(jnp.float32)
    b = valid.shape[0]
    return losses.nt_xent(logits, positive, valid), (correct[:b] + correct[b:]) / 2

  def loss(self, outputs: dict, batch: dict) -> tuple[jnp.ndarray, dict]:
    valid = jnp.all(batch['valid'], axis=1)
    nt_xent, correct = self._per_example(outputs, batch)
    return (losses.weighted_mean(nt_xent, valid),
            {'contrastive_accuracy': losses.weighted_mean(correct, valid)})

  def eval_outputs(self, outputs: dict, batch: dict) -> dict:
    nt_xent, correct = self._per_example(outputs, batch)
    return {'nt_xent': nt_xent, 'correct': correct, 'valid': jnp.all(batch['valid'], axis=1)}

  def evaluator(self) -> ContrastiveEvaluation:
    return ContrastiveEvaluation()
