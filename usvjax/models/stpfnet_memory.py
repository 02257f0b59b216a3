"""STPFNet's memory encoder in STM's form (Oh et al., ICCV 2019: the space-time memory
network STPFNet's Temporal Fusion Module builds on; released code seoungwugoh/STM,
``Encoder_M`` and ``KV_M_r4``): ``model.memory_encoder='stm'``, the default.

A frame written into the memory is encoded by a network of its own, not by the query
encoder, and its mask enters at the first convolution:

  x_1 = conv1(f) + conv1_m(m) + conv1_o(1 - m),   then bn1, ReLU, max-pool, res2..res4,

f the ImageNet-normalised frame [B, H, W, 3], m its mask [B, H, W, 1] in [0, 1] (the given
mask for frame 1, the predicted probabilities after), conv1 the ResNet's 7x7 stride-2 stem
convolution of the frame, conv1_m and conv1_o 7x7 stride-2 bias-free convolutions of one
channel each with weights of their own, all three summed before the stem's BatchNorm (STM's
Encoder_M). The trunk (``trunk``: the ResNet's names, so converted ImageNet weights fit it)
stops at the read level (res4 for ``read_level='stride16'``, as STM's; the last stage too for
'stride32'). Its own 3x3 key and value heads (STM's KV_M_r4) give the memory key
K^P [B, h, w, C/8] and value V^P [B, h, w, C/2] of Eqs. 1-2; the query key and value come
from the query encoder's heads (``usvjax/models/stpfnet.py``), so memory and query share
nothing but the similarity of Eq. 1.

Choices, with what STM's release does:

* **Initialisation.** STM leaves conv1_m and conv1_o at PyTorch's default Conv2d
  initialisation, kaiming_uniform with a = sqrt(5), i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in))
  with fan_in = 1 * 7 * 7: U(-1/7, 1/7). Here the same distribution
  (``variance_scaling(1/3, 'fan_in', 'uniform')``). The frame's conv1 and the stages are the
  ResNet's (ImageNet weights in STM: the config's ``init.target=
  'encoder,memory_network/trunk'`` loads one converted ResNet into the query encoder and
  this trunk alike).
* **The third channel.** STM's conv1_o takes the union of the *other objects'* masks:
  zeros for a single object, where conv1_o would have no effect and no gradient. A breast
  lesion is one object, so the other region is the background: conv1_o gets 1 - m. As
  conv1_o(1 - m) = conv1_o(1) - conv1_o(m), this reparametrises the mask's path (plus a
  constant the BatchNorm removes, except at the zero-padded border); it adds no information.
* **No values without TFM.** With ``value_channels`` 0 (STPFNet's ``temporal_read=False``)
  nothing reads the memory's values: there is no value head and the values are zeros; the
  key still serves the SFM as the previous frame's key.
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from usvjax.models.backbones import resnet

STAGE_OF_LEVEL = {'stride16': 3, 'stride32': 4}  # The ResNet stage whose output is the read.
# PyTorch's default Conv2d weights, kaiming_uniform(a=sqrt(5)): U(+-1/sqrt(fan_in)).
TORCH_DEFAULT_KERNEL_INIT = nn.initializers.variance_scaling(1 / 3, 'fan_in', 'uniform')


class MemoryEncoder(nn.Module):
  """STM's Encoder_M with its key and value heads (KV_M_r4); see the module docstring."""
  backbone: str = 'resnet50'
  width: float = 1.0
  read_level: str = 'stride16'
  key_channels: int = 128
  value_channels: int = 512  # 0: no value head (nothing reads the values).

  @nn.compact
  def __call__(self, image: jnp.ndarray, mask: jnp.ndarray, *, train: bool
               ) -> tuple[jnp.ndarray, jnp.ndarray]:
    """(K^P [B, h, w, key_channels], V^P [B, h, w, C/2]) of a frame and its mask.

    Args:
      image: [B, H, W, 3], ImageNet-normalised (``resnet.imagenet_normalize``).
      mask: [B, H, W, 1] in [0, 1].
      train: BatchNorm uses (and updates) batch statistics.
    """
    stem = max(1, int(round(64 * self.width)))  # The ResNet's conv1 width.

    def mask_conv(name: str) -> nn.Conv:
      return nn.Conv(stem, (7, 7), (2, 2), padding=((3, 3), (3, 3)), use_bias=False,
                     kernel_init=TORCH_DEFAULT_KERNEL_INIT, name=name)
    addend = mask_conv('conv1_m')(mask) + mask_conv('conv1_o')(1.0 - mask)
    trunk = resnet.ResNet(self.backbone, width=self.width,
                          stages=STAGE_OF_LEVEL[self.read_level], name='trunk')
    r = trunk(image, train=train, stem_addend=addend)[self.read_level]
    key = nn.Conv(self.key_channels, (3, 3), name='key_head')(r)
    if not self.value_channels:
      return key, jnp.zeros(r.shape[:-1] + (r.shape[-1] // 2,), r.dtype)
    return key, nn.Conv(self.value_channels, (3, 3), name='value_head')(r)
