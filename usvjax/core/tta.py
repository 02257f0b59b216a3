"""Test-time augmentation of segmentation (``evaluate --tta=flip``).

'flip': the model runs on the clip's frames and on the frames flipped along their width;
the second prediction is flipped back and the two lesion probabilities are averaged,
p = (sigmoid(f(x)) + flip(sigmoid(f(flip(x)))))/2, returned as the logits of p (so the
task's sigmoid gives p back). Only ``frames`` is flipped: a model that reads other
spatial inputs in evaluation (a given first-frame mask) is not covered, and the
``first_frame`` protocol (a streaming model propagating a given mask) is refused: its
state would have to be carried twice, once per orientation. Classifiers average over
frame samplings instead (``evaluate --clips``).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from input_pipeline import clips
from usvjax.core import run as run_lib
from usvjax.errors import ConfigError

MODES = ('none', 'flip')
_EPS = 1e-7  # p is kept in [eps, 1 - eps] so that its logit is finite.


class FlipAveraged:
  """A wrapped model (``execution.wrap``'s) whose ``apply`` averages with the flipped pass."""

  def __init__(self, model):
    self.model = model

  def apply(self, variables: dict, batch: dict, *args, **kwargs) -> dict:
    """The model's outputs with ``logits`` [..., H, W, 1] of the averaged probability."""
    outputs = self.model.apply(variables, batch, *args, **kwargs)
    flipped = self.model.apply(variables, dict(batch, frames=jnp.flip(batch['frames'], -2)),
                               *args, **kwargs)
    prob = (jax.nn.sigmoid(outputs['logits'])
            + jnp.flip(jax.nn.sigmoid(flipped['logits']), -2)) / 2
    prob = jnp.clip(prob, _EPS, 1 - _EPS)
    return dict(outputs, logits=jnp.log(prob) - jnp.log1p(-prob))

  def __getattr__(self, name: str):
    return getattr(self.model, name)


def with_tta(run: run_lib.Run, mode: str) -> run_lib.Run:
  """``run`` itself for 'none'; for 'flip' a run of the same data, task and mesh whose model
  is ``FlipAveraged`` (its own eval step); a one-line error where it does not apply."""
  if mode not in MODES:
    raise ConfigError(f'--tta={mode!r} (config.evaluation.tta): use one of {MODES}.')
  if mode == 'none':
    return run
  if not isinstance(run.source, clips.Clips):  # Segmentation's clips: a mask per frame.
    raise ConfigError(f'--tta=flip is for segmentation; the run is {run.config.input.task}: '
                      'average a classifier over frame samplings with --clips=K.')
  if run.config.input.eval_protocol == 'first_frame':
    raise ConfigError("--tta=flip: config.input.eval_protocol='first_frame' streams each "
                      "video from its first mask, which flip TTA does not cover: evaluate "
                      "this run without --tta.")
  flipped = run_lib.Run(run.config, run.builder, run.mesh, run.task)
  flipped.model = FlipAveraged(flipped.model)
  return flipped
