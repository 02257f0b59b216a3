"""An exported model: its functions and ``export.json``, from a directory written by
``usvjax.export.writer`` (``load``) or from a run in this process (``functions``).

This module imports only jax, numpy and the standard library: ``load`` runs an artifact
where flax, TensorFlow and usvjax's model code are absent. Each function of an artifact is
a flat ``jax.export`` program, ``<name>.jaxexport``, taking and returning arrays:

* ``predict``: segmentation ``frames [B, T, H, W, C] -> probabilities [B, H, W, 1]``;
  classification ``frames [B, T, H, W, C], valid [B, T] (bool) -> probabilities [B, K]``;
* ``start`` / ``step`` (streaming segmenters): ``frame [B, H, W, C], mask [B, H, W, 1] ->
  probabilities, *state`` and ``frame, *state -> probabilities, *state``; the state is the
  flat list of arrays ``export.json``'s ``state`` describes.

Frames are float32 in [0, 1] at ``preprocessing.image_size`` (see ``export.json``).
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence

import jax
import numpy as np

METADATA_FILE = 'export.json'
SUFFIX = '.jaxexport'

Flat = Callable[..., Sequence[jax.Array]]  # (*arrays) -> (probabilities, *state).


class Artifact:
  """A model's inference functions and its ``export.json`` contents (``metadata``).

  ``artifact(*inputs)`` runs ``predict`` (the probabilities); ``start(frame, mask)`` and
  ``step(state, frame)`` stream a video, ``-> (state, probabilities)`` with the state a
  tuple of arrays. ``functions``: {name: flat function} ('predict', 'start', 'step').
  """

  def __init__(self, functions: dict[str, Flat], metadata: dict):
    self.functions, self.metadata = functions, metadata

  def _function(self, name: str) -> Flat:
    if name not in self.functions:
      raise ValueError(f'this {self.metadata.get("model", "")} export has no {name!r} '
                       f'function; it has {sorted(self.functions)}.')
    return self.functions[name]

  def __call__(self, *inputs: np.ndarray) -> np.ndarray:
    return np.asarray(self._function('predict')(*inputs)[0])

  def start(self, frame: np.ndarray, mask: np.ndarray) -> tuple[tuple, np.ndarray]:
    probs, *state = self._function('start')(frame, mask)
    return tuple(state), np.asarray(probs)

  def step(self, state: tuple, frame: np.ndarray) -> tuple[tuple, np.ndarray]:
    probs, *state = self._function('step')(frame, *state)
    return tuple(state), np.asarray(probs)


def load(directory: str) -> Artifact:
  """The model exported into ``directory`` (``export.json`` and its ``.jaxexport`` files),
  deserialized with ``jax.export.deserialize``; runs on the platforms it was exported for
  (``metadata['platforms']``)."""
  path = os.path.join(directory, METADATA_FILE)
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{path} is missing: export a run with python -m '
                            'experiments.export --workdir=RUN --output=DIR first.')
  with open(path, encoding='utf-8') as f:
    metadata = json.load(f)
  functions = {}
  for name, described in metadata['functions'].items():
    with open(os.path.join(directory, described['file']), 'rb') as f:
      functions[name] = jax.export.deserialize(bytearray(f.read())).call
  return Artifact(functions, metadata)
