"""Model registry: ``create_model(config.model)`` builds a model by name.

``config.model.name`` picks the entry of ``MODELS``; every other field of ``config.model``
is passed to its class as a keyword argument. An entry may name the method's own loss
terms (a module of ``usvjax.loss_terms``: ``create(config.task, batch_size)``), which the
task adds to its loss. A new method is one line here (or ``register`` from outside).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import flax.linen as nn
import ml_collections

from usvjax.errors import ConfigError
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


class Entry(NamedTuple):
  model: type[nn.Module]
  loss_terms: LossTerms | None = None


MODELS: dict[str, Entry] = {
    'unet': Entry(UNet),
    'cnn_aver': Entry(FrameClassifier),
    'cnn_lstm': Entry(CNNLSTM),
    'flanet': Entry(FLANet, flanet_terms.create),
    'dsanet': Entry(DSANet, auxiliary_frames.create),
    'stpfnet': Entry(STPFNet, auxiliary_frames.create),
    'clman': Entry(CLMAN),
    'simclr': Entry(SimCLR),
    'video_resnet': Entry(VideoResNet),
    'tsm': Entry(TSM),
    'c3d': Entry(C3D),
    'timesformer': Entry(TimeSformer),
}


def register(name: str, model: type[nn.Module], loss_terms: LossTerms | None = None) -> None:
  """Adds a model (and its loss terms) under ``name``, e.g. from a user's own module."""
  MODELS[name] = Entry(model, loss_terms)


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


def create_loss_terms(config: ml_collections.ConfigDict) -> list:
  """The loss terms of the model of ``config`` (see ``usvjax.loss_terms``)."""
  make = _entry(config.model.name).loss_terms
  return make(config.task, config.input.batch_size) if make else []
