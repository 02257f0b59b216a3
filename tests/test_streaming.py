"""Streaming segmentation gives the clip forward pass's outputs, frame for frame, from a
video's first frame on, for several videos advanced together."""
import importlib

import jax
import numpy as np
import pytest

from usvjax import models
from usvjax import streaming

RELEASED_CODE_FFA = dict(ffa_levels=('stride16',), ffa_combine='add', temporal_shift=0.125)


@pytest.mark.parametrize('name, overrides', [('flanet', {}), ('flanet', RELEASED_CODE_FFA),
                                             ('dsanet', {})])
def test_stream_equals_the_clip_forward_pass(name, overrides):
  config = importlib.import_module(f'configs.{name}').get_config('tiny')
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
  stream = streaming.make_stream(model, variables, config.input.clip_length)
  assert isinstance(stream, streaming.StateStream)
  for t in range(frames_in_video):
    streamed = stream.start(video[0], None) if t == 0 else stream.step(video[t])
    np.testing.assert_allclose(streamed, forward(clip_of(t)), rtol=1e-4, atol=1e-5,
                               err_msg=f'frame {t}')
