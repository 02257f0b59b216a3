"""Streaming segmentation gives the clip forward pass's outputs, frame for frame, from a
video's first frame on, for several videos advanced together, for every video segmentation
model (the U-Net through ``streaming.ClipWindow``); and every frame the clip forward pass
reads changes its output."""
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import stpfnet as stpfnet_config
from usvjax import models
from usvjax.core import streaming

RELEASED_CODE_FFA = dict(ffa_levels=('stride16',), ffa_combine='add', temporal_shift=0.125)


def _changes_output(forward, clip: np.ndarray, index: int) -> bool:
  """Whether noise on frame ``index`` of ``clip`` [B, T, ...] changes ``forward(clip)`` at
  all: a frame the model does not read leaves it bit for bit (a weak coupling at
  initialisation, such as DSANet's t-2 through its memory branch, still shows)."""
  noisy = clip.copy()
  noisy[:, index] += np.random.default_rng(1).normal(0, 0.3, clip[:, 0].shape)
  return not np.array_equal(forward(noisy), forward(clip))


# (config, variant, model overrides, whether frames t-2 and t-1 change the output).
# The released FLA-Net's frequency module outputs the same map for every input (see
# usvjax/models/flanet.py), so only frame t reaches its output, as in the U-Net's.
MODELS = [('flanet', 'tiny', {}, True), ('flanet', 'tiny', RELEASED_CODE_FFA, True),
          ('flanet', 'released_code,tiny', {}, False), ('dsanet', 'tiny', {}, True),
          ('unet', 'tiny', {}, False)]


@pytest.mark.parametrize('name, variant, overrides, reads_past', MODELS)
def test_stream_equals_the_clip_forward_pass(name, variant, overrides, reads_past):
  """Step t of the stream equals the clip forward pass of [t-2, t-1, t] (frame 0 repeated
  before the video starts); frame t changes the output, and so do t-2 and t-1 for a model
  that reads them."""
  config = importlib.import_module(f'configs.{name}').get_config(variant)
  if name != 'unet':
    config.model.update(backbone='resnet18', **overrides)
  model = models.create_model(config.model)
  rng = np.random.default_rng(0)
  size, frames_in_video = config.input.image_size, 5
  video = rng.random((frames_in_video, 2, size, size, 1), dtype=np.float32)  # 2 videos.
  clip_of = lambda t: np.stack([video[max(t - k, 0)] for k in (2, 1, 0)], axis=1)  # pylint: disable=unnecessary-lambda-assignment
  variables = jax.jit(lambda: model.init(jax.random.key(0), {'frames': clip_of(0)},
                                         train=False))()
  forward = jax.jit(lambda clip: jax.nn.sigmoid(
      model.apply(variables, {'frames': clip}, train=False)['logits']))
  stream = streaming.make_stream(model, variables, config.input.clip_length,
                                 capabilities=models.capabilities(config.model))
  assert isinstance(stream, streaming.ClipWindow if name == 'unet' else streaming.StateStream)
  for t in range(frames_in_video):
    streamed = stream.start(video[0], None) if t == 0 else stream.step(video[t])
    np.testing.assert_allclose(streamed, forward(clip_of(t)), rtol=1e-4, atol=1e-5,
                               err_msg=f'frame {t}')
  changes = [_changes_output(forward, clip_of(4), k) for k in range(3)]
  assert changes == [reads_past, reads_past, True]


@pytest.mark.parametrize('memory_encoder', ['stm', 'shared'])
def test_stpfnet_stream_equals_the_clip_forward_pass(memory_encoder):
  """STPFNet from frame 0's given mask: step t equals the prediction of frame t by the clip
  forward pass (training's unrolled loop) over frames 0..t, in eval mode, on a memory that
  has to drop frames; every frame and the given mask change the last prediction; with STM's
  memory encoder and with the shared one."""
  config = stpfnet_config.get_config('tiny')
  config.model.update(memory_size=2, memory_every=2, memory_encoder=memory_encoder)
  model = models.create_model(config.model)
  rng = np.random.default_rng(0)
  t, size = 5, 32
  masks = np.zeros((2, t, size, size, 1), np.float32)
  masks[:, :, 6:20, 8:26] = 1.0
  batch = {'frames': rng.random((2, t, size, size, 1), dtype=np.float32), 'masks': masks}
  variables = jax.jit(lambda: model.init(jax.random.key(0), batch, train=False))()

  @jax.jit
  def forward(frames, first_mask):
    clip = {'frames': frames, 'masks': jnp.concatenate(
        [first_mask[:, None], jnp.zeros_like(frames[:, 1:])], axis=1)}  # Only frame 0's read.
    out = model.apply(variables, clip, train=False)
    return jax.nn.sigmoid(jnp.concatenate([out['aux_logits'], out['logits'][:, None]], 1))

  clip = np.asarray(forward(batch['frames'], masks[:, 0]))
  stream = streaming.make_stream(model, variables, config.input.clip_length,
                                 capabilities=models.capabilities(config.model))
  assert isinstance(stream, streaming.StateStream)
  np.testing.assert_array_equal(stream.start(batch['frames'][:, 0], masks[:, 0]), masks[:, 0])
  for k in range(1, t):
    np.testing.assert_allclose(stream.step(batch['frames'][:, k]), clip[:, k - 1], rtol=1e-4,
                               atol=1e-5, err_msg=f'frame {k}')
  def last(frames):
    return forward(frames, masks[:, 0])[:, -1]
  assert all(_changes_output(last, batch['frames'], k) for k in range(t))
  shifted = np.roll(masks[:, 0], 6, axis=2)
  assert not np.allclose(forward(batch['frames'], shifted)[:, -1], clip[:, -1], atol=1e-5)


@pytest.mark.parametrize('name, stream_type', [('flanet', streaming.ClipWindow),
                                               ('stpfnet', streaming.StateStream)])
def test_a_clip_window_is_refused_to_a_model_given_the_first_mask(name, stream_type):
  """``clip_window`` (experiments/benchmark_stream.py) runs a streaming model on a window of
  clips, but a model that propagates the first mask (its declared ``needs_first_mask``)
  has no clip without that mask: it keeps its own stream."""
  config = importlib.import_module(f'configs.{name}').get_config('tiny')
  stream = streaming.make_stream(models.create_model(config.model), {}, 3, clip_window=True,
                                 capabilities=models.capabilities(config.model))
  assert isinstance(stream, stream_type)
