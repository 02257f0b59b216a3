"""STPFNet (Tu et al.): space-time memory read, the previous mask as a spatial prior, and
multi-scale feature fusion, for breast-lesion segmentation in ultrasound video.

STPFNet is a semi-supervised video object segmenter: the first frame's mask is given and
every later frame is predicted from a memory of earlier frames and the previous prediction.
The model is written as a stream (fixed shapes, so each function compiles once):

* ``start(frame, mask)`` -> state: encodes frame 1 with its given mask into the memory;
* ``step(state, frame)`` -> (state, logits [B, H, W, 1]): predicts the next frame and
  writes it, with its predicted mask, into the memory;
* ``__call__(batch)`` (training, Sec. III-E): ``start`` on frame 1 of each clip with its
  ground truth, then ``step`` over frames 2..T in order, so frame 2's prediction feeds frame
  3's memory and prior. Outputs ``logits`` (frame T) and ``aux_logits`` [B, T-2, H, W, 1]
  (frames 2..T-1). Gradients flow through the soft predictions that feed later frames, as
  in STM's training. The clip forward pass and the stream run the same code, so they agree.

**Loss (Sec. III-E, Eqs. 10-12).** The paper names cross entropy on frames 2 and 3 and no
overlap term (no Dice or IoU): ``configs/stpfnet.py`` sets the shared mask-loss weights to
BCE 1, Dice 0, IoU 0, and ``aux_weight`` = 1 (frame 2's BCE beside frame 3's). Deviations:
Eq. 10 prints only the foreground term -sum g log p, read as the two-class cross entropy
(STM's loss; with one sigmoid output it is BCE); pixels are averaged, not summed (a constant
factor H*W that the learning rate absorbs).

**Encoder and BatchNorm statistics.** One ResNet-50 (``encoder``) encodes the query frames
(and, with ``memory_encoder='shared'``, the memory frames; STM's memory encoder has weights
and statistics of its own). The SFM's prior image P_m * C_f (Eq. 4) goes through the same
weights (Fig. 2 feeds both to "the network backbone") in a separate pass with *its own
BatchNorm statistics* (``prior_encoder``: the encoder's parameters, BatchNorm scale and bias
included, shared with ``nn.map_variables``; its own ``batch_stats``). In training, frames
are normalised by statistics of frames only (the frames of one time step) and prior images
by statistics of prior images only; each running average collects the one population it
normalises at inference. Our choice: a separate pass through shared statistics would still
mix masked, mostly black images into the frames' running averages, which would then match
neither population at inference. Pretrained weights (``init.target='encoder'``) set the
shared parameters and the frame statistics; the prior statistics start at (0, 1) and are
learned (training normalises with batch statistics).

**Read level.** r = the encoder's features at ``read_level``: 'stride16' (the default and the
paper config) is res4 (torchvision's layer3, C = 1024), where STM (the paper's baseline and
TFM) reads; the paper's "last layer" is read as the last layer of STM's encoder. 'stride32'
(C = 2048) is kept as an option. Key and value heads are 3x3 convs of r to C/8 and C/2
channels (128 and 512 at res4, as STM), resolution kept.

**Memory read (Eqs. 1-2, shared by TFM and SFM).** For a query key K^C [h*w, C/8] and a
memory of keys K^P [N*h*w, C/8] and values V^P [N*h*w, C/2]:
  f(K^C, K^P) = softmax_m(K^C K^P^T / sqrt(C/8)),   y = f(K^C, K^P) V^P,
the softmax running over all memory positions m. The printed softmax(exp(K^C (x) K^P)) is
read as STM's softmax of (scaled) dot products: the exp is the softmax's own. Positions of
unused memory slots are masked out, so each video of a batch reads only its own memory.

**TFM (Sec. III-B).** Read over the memory of past frames; a memory entry encodes the
frame *and its mask* m (given for frame 1, predicted probabilities after). The paper says
"the same operation" for past frames and is silent on the mask; ``memory_encoder`` picks:
'stm' (the default): STM's memory encoder (``stpfnet_memory.MemoryEncoder``): a ResNet of
its own, up to the read level, whose first convolution takes the frame, m and 1 - m, with
memory key and value heads of its own; the query encoder and its key and value heads as
below. 'shared' (before issue 41): one encoder serves query and memory, the memory key is
the frame's query key, and m enters only at the memory value head, which sees [r, m], m
averaged down to r's resolution (a frame is encoded once). In both, the query's own value
V^C is the query value head of r. The SFM's previous key K^p_{t-1} is the key the previous
frame was written into the memory with.

**Read output (STM).** As in STM, the decoder gets the read concatenated with the query's
own value: [X, V^C] (C channels), X the fused read below. Our choice: V^C joins after the
fusion, so y and z keep the paper's C/2 channels in Eqs. 6-9 and the baseline (no SFM, no
MSFF: X = y) is exactly STM's [y, V^C].

**Memory (bounded).** ``memory_size`` N >= 2 slots: slot 0 holds frame 1; the other N - 1
form a ring. Each new frame is written at the ring's head, and the head moves on only after
a frame whose number is a multiple of ``memory_every`` (a kept frame), so the ring holds the
previous frame and the latest kept frames that fit. The per-frame cost does not grow with
the video, and during training (clips of 3) frame 3 reads frames 1 and 2, as in the paper.

**SFM (Sec. III-C, Eqs. 3-5; ``spatial_fusion_read``).** Key K^p_{t-1}: the previous frame's
key. Value: V^p_{t-1} = theta(P_m * C_f) (Eq. 4): the current frame times the previous
frame's predicted mask, encoded by ``prior_encoder`` and a 3x3 value conv (C/2) of its
``read_level`` features. z = the read of K^C over that single-frame memory (Eq. 5).
``mask_prior=False`` (Table III without "*mask") encodes the current frame unmasked.

**MSFF (Sec. III-D, Eqs. 6-9).** y (TFM, C/2), z (SFM, C/2) and w, a 1x1 conv of the
encoder level ``fusion_level`` to C/8 channels, resized to r's resolution (Table III "+2",
"+3", "+4" = stride 8, 16, 32: the third last, second last and last layer of the ResNet-50,
so the paper's "+4" uses layer4 though the read is at res4). Each is pooled globally
(average and/or max, ``pools``), concatenated, and two linear layers (reduction
``msff_reduction``, ReLU, then a sigmoid: our choice, the paper names no squashing) give a
per-channel weight vector Y, Z, W (Eqs. 6-8). X = Y*y + Z*z + P(W*w) (Eq. 9), where P is a
1x1 conv from C/8 to C/2 channels: our way of making the channel counts agree.
``fusion='sum'`` (Table II without MSFF, "simply merge"): X = y + z.

**Decoder.** STM-style refinement with encoder skips: ``layers.UNetDecoder`` from [X, V^C]
at ``read_level`` with the current frame's finer features as skips (stride 8, 4 and 2 for a
read at stride 16: STM's r3, r2 and the stem), one block per entry of ``decoder_channels``,
a 1x1 conv and bilinear upsampling to the input size. (STM's own decoder has unnormalised
residual blocks and predicts at stride 4.)

**Padded frames.** The model takes no ``valid``: it is causal (frame t reads only earlier
frames), so frames padded at the end of a clip or video do not change the outputs of the
real ones, and the loss and metrics drop them by ``valid``. In training a padded frame
would still enter the BatchNorm batch of its time step, so short videos are better skipped
than padded when sampling training clips.

**Ablations (Tables II-III).** ``spatial_fusion`` (SFM on/off), ``fusion`` ('msff' or
'sum'), ``pools`` (avg, max), ``fusion_level`` ('' for no w), ``mask_prior``. Every row of
the paper's Table II keeps TFM (its baseline is STM); ``temporal_read=False`` drops it too
(no y: the model reads only the SFM prior, which it then needs), an ablation beyond the
paper's. Without TFM nothing reads the memory's values, so none are made (zeros in the
stream's state) and the memory value head does not exist.
"""
from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from usvjax.errors import ConfigError
from usvjax.models import layers
from usvjax.models import space_time_memory
from usvjax.models import stpfnet_memory
from usvjax.models.backbones import resnet

