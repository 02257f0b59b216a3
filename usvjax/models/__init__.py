"""Model registry: ``create_model(config.model)`` builds a model by name.

``config.model.name`` picks the class; every other field of ``config.model`` is passed
to it as a keyword argument.
"""
from __future__ import annotations

import flax.linen as nn
import ml_collections

from usvjax.models.clman import CLMAN
from usvjax.models.clman import SimCLR
from usvjax.models.cnn_lstm import CNNLSTM
from usvjax.models.dsanet import DSANet
from usvjax.models.flanet import FLANet
from usvjax.models.frame_classifier import FrameClassifier
from usvjax.models.stpfnet import STPFNet
from usvjax.models.unet import UNet

MODELS: dict[str, type[nn.Module]] = {
    'unet': UNet,
    'cnn_aver': FrameClassifier,
    'cnn_lstm': CNNLSTM,
    'flanet': FLANet,
    'dsanet': DSANet,
    'stpfnet': STPFNet,
    'clman': CLMAN,
    'simclr': SimCLR,
}


def create_model(config: ml_collections.ConfigDict) -> nn.Module:
  kwargs = {k: v for k, v in config.to_dict().items() if k != 'name'}
  if config.name not in MODELS:
    raise ValueError(f'config.model.name={config.name!r} is not a model; choose one of '
                     f'{sorted(MODELS)}.')
  try:
    return MODELS[config.name](**kwargs)
  except TypeError as e:
    raise ValueError(f'config.model has a field that {config.name!r} does not take: {e}') from e
