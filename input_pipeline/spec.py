"""The batch specification: every key of a batch, its per-example shape, dtype and time axis.

One ``ExampleSource`` per kind of example (``clips``, ``sequences``, ``view_pairs``) states
the fields it yields for a config (``source.fields(config, train, features)``; the task
registry, ``usvjax.tasks``, names each task's source), with the fields every batch has
(``valid``, ``video_hash``, and ``video_key`` in evaluation). Everything that needs
to know a batch's layout reads it from there: the preprocessing (which keeps exactly these
keys), padding to a length bucket or across processes, padding batches of an exact
evaluation, model initialisation (``zeros``), the benchmarks and the tests.

A field's ``shape`` is per example; with ``time`` True its first entry is the time axis,
``None`` where its length varies between batches (sequences, whole videos), else the fixed
length (clips). Shapes of a batch are ``(B, *shape)``.

This module and the sources' declarations (``required_features``, ``fields``) import no
TensorFlow, so models are initialised and benchmarked where it is absent
(``scripts/device_check.py``); a source's tf.data side (``items``, ``augment``, ``batch``)
is its ``*_streams`` module, imported when first used (``StreamsInModule``).
"""
from __future__ import annotations

import importlib
from collections.abc import Mapping
from types import ModuleType
from typing import TYPE_CHECKING, NamedTuple, Protocol

import ml_collections
import numpy as np

if TYPE_CHECKING:  # Annotations only: declaring a batch needs no TensorFlow.
  import tensorflow as tf

VIDEO_KEY_BYTES = 128


class Field(NamedTuple):
  shape: tuple[int | None, ...]
  dtype: np.dtype
  time: bool = False


Spec = dict[str, Field]


class ExampleSource(Protocol):
  """How one kind of example is made from the videos of a split, and what it holds."""

  # Whether an example is a clip of ``config.input.clip_length`` frames (segmentation),
  # which the run checks hold against the model's frame capabilities and the videos'
  # lengths; sequences and view pairs are not.
  clip_examples: bool

  def required_features(self, features: Mapping) -> tuple[str, ...]:
    """The dataset features (of ``builder.info.features``) the source reads."""

  def fields(self, config: ml_collections.ConfigDict, train: bool,
             features: Mapping | None) -> Spec:
    """The task-specific fields of one example (``features``: the dataset's, or None for
    a dataset with frames and every label)."""

  def items(self, videos: tf.data.Dataset, config: ml_collections.ConfigDict,
            train: bool) -> tf.data.Dataset:
    """Encoded examples from a stream of encoded videos."""

  def augment(self, example: dict, seed: tf.Tensor, input_config: ml_collections.ConfigDict,
              train: bool) -> dict:
    """Augments (or, in evaluation, perturbs) one decoded example."""

  def batch(self, ds: tf.data.Dataset, config: ml_collections.ConfigDict, fields: Spec,
            batch_size: int, drop_remainder: bool, train: bool) -> tf.data.Dataset:
    """Batches decoded examples (whose fields are ``fields``)."""


class StreamsInModule:
  """The tf.data side of an ``ExampleSource`` (``items``, ``augment``, ``batch``): the
  functions of the module ``STREAMS`` names, imported (with TensorFlow) when first called.
  A subclass declares ``required_features`` and ``fields`` without TensorFlow."""

  STREAMS: str  # The module of the tf.data functions, e.g. 'input_pipeline.clip_streams'.
  clip_examples = False

  def items(self, videos: tf.data.Dataset, config: ml_collections.ConfigDict,
            train: bool) -> tf.data.Dataset:
    return self._streams().items(videos, config, train)

  def augment(self, example: dict, seed: tf.Tensor, input_config: ml_collections.ConfigDict,
              train: bool) -> dict:
    return self._streams().augment(example, seed, input_config, train)

  def batch(self, ds: tf.data.Dataset, config: ml_collections.ConfigDict, fields: Spec,
            batch_size: int, drop_remainder: bool, train: bool) -> tf.data.Dataset:
    return self._streams().batch(ds, config, fields, batch_size, drop_remainder, train)

  def _streams(self) -> ModuleType:
    return importlib.import_module(self.STREAMS)


def common_fields(train: bool, length: int | None) -> Spec:
  """The fields of every batch: ``valid`` [T], ``video_hash`` (tells videos apart inside a
  step) and, in evaluation, ``video_key`` (the id, zero-padded bytes)."""
  out = {'valid': Field((length,), np.dtype(bool), time=True),
         'video_hash': Field((), np.dtype(np.int32))}
  if not train:
    out['video_key'] = Field((VIDEO_KEY_BYTES,), np.dtype(np.uint8))
  return out


def image_field(config: ml_collections.ConfigDict, length: int | None,
                channels: int | None = None) -> Field:
  """float32 [T, S, S, C] frames (C = ``config.input.channels`` unless given)."""
  size = config.input.image_size
  return Field((length, size, size, channels or config.input.channels), np.dtype(np.float32),
               time=True)


def time_keys(fields: Spec) -> list[str]:
  """The keys of the fields with a time axis."""
  return [k for k, f in fields.items() if f.time]


def zeros(fields: Spec, batch_size: int, length: int = 1) -> dict[str, np.ndarray]:
  """A batch of zeros (``valid`` all False) with this layout; a variable time axis gets
  ``length``."""
  return {k: np.zeros((batch_size,) + tuple(length if d is None else d for d in f.shape),
                      f.dtype) for k, f in fields.items()}


def example_batch(fields: Spec, batch_size: int, length: int = 1) -> dict[str, np.ndarray]:
  """``zeros`` with every frame valid (and annotated, where frames carry the flag): the
  shapes a model is initialised or benchmarked on."""
  batch = zeros(fields, batch_size, length)
  batch['valid'][:] = True
  if 'annotated' in batch:
    batch['annotated'][:] = True
  batch['video_hash'][:] = np.arange(batch_size)
  return batch


def pad_time(batch: Mapping[str, np.ndarray], fields: Spec, length: int) -> dict:
  """Pads the time axis of the time fields to ``length`` with zeros (``valid`` False)."""
  out = dict(batch)
  for key in time_keys(fields):
    have = batch[key].shape[1]
    if have < length:
      pad = [(0, 0), (0, length - have)] + [(0, 0)] * (batch[key].ndim - 2)
      out[key] = np.pad(batch[key], pad)
  return out


def check(batch: Mapping[str, np.ndarray], fields: Spec) -> None:
  """Raises if ``batch`` does not have exactly the keys, dtypes and shapes of ``fields``."""
  if set(batch) != set(fields):
    raise ValueError(f'batch keys {sorted(batch)} differ from the spec {sorted(fields)}.')
  for key, field in fields.items():
    shape = batch[key].shape[1:]
    fits = len(shape) == len(field.shape) and all(
        want is None or want == have for want, have in zip(field.shape, shape))
    if not fits or batch[key].dtype != field.dtype:
      raise ValueError(f'batch[{key!r}] is {batch[key].dtype}{list(shape)}, the spec says '
                       f'{field.dtype}{list(field.shape)}.')
