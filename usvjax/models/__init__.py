"""Model registry: ``create_model(config.model)`` builds a model by name.

``config.model.name`` picks the entry of ``MODELS``; every other field of ``config.model``
is passed to its class as a keyword argument. An entry may name the method's own loss
terms (a module of ``usvjax.loss_terms``: ``create(config.task, batch_size)``), which the
task adds to its loss, and declares what the model takes (``interfaces.Capabilities``:
output stride, frames per clip, single frame, first mask, streaming), as such or, where
the model's fields decide it, as a function of the built model; ``capabilities(config.model)``
gives them to the run checks and to streaming. This is the one place that looks at a
model's name. A new method is one ``register`` line, here or in the user's own package.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import flax.linen as nn
import ml_collections

from usvjax.errors import ConfigError
from usvjax.interfaces import Capabilities
from usvjax.interfaces import StreamingModel
from usvjax.loss_terms import auxiliary_frames
from usvjax.loss_terms import flanet as flanet_terms
from usvjax.models.c3d import C3D
from usvjax.models.clman import CLMAN
from usvjax.models.clman import SimCLR
from usvjax.models.cnn_lstm import CNNLSTM
from usvjax.models.dsanet import DSANet
from usvjax.models.flanet import FLANet
from usvjax.models.frame_classifier import FrameClassifier
from usvjax.models.stpfnet import STPFNet
from usvjax.models.timesformer import TimeSformer
from usvjax.models.tsm import TSM
from usvjax.models.unet import UNet
from usvjax.models.video_resnet import VideoResNet

LossTerms = Callable[[ml_collections.ConfigDict, int], list]
# What a model takes: fixed, or decided by the fields of the built (unbound) model.
Declared = Capabilities | Callable[[nn.Module], Capabilities]


class Entry(NamedTuple):
  model: type[nn.Module]
  loss_terms: LossTerms | None = None
  capabilities: Declared = Capabilities()


MODELS: dict[str, Entry] = {}


def register(name: str, model: type[nn.Module], loss_terms: LossTerms | None = None,
             capabilities: Declared = Capabilities()) -> None:
  """Adds a model under ``name``, with its loss terms and what it takes (its capabilities),
  e.g. from a user's own module."""
  MODELS[name] = Entry(model, loss_terms, capabilities)


register('unet', UNet, capabilities=lambda m: Capabilities(
    output_stride=2 ** (m.levels - 1), single_frame=True))
register('cnn_aver', FrameClassifier)
register('cnn_lstm', CNNLSTM)
register('flanet', FLANet, flanet_terms.create, lambda m: Capabilities(
    output_stride=32 if m.design == 'released' else 1, min_frames=3, streaming=True))
register('dsanet', DSANet, auxiliary_frames.create,
         Capabilities(output_stride=32, min_frames=3, streaming=True))
register('stpfnet', STPFNet, auxiliary_frames.create,
         Capabilities(min_frames=2, needs_first_mask=True, streaming=True))
register('clman', CLMAN)
register('simclr', SimCLR)
register('video_resnet', VideoResNet)
register('tsm', TSM)
register('c3d', C3D)
register('timesformer', TimeSformer, capabilities=lambda m: Capabilities(
    output_stride=m.patch, max_frames=m.num_frames))


def _entry(name: str) -> Entry:
  if name not in MODELS:
    raise ConfigError(f'config.model.name={name!r} is not a model; choose one of '
                      f'{sorted(MODELS)}.')
  return MODELS[name]


def create_model(config: ml_collections.ConfigDict) -> nn.Module:
  kwargs = {k: v for k, v in config.to_dict().items() if k != 'name'}
  try:
    return _entry(config.name).model(**kwargs)
  except TypeError as e:
    raise ConfigError(f'config.model has a field that {config.name!r} does not take: {e}') from e


def capabilities(config: ml_collections.ConfigDict) -> Capabilities:
  """What the model of ``config`` (``config.model``) takes, as its entry declares it.

  Raises ``TypeError`` where the entry's ``streaming`` disagrees with the class (a
  ``StreamingModel`` has ``start`` and ``step``): streaming would fail only at evaluation.
  """
  declared, model = _entry(config.name).capabilities, create_model(config)
  found = declared(model) if callable(declared) else declared
  if found.streaming != isinstance(model, StreamingModel):
    raise TypeError(f'model {config.name!r} is registered with streaming={found.streaming}, '
                    f'but {type(model).__name__} {"lacks" if found.streaming else "has"} '
                    'start and step (interfaces.StreamingModel): correct its registration.')
  return found


def create_loss_terms(config: ml_collections.ConfigDict) -> list:
  """The loss terms of the model of ``config`` (see ``usvjax.loss_terms``)."""
  make = _entry(config.model.name).loss_terms
  return make(config.task, config.input.batch_size) if make else []