State = space_time_memory.State
LEVELS = ('stride2', 'stride4', 'stride8', 'stride16', 'stride32')  # The encoder's, fine first.
READ_LEVELS = ('stride16', 'stride32')
FUSION_LEVELS = ('', 'stride8', 'stride16', 'stride32')
POOLS = ('avg', 'max')
MEMORY_ENCODERS = ('stm', 'shared')


def _area_resize(x: jnp.ndarray, size: tuple[int, int]) -> jnp.ndarray:
  """[B, H, W, C] -> [B, *size, C], antialiased when shrinking."""
  return jax.image.resize(x, (x.shape[0],) + tuple(size) + (x.shape[-1],), 'linear')


class MSFF(nn.Module):
  """Eqs. 6-9: X = Y*y + Z*z + P(W*w); any branch may be None (left out), but not both
  of y and z."""
  pools: Sequence[str] = POOLS
  reduction: int = 16

  @nn.compact
  def __call__(self, y: jnp.ndarray | None, z: jnp.ndarray | None,
               w: jnp.ndarray | None) -> jnp.ndarray:
    x = sum(self.weights(v, name) * v for v, name in ((y, 'y'), (z, 'z')) if v is not None)
    if w is not None:
      x = x + nn.Conv(x.shape[-1], (1, 1), name='lift_w')(self.weights(w, 'w') * w)
    return x

  def weights(self, x: jnp.ndarray, name: str) -> jnp.ndarray:
    """Phi(avg(x) (+) max(x)): a weight in (0, 1) per channel, [B, 1, 1, C]."""
    pooled = {'avg': jnp.mean(x, axis=(1, 2)), 'max': jnp.max(x, axis=(1, 2))}
    descriptor = jnp.concatenate([pooled[p] for p in self.pools], axis=-1)
    channels = x.shape[-1]
    hidden = nn.relu(nn.Dense(max(1, channels // self.reduction), name=f'{name}_fc1')(descriptor))
    return nn.sigmoid(nn.Dense(channels, name=f'{name}_fc2')(hidden))[:, None, None, :]


class STPFNet(nn.Module):
  """STPFNet; see the module docstring for the fields and the stream functions."""
  backbone: str = 'resnet50'
  backbone_width: float = 1.0
  read_level: str = 'stride16'  # r: res4 as STM ('stride32' for the last stage).
  decoder_channels: Sequence[int] = (256, 128, 64)
  temporal_read: bool = True  # TFM; False: an ablation beyond the paper's (docstring).
  spatial_fusion: bool = True
  mask_prior: bool = True
  fusion: str = 'msff'  # 'msff' (Eqs. 6-9) or 'sum' (Table II without MSFF).
  pools: Sequence[str] = POOLS
  fusion_level: str = 'stride32'  # w's encoder level; '' for none.
  msff_reduction: int = 16
  memory_size: int = 5
  memory_every: int = 5
  memory_encoder: str = 'stm'  # STM's own memory encoder, or 'shared' (module docstring).

  def setup(self):
    self._check_fields()
    self.encoder = resnet.ResNet(self.backbone, width=self.backbone_width)
    channels = self._channels()
    self.key_head = nn.Conv(channels // 8, (3, 3))
    if self.memory_encoder == 'stm':
      self.memory_network = stpfnet_memory.MemoryEncoder(
          self.backbone, self.backbone_width, self.read_level, channels // 8,
          channels // 2 if self.temporal_read else 0)
    else:
      self.memory_value_head = nn.Conv(channels // 2, (3, 3))
    self.query_value_head = nn.Conv(channels // 2, (3, 3))
    if self.spatial_fusion:
      # The encoder's parameters with BatchNorm statistics of its own (module docstring).
      shared = nn.map_variables(resnet.ResNet, 'params', mutable=False,
                                trans_in_fn=lambda _: {'params': self.encoder.variables['params']})
      self.prior_encoder = shared(self.backbone, width=self.backbone_width)
      self.prior_value_head = nn.Conv(channels // 2, (3, 3))
    if self.fusion_level:
      self.w_head = nn.Conv(channels // 8, (1, 1))
    if self.fusion == 'msff':
      self.msff = MSFF(tuple(self.pools), self.msff_reduction)
    self.decoder = layers.UNetDecoder(self.decoder_channels)
    self.mask_head = nn.Conv(1, (1, 1))

  def _check_fields(self) -> None:
    if self.memory_encoder not in MEMORY_ENCODERS:
      raise ConfigError(f'config.model.memory_encoder={self.memory_encoder!r}: use one of '
                        f'{MEMORY_ENCODERS}.')
    if self.fusion not in ('msff', 'sum'):
      raise ConfigError(f"config.model.fusion={self.fusion!r}: use 'msff' or 'sum'.")
    if not (self.temporal_read or self.spatial_fusion):
      raise ConfigError('config.model.temporal_read=False and spatial_fusion=False: the '
                        'model would read nothing; keep at least one (TFM or SFM).')
    if self.read_level not in READ_LEVELS:
      raise ConfigError(f'config.model.read_level={self.read_level!r}: use one of '
                        f'{READ_LEVELS}.')
    if self.fusion_level not in FUSION_LEVELS:
      raise ConfigError(f'config.model.fusion_level={self.fusion_level!r}: use one of '
                        f'{FUSION_LEVELS}.')
    if not self.pools or set(self.pools) - set(POOLS):
      raise ConfigError(f'config.model.pools={tuple(self.pools)}: use a non-empty subset of '
                        f'{POOLS}.')
    if self.memory_size < 2 or self.memory_every < 1:
      raise ConfigError(f'config.model.memory_size={self.memory_size} must be >= 2 (the first '
                        f'and the previous frame) and memory_every={self.memory_every} >= 1.')
    if not 1 <= len(self.decoder_channels) <= len(self._skip_levels()):
      raise ConfigError(f'config.model.decoder_channels={tuple(self.decoder_channels)}: one '
                        f'width per decoder block, 1 to {len(self._skip_levels())} blocks (the '
                        f'encoder levels finer than read_level={self.read_level!r}).')

  def _channels(self) -> int:
    """C, the channels of the encoder at ``read_level`` (ResNet stage 3 or 4)."""
    expansion = 1 if self.backbone in ('resnet18', 'resnet34') else 4
    stage = {'stride16': 3, 'stride32': 4}[self.read_level]
    return max(1, int(round(64 * 2 ** (stage - 1) * self.backbone_width))) * expansion

  def _skip_levels(self) -> tuple[str, ...]:
    """The decoder's skip features, coarse to fine: the levels finer than the read."""
    return LEVELS[:LEVELS.index(self.read_level)][::-1]

  @staticmethod
  def _prepare(image: jnp.ndarray) -> jnp.ndarray:
    """[B, H, W, 1 or 3] in [0, 1] -> the ImageNet-normalised RGB encoders take."""
    x = jnp.broadcast_to(image, image.shape[:-1] + (3,)) if image.shape[-1] == 1 else image
    return resnet.imagenet_normalize(x)

  def _encode(self, encoder: nn.Module, image: jnp.ndarray, train: bool
              ) -> dict[str, jnp.ndarray]:
    return encoder(self._prepare(image), train=train)

  def _memory_entry(self, frame: jnp.ndarray, mask: jnp.ndarray, train: bool,
                    r: jnp.ndarray | None = None, key: jnp.ndarray | None = None
                    ) -> tuple[jnp.ndarray, jnp.ndarray]:
    """(K^P [B, h, w, C/8], V^P [B, h, w, C/2]) of a frame [B, H, W, C_in] and its mask
    [B, H, W, 1] written into the memory: STM's memory encoder of both, or ('shared') the
    frame's query key and the memory value head of [r, mask] (r, key: the query's)."""
    if self.memory_encoder == 'stm':
      return self.memory_network(self._prepare(frame), mask, train=train)
    if not self.temporal_read:  # Nothing reads the values (module docstring).
      return key, jnp.zeros(r.shape[:-1] + (self._channels() // 2,), r.dtype)
    return key, self.memory_value_head(
        jnp.concatenate([r, _area_resize(mask, r.shape[1:3])], axis=-1))

  def _decode(self, read: jnp.ndarray, encoded: dict[str, jnp.ndarray], train: bool
              ) -> jnp.ndarray:
    """The U-Net decoder from ``read`` at ``read_level`` up the finer encoder levels.

    ``layers.UNetDecoder`` starts at the key 'stride32' and takes its skips under the keys
    stride16, stride8, ...: the read and the skips are handed over under those keys.
    """
    names = LEVELS[::-1]
    features = dict(zip(names, [read] + [encoded[k] for k in self._skip_levels()]))
    return self.decoder(features, train=train)[-1]

  def spatial_fusion_read(self, frame: jnp.ndarray, prior: jnp.ndarray, query_key: jnp.ndarray,
                          previous_key: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    """SFM, Eqs. 3-5: z [B, h, w, C/2] from the current frame [B, H, W, C_in], the previous
    prediction ``prior`` [B, H, W, 1], and the current and previous keys [B, h, w, C/8].

    V^p_{t-1} = theta(P_m * C_f) (Eq. 4): the prior image (the frame itself without
    ``mask_prior``) through ``prior_encoder`` and the prior value head.
    """
    image = frame * prior if self.mask_prior else frame
    value = self.prior_value_head(
        self._encode(self.prior_encoder, image, train)[self.read_level])
    ones = jnp.ones(value.shape[:1] + (1,), bool)
    return space_time_memory.read(query_key, previous_key[:, None], value[:, None], ones)

  def start(self, frame: jnp.ndarray, mask: jnp.ndarray, train: bool = False
            ) -> tuple[State, None]:
    """The stream's state after frame 1 [B, H, W, C_in] with its given mask [B, H, W, 1],
    and no logits: frame 1's result is the given mask. (STM's form encodes frame 1 only
    as a memory frame.)"""
    if self.memory_encoder == 'stm':
      key, value = self._memory_entry(frame, mask, train)
    else:
      r = self._encode(self.encoder, frame, train)[self.read_level]
      key, value = self._memory_entry(frame, mask, train, r, self.key_head(r))
    b, n = frame.shape[0], self.memory_size
    empty = lambda x: jnp.zeros((b, n) + x.shape[1:], x.dtype)  # pylint: disable=unnecessary-lambda-assignment
    state = {'keys': empty(key), 'values': empty(value), 'valid': jnp.zeros((b, n), bool),
             'head': jnp.zeros((b,), jnp.int32), 'count': jnp.zeros((b,), jnp.int32)}
    return space_time_memory.remember(state, key, value, mask, self.memory_every), None

  def step(self, state: State, frame: jnp.ndarray, train: bool = False
           ) -> tuple[State, jnp.ndarray]:
    """Predicts the next frame [B, H, W, C_in]: (new state, logits [B, H, W, 1])."""
    encoded = self._encode(self.encoder, frame, train)
    r = encoded[self.read_level]
    key = self.key_head(r)
    y = (space_time_memory.read(key, state['keys'], state['values'], state['valid'])
         if self.temporal_read else None)
    z = (self.spatial_fusion_read(frame, state['previous_mask'], key, state['previous_key'],
                                  train) if self.spatial_fusion else None)
    w = (self.w_head(_area_resize(encoded[self.fusion_level], r.shape[1:3]))
         if self.fusion_level else None)
    if self.fusion == 'msff':
      x = self.msff(y, z, w)
    else:
      x = sum(v for v in (y, z) if v is not None)
    read = jnp.concatenate([x, self.query_value_head(r)], axis=-1)  # STM: [read, V^C].
    decoded = self._decode(read, encoded, train)
    logits = jax.image.resize(self.mask_head(decoded), frame.shape[:3] + (1,), 'bilinear')
    mask = nn.sigmoid(logits)
    memory_key, value = self._memory_entry(frame, mask, train, r, key)
    return space_time_memory.remember(state, memory_key, value, mask, self.memory_every), logits

  def __call__(self, batch: dict[str, jnp.ndarray], *, train: bool) -> dict[str, jnp.ndarray]:
    frames, masks = batch['frames'], batch['masks']
    if frames.shape[1] < 2:
      raise ConfigError(f'STPFNet needs clips of >= 2 frames (frame 1 with its mask, then the '
                        f'frames to predict); got {frames.shape[1]}: set '
                        'config.input.clip_length=3.')
    state, _ = self.start(frames[:, 0], masks[:, 0], train)
    predictions = []
    for t in range(1, frames.shape[1]):
      state, logits = self.step(state, frames[:, t], train)
      predictions.append(logits)
    outputs = {'logits': predictions[-1]}
    if len(predictions) > 1:
      outputs['aux_logits'] = jnp.stack(predictions[:-1], axis=1)
    return outputs
