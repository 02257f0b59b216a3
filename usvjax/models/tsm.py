"""TSM, the Temporal Shift Module network (Lin, Gan and Han, ICCV 2019; CLMAN Table 4).

A 2-D ResNet run on every frame whose residual blocks first shift channels along time
(residual shift, the paper's Fig. 3b and its released ``blockres`` placement: the shift
sits in the residual branch before the block's first convolution; the shortcut sees the
unshifted input): of C channels, C/``shift_div`` take the next frame's values and
C/``shift_div`` the previous frame's (``shift_div`` 8: 1/8 each way, the paper's 1/4
shifted in all); frames beyond a video's ends give zeros (``video_resnet.temporal_shift``).
Features are averaged over positions and the real frames, then dropout and a linear
classifier: the paper's average consensus of per-frame scores, which for a linear
classifier is the same as classifying the average (dropout then acts on the average, not
per frame).

The network is ``video_resnet.VideoResNetTrunk`` with the 2-D ResNet stem (7x7 conv,
max-pool), 1x3x3 ('2d') convolutions and no temporal stride, ``arch`` 'resnet50' (the
paper's) or 'resnet18'. Its variables carry torchvision's video names (``stem_0``,
``layer1_0/conv1_0``, ...), and ``backbones/video_convert.py`` fills them from an ImageNet
torchvision ResNet (``experiments/convert_weights.py --video=tsm_resnet50``), as the paper
initialises TSM.

**Padding.** Padded frames are zero where the shift reads them (``video_layers``), so a
video's last real frame receives zeros from the padding, as from the end of the video run
alone; BatchNorm statistics count only real frames and pooling averages only real frames.
A padded batch therefore gives each video the logits of the video alone (inference), and in
training the same statistics and loss whatever the padding.

Input ``frames`` [B, T, H, W, 1 or 3] in [0, 1] (ImageNet-normalised here), ``valid``
[B, T]. Outputs ``logits`` [B, K] and ``pooled`` [B, C].
"""
from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

from usvjax.errors import ConfigError
from usvjax.models import video_layers
from usvjax.models import video_resnet
from usvjax.models.backbones import resnet

ARCHITECTURES = {
    'resnet18': dict(block='basic', depths=(2, 2, 2, 2)),
    'resnet50': dict(block='bottleneck', depths=(3, 4, 6, 3)),
}


def trunk(arch: str, width: float = 1.0, shift_div: int = 8, depths: Sequence[int] = (),
          name: str | None = None) -> video_resnet.VideoResNetTrunk:
  """TSM's shifted 2-D ResNet ``arch`` (a key of ``ARCHITECTURES``); ``depths``, if given,
  replaces its blocks per stage (tiny tests)."""
  if arch not in ARCHITECTURES:
    raise ConfigError(f'config.model.arch={arch!r}: use one of {sorted(ARCHITECTURES)}.')
  layout = dict(ARCHITECTURES[arch], **({'depths': tuple(depths)} if depths else {}))
  return video_resnet.VideoResNetTrunk(stem='imagenet', convs=('2d',) * 4, width=width,
                                       shift_div=shift_div, name=name, **layout)


class TSM(nn.Module):
  """TSM classifier; see the module docstring. ``shift_div`` 0 is the plain 2-D ResNet
  with average consensus (TSN); ``depths`` () keeps the arch's blocks per stage."""
  num_classes: int = 2
  arch: str = 'resnet50'
  width: float = 1.0
  shift_div: int = 8
  dropout: float = 0.5
  depths: Sequence[int] = ()

  @nn.compact
  def __call__(self, batch: dict[str, jnp.ndarray], *, train: bool) -> dict[str, jnp.ndarray]:
    valid = batch['valid']
    x = video_layers.video_input(batch['frames'], valid, resnet.IMAGENET_MEAN,
                                 resnet.IMAGENET_STD)
    x, valid = trunk(self.arch, self.width, self.shift_div, self.depths, name='backbone')(
        x, valid, train=train)
    pooled = video_layers.masked_video_mean(x, valid)
    y = nn.Dropout(self.dropout, deterministic=not train)(pooled)
    return {'pooled': pooled, 'logits': nn.Dense(self.num_classes, name='fc')(y)}
