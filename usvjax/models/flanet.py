"""FLA-Net (Lin et al., MICCAI 2023): frequency-based feature aggregation and a two-branch
decoder for breast-lesion segmentation in ultrasound video. This file holds the paper's
architecture and ``FLANet``, the model the registry names.

Three files: ``flanet_base.py``, what both architectures share (the clip and the outputs,
the encoder, which levels the FFA fuses and how, the "Basic" aggregation, the temporal
shift, streaming); this file, the paper's FFA and two-branch decoder (``design='paper'``,
the default: ``PaperFLANet``); ``flanet_released.py``, the released code's modules
(``design='released'``, the ``released_code`` config: ``ReleasedFLANet``). ``FLANet``
builds the one ``config.model.design`` names in its own scope, so the variables are that
architecture's, unnested (``usvjax/models/flanet_import.py`` fills the released one's).

**FFA module (Sec. 3.1).** For features f_t, f_{t-1}, f_{t-2} [h, w, c] of one level:
  x_k = [Re F(f_k), Im F(f_k)] (2c channels), F = 2-D real FFT over (h, w), 'ortho' norm;
  y_1 = CA([x_t, x_{t-1}]) * [x_t, x_{t-1}],  y_2 = CA([x_t, x_{t-2}]) * [x_t, x_{t-2}];
  z_i = F^-1(y_i[real channels] + j y_i[imaginary channels]) (2c channels each);
  o_t = BConv(z_1 + z_2) (c channels).
CA = LayerNorm over channels -> 1x1 conv (4c -> 4c / ``ffa_reduction``, 16 as in
squeeze-and-excitation) -> ReLU -> 1x1 conv (-> 4c) -> sigmoid, an attention value per
frequency and channel (the paper gives no pooling, so none is applied); BConv = 3x3 conv,
GroupNorm, ReLU. Our choices where the paper is silent: the real FFT (rfft2/irfft2), so
the spatial result is real; the layout [Re x_t, Im x_t, Re x_{t-1}, Im x_{t-1}] of a group,
split back as its Re and Im halves; the LayerNorm as the "feature normalisation".

**Two-branch decoder (Sec. 3.2).** Two U-Net decoders of four blocks (upsample x2, concat
the skip, two 3x3 conv-BN-ReLU; widths ``decoder_channels``), from stride 32 to stride 2.
The localisation branch predicts H_t from its last block d1l (1x1 conv, upsampling,
sigmoid). The segmentation output is BConv([up(d2s + d2l), d1s + d1l]) -> 1x1 conv ->
upsampling, where d1, d2 are the last two blocks (the paper adds the pairs and passes "the
addition result" into a BConv; as d2 has half the resolution, it is upsampled and
concatenated with d1).

**Ablations (Table 3).** ``aggregation='concat'`` replaces every FFA with the "Basic"
concatenation of the three frames' features and a 1x1 conv; ``localization=False`` drops
the localisation branch (segmentation from d1s, d2s only); the contrastive loss is
``config.task.contrastive_weight``.
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from usvjax.errors import ConfigError
from usvjax.models import flanet_base
from usvjax.models import layers
from usvjax.models.flanet_released import ReleasedFLANet


class BConv(nn.Module):
  """3x3 convolution, GroupNorm, ReLU (the paper's "BConv")."""
  features: int
  groups: int = 32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    x = nn.Conv(self.features, (3, 3), name='conv')(x)
    x = nn.GroupNorm(num_groups=flanet_base.group_count(self.features, self.groups),
                     name='norm')(x)
    return nn.relu(x)


class ChannelAttention(nn.Module):
  """CA(x) = sigmoid(conv(relu(conv(LayerNorm(x))))), 1x1 convs, [..., C] -> [..., C]."""
  reduction: int = 16

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    channels = x.shape[-1]
    y = nn.LayerNorm(name='norm')(x)
    y = nn.relu(nn.Dense(max(1, channels // self.reduction), name='conv1')(y))
    return nn.sigmoid(nn.Dense(channels, name='conv2')(y))


def to_spectrum(x: jnp.ndarray) -> jnp.ndarray:
  """[B, h, w, c] real -> [B, h, w//2+1, 2c] = [Re, Im] of the 2-D real FFT over (h, w)."""
  f = jnp.fft.rfft2(x.astype(jnp.float32), axes=(1, 2), norm='ortho')  # No bfloat16 FFT.
  return jnp.concatenate([f.real, f.imag], axis=-1)


def from_spectrum(y: jnp.ndarray, width: int) -> jnp.ndarray:
  """Inverse of ``to_spectrum``: [B, h, w//2+1, 2c] ([Re, Im] halves) -> [B, h, width, c]."""
  real, imag = jnp.split(y, 2, axis=-1)
  return jnp.fft.irfft2(real + 1j * imag, s=(y.shape[1], width), axes=(1, 2), norm='ortho')


class FFA(nn.Module):
  """Frequency-based feature aggregation of f_t with f_{t-1} and f_{t-2}: -> [B, h, w, c]."""
  reduction: int = 16
  groups: int = 32

  @nn.compact
  def __call__(self, current: jnp.ndarray, previous: jnp.ndarray,
               before_previous: jnp.ndarray) -> jnp.ndarray:
    width, channels = current.shape[2], current.shape[-1]
    x_t = to_spectrum(current)
    z = 0.0
    for i, other in enumerate((previous, before_previous), start=1):
      group = jnp.concatenate([x_t, to_spectrum(other)], axis=-1)  # [Re_t, Im_t, Re_k, Im_k]
      y = ChannelAttention(self.reduction, name=f'attention{i}')(group) * group
      re_t, im_t, re_k, im_k = jnp.split(y, 4, axis=-1)
      z = z + from_spectrum(jnp.concatenate([re_t, re_k, im_t, im_k], axis=-1), width)
    return BConv(channels, self.groups, name='bconv')(z)


class PaperFLANet(flanet_base.FLANetBase):
  """The paper's FLA-Net: ``FFA`` at the FFA levels and the two-branch decoder."""
  DESIGN = 'paper'
  DECODER_BLOCKS = 4
  FREQUENCY_MODULE = FFA

  def setup(self):
    super().setup()
    self.segmentation = layers.UNetDecoder(self.decoder_channels)
    self.fuse_last = BConv(self.decoder_channels[-1], self.groups)
    self.mask_head = nn.Conv(1, (1, 1))
    if self.localization:
      self.localisation = layers.UNetDecoder(self.decoder_channels)
      self.heatmap_head = nn.Conv(1, (1, 1))

  def _outputs(self, features: dict, fused: dict, size: tuple[int, int], train: bool) -> dict:
    """The paper's two-branch decoder: BConv([up(d2s + d2l), d1s + d1l]) -> 1x1 conv."""
    del fused  # o_t is in ``features`` already; the paper's heads read nothing else.
    seg = self.segmentation(features, train=train)
    d1, d2 = seg[-1], seg[-2]
    out = {}
    if self.localization:
      loc = self.localisation(features, train=train)
      d1, d2 = d1 + loc[-1], d2 + loc[-2]
      out['heatmap'] = nn.sigmoid(flanet_base.upsample(self.heatmap_head(loc[-1]), size))
    fused_last = jnp.concatenate([flanet_base.upsample(d2, d1.shape[1:3]), d1], axis=-1)
    out['logits'] = flanet_base.upsample(self.mask_head(self.fuse_last(fused_last)), size)
    return out


ARCHITECTURES: dict[str, type[flanet_base.FLANetBase]] = {
    a.DESIGN: a for a in (PaperFLANet, ReleasedFLANet)}


class FLANet(flanet_base.FLANetOptions):
  """FLA-Net as ``config.model`` builds it: ``design`` ('paper' or 'released') picks the
  architecture (``ARCHITECTURES``), which gets every other field and shares this module's
  scope, so the parameter tree is that architecture's own; see the module docstrings."""
  design: str = 'paper'

  def setup(self):
    if self.design not in ARCHITECTURES:
      raise ConfigError(f'config.model.design={self.design!r}: use '
                        f'{" or ".join(map(repr, ARCHITECTURES))}.')
    options = {name: getattr(self, name) for name in flanet_base.OPTIONS}
    self.architecture = ARCHITECTURES[self.design](**options)
    nn.share_scope(self, self.architecture)

  def __call__(self, batch: dict[str, jnp.ndarray], *, train: bool) -> dict[str, jnp.ndarray]:
    return self.architecture(batch, train=train)

  def start(self, frame: jnp.ndarray, mask: jnp.ndarray | None = None
            ) -> tuple[dict, jnp.ndarray]:
    """Streaming: the first frame (``FLANetBase.start``)."""
    return self.architecture.start(frame, mask)

  def step(self, state: dict, frame: jnp.ndarray) -> tuple[dict, jnp.ndarray]:
    """Streaming: the next frame (``FLANetBase.step``)."""
    return self.architecture.step(state, frame)
