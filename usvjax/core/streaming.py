"""Segmenting videos frame by frame, carrying a state from one frame to the next.

A *streaming* model has two methods besides ``__call__``, with fixed-shape states so each
compiles once whatever the video length:

* ``start(frame [B, H, W, C], mask [B, H, W, 1]) -> (state, logits)``: a video's first
  frame. STPFNet encodes it with its given mask into its memory and returns no logits (the
  mask is frame 1's result); FLA-Net and DSANet ignore the mask, segment the frame (its
  clip is the frame three times, as the input pipeline builds it) and keep its features;
* ``step(state, frame [B, H, W, C]) -> (state, logits [B, H, W, 1])``: the next frame,
  encoded once. FLA-Net's and DSANet's states hold the encoder features of the last two
  frames, so they give the clip forward pass's logits with one encoder pass per frame
  instead of three; STPFNet's holds its bounded memory and the previous prediction.

The batch axis holds several videos advanced together. Which models stream, and which
propagate a given first mask, their registry entries declare (``interfaces.Capabilities``:
``streaming``, ``needs_first_mask``; ``models.capabilities``). Models without these
methods (the image U-Net) stream through ``ClipWindow``: the last ``clip_length`` frames
are kept on the host and the model runs on that clip.

``first_frame_eval_step`` is the evaluation step of the semi-supervised protocol
(``config.input.eval_protocol='first_frame'``): batches of whole videos are streamed from
their first annotated frame's ground truth (the input pipeline starts each video there),
and every later annotated frame is scored.
"""
from __future__ import annotations

from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np

from usvjax import interfaces
from usvjax.core import parallel


def _frame_batch(batch: dict, t: int) -> dict:
  """Frame ``t`` of a batch of whole videos (time axis 1 of every array with more than one
  axis but ``video_key``), as a batch of 1-frame clips; its ``frame_index`` is t plus each
  video's ``frame_offset`` (the videos start at their first annotated frame)."""
  out = {k: v[:, t:t + 1] for k, v in batch.items() if v.ndim > 1 and k != 'video_key'}
  out['frame_index'] = (batch['frame_offset'] + t).astype(np.int32)
  out['video_key'] = batch['video_key']
  return out


def first_frame_eval_step(model, task):
  """``eval_step(variables, batch, mesh)`` for batches of whole videos [B, T, ...]: yields
  the task's eval outputs of frames 1..T-1 in order (frame 0's mask is given, not scored;
  the task scores the annotated frames).

  Every process loops over the same number of frames (the input pipeline pads time axes to
  the longest over processes; padded frames have ``valid`` False and are not scored).
  """
  @jax.jit
  def start(variables, first):
    state, _ = model.apply(variables, first['frames'][:, 0], first['masks'][:, 0],
                           method='start')
    return state

  @jax.jit
  def step(variables, state, current):
    state, logits = model.apply(variables, state, current['frames'][:, 0], method='step')
    return state, task.eval_outputs({'logits': logits}, current)

  def eval_step(variables, batch: dict, mesh) -> Iterator[dict]:
    state = start(variables, parallel.global_batch(_frame_batch(batch, 0), mesh))
    for t in range(1, batch['valid'].shape[1]):
      state, outputs = step(variables, state, parallel.global_batch(_frame_batch(batch, t),
                                                                    mesh))
      yield outputs
  return eval_step


class ClipWindow:
  """Streams a clip-based segmentation model: keeps the last ``clip_length`` frames.

  ``start(frame, mask)`` and ``step(frame)`` mirror a streaming model's methods on host
  arrays [B, H, W, C]; ``start`` returns the first frame's probabilities (the mask is not
  used: these models do not take one).
  """

  def __init__(self, model, variables: dict, clip_length: int):
    self.clip_length = clip_length
    self.window: list[np.ndarray] = []
    self._probs = jax.jit(lambda v, clip: jax.nn.sigmoid(
        model.apply(v, {'frames': clip}, train=False)['logits']))
    self.variables = variables

  def start(self, frame: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    del mask
    self.window = [frame] * self.clip_length
    return self._run()

  def step(self, frame: np.ndarray) -> np.ndarray:
    self.window = self.window[1:] + [frame]
    return self._run()

  def _run(self) -> np.ndarray:
    return np.asarray(self._probs(self.variables, jnp.stack(self.window, axis=1)))


class StateStream:
  """Streams a streaming model (``Capabilities.streaming``) with the same interface as
  ``ClipWindow``: host arrays in, probabilities [B, H, W, 1] out (for a model given the
  first mask, ``start`` returns that mask)."""

  def __init__(self, model, variables: dict):
    self._start = jax.jit(lambda v, f, m: model.apply(v, f, m, method='start'))
    self._step = jax.jit(lambda v, s, f: model.apply(v, s, f, method='step'))
    self.variables, self.state = variables, None

  def start(self, frame: np.ndarray, mask: np.ndarray) -> np.ndarray:
    self.state, logits = self._start(self.variables, frame, mask)
    if logits is None:
      return np.asarray(mask, np.float32)
    return np.asarray(jax.nn.sigmoid(logits))

  def step(self, frame: np.ndarray) -> np.ndarray:
    self.state, logits = self._step(self.variables, self.state, frame)
    return np.asarray(jax.nn.sigmoid(logits))


def make_stream(model, variables: dict, clip_length: int, *,
                capabilities: interfaces.Capabilities, clip_window: bool = False
                ) -> ClipWindow | StateStream:
  """The model's own stream, or (``clip_window``, or a model without one) a ``ClipWindow``;
  a model given the first mask always streams its own way (a clip window has no mask).
  ``capabilities``: the model's (``models.capabilities(config.model)``)."""
  if capabilities.streaming and (capabilities.needs_first_mask or not clip_window):
    return StateStream(model, variables)
  return ClipWindow(model, variables, clip_length)
