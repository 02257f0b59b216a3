"""C3D_BN (Cui et al. Sec. 4, Fig. 8 and Table 4): C3D (Tran et al., ICCV 2015) with a
BatchNorm after every 3-D convolution and without conv5a/conv5b.

Stages (``stages``, channels of each 3x3x3 convolution, padding 1): conv1a 64, pool1
(1x2x2); conv2a 128, pool2; conv3a, conv3b 256, pool3; conv4a, conv4b 512, pool4 (2x2x2
max-pools); each convolution is followed by BatchNorm and ReLU, and has no bias (C3D's
would be cancelled by BatchNorm's mean subtraction: a parameter with zero gradient, left
out as in torchvision's video ResNets). C3D flattens pool5 into fc6;
the paper only says the fully-connected input was modified for its frame count, so here
pool4's output is averaged over the real frames and all positions (any video length works),
then fc6 and fc7 (``fc``, 4096 each, ReLU, dropout 0.5 as in C3D) and the classifier.
``stages`` with a fifth (512, 512) entry is the original C3D depth.

**Padding** (``video_layers``): padded frames are zero wherever a convolution reads them,
BatchNorm statistics count only real frames, and a temporal pool keeps ceil(n / 2) of n
frames: its windows start at even frames and the last one of an odd-length video holds one
real frame and one zero, whose maximum is the real frame's value because activations after
ReLU are >= 0 (PyTorch's ``ceil_mode`` in time). A short video therefore keeps at least one
frame, and each video of a padded batch gets the logits of the video run alone (inference);
training statistics and loss do not depend on the padding.

Input ``frames`` [B, T, H, W, 1 or 3] in [0, 1] (Kinetics-normalised), ``valid`` [B, T].
Outputs ``logits`` [B, K] and ``pooled`` [B, C].
"""
from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

from usvjax.models import video_layers


class C3D(nn.Module):
  """C3D_BN; see the module docstring. ``width`` scales every convolution (tiny tests)."""
  num_classes: int = 2
  stages: Sequence[Sequence[int]] = ((64,), (128,), (256, 256), (512, 512))
  fc: Sequence[int] = (4096, 4096)
  width: float = 1.0
  dropout: float = 0.5

  @nn.compact
  def __call__(self, batch: dict[str, jnp.ndarray], *, train: bool) -> dict[str, jnp.ndarray]:
    valid = batch['valid']
    x = video_layers.video_input(batch['frames'], valid, video_layers.KINETICS_MEAN,
                                 video_layers.KINETICS_STD)
    for stage, widths in enumerate(self.stages, start=1):
      for j, channels in enumerate(widths):
        name = f'conv{stage}{"ab"[j]}'
        x = nn.Conv(max(1, int(round(channels * self.width))), (3, 3, 3), padding=1,
                    use_bias=False, name=name)(x)
        x = nn.relu(video_layers.MaskedBatchNorm(name=f'{name}_bn')(x, valid, train))
      t = 1 if stage == 1 else 2
      x = nn.max_pool(x, (t, 2, 2), (t, 2, 2), padding=((0, x.shape[1] % t), (0, 0), (0, 0)))
      valid = video_layers.strided_valid(valid, t)
    pooled = video_layers.masked_video_mean(x, valid)
    y = pooled
    for i, features in enumerate(self.fc, start=6):
      y = nn.relu(nn.Dense(features, name=f'fc{i}')(y))
      y = nn.Dropout(self.dropout, deterministic=not train)(y)
    return {'pooled': pooled, 'logits': nn.Dense(self.num_classes, name='classifier')(y)}
