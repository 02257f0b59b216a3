"""Classification examples: frame (or cached feature) sequences sampled over a whole video.

Sequences are ``frames`` [n, H, W, C] (or cached per-frame ``features`` [n, D], see
``usvjax.runners.feature_cache``) sampled over the whole video, one frame in each of n equal
segments: frame i of n from a video of N frames is floor((i + u_i) N / n), in segment
[i N / n, (i + 1) N / n). In evaluation u_i = 1/2, the segment's centre, so the frames are
fixed, one is the middle frame, and the ends, where the lesion is often out of view, are
never favoured. In training u_i ~ U[0, 1) (TSN's segment-based sampling, Wang et al. 2016,
which TSM trains with): every pass over the data shows each video's frames anew, a draw
seeded by the run seed and the video's position in the (seeded, repeating) training stream,
so it is reproducible by seed, and a resumed run, which replays the stream and skips what
was trained, sees the same draws. ``evaluate --clips=K`` scores K fixed samplings, u_i =
(1/2 + k/K) mod 1 for k < K (``sampling_offsets``; set per pass as
``config.input.eval_offset``, 1/2 by default), and averages their
probabilities. It covers every classifier: CLMAN, the frame CNN of CNN_Aver / the CNN-LSTM
and the LSTM on cached features, and the video networks (TSM, C3D, R3D, TimeSformer).
CLMAN names no frame sampling for its classifier and Cui et al. extract their frames by
uniform sampling: random draws in training are our choice there (the same segments,
uniform in expectation); their evaluation frames stay the centres.
``input.sampling`` 'up_to' takes n = min(N, max_frames) (all frames of a short video);
'exact' takes n = max_frames (frames of a shorter video repeat: Cui et al.'s equal-frame
datasets). Sequences are padded to the
smallest length bucket (``input.length_buckets``) that holds the batch's longest one, with
``valid[B, T]`` marking real frames, so a step function compiles at most once per bucket.

This module declares the examples (no TensorFlow); ``sequence_streams`` makes them with
tf.data.
"""
from __future__ import annotations

from collections.abc import Mapping

import ml_collections
import numpy as np

from input_pipeline import spec as spec_lib
from usvjax.errors import ConfigError

SAMPLINGS = ('up_to', 'exact')


def sequence_key(features: Mapping | None) -> str:
  """What a sequence is made of: cached 'features' if the dataset has them, else 'frames'."""
  return 'features' if features is not None and 'features' in features else 'frames'


def check_input(input_config: ml_collections.ConfigDict) -> None:
  """Raises ``ConfigError`` for a sampling or length buckets that cannot work."""
  if max(input_config.length_buckets) < input_config.max_frames:
    raise ConfigError(f'config.input.length_buckets {list(input_config.length_buckets)} must '
                      f'include a bucket >= config.input.max_frames={input_config.max_frames}.')
  if input_config.sampling not in SAMPLINGS:
    raise ConfigError(f'config.input.sampling={input_config.sampling!r}: use one of '
                      f'{SAMPLINGS}.')


def sampling_offsets(clips: int) -> list[float]:
  """The segment offsets of ``evaluate --clips=K``'s K samplings: (1/2 + k/K) mod 1, an even
  grid over the segment that starts at the centre (K = 1: evaluation's own frames)."""
  return [(0.5 + k / clips) % 1.0 for k in range(clips)]


class Sequences(spec_lib.StreamsInModule):
  """The example source of video classification (``spec.ExampleSource``)."""

  STREAMS = 'input_pipeline.sequence_streams'

  def required_features(self, features: Mapping) -> tuple[str, ...]:
    return (sequence_key(features), 'label')

  def fields(self, config: ml_collections.ConfigDict, train: bool,
             features: Mapping | None) -> spec_lib.Spec:
    if sequence_key(features) == 'features':
      dim = features['features'].shape[-1]
      out = {'features': spec_lib.Field((None, dim), np.dtype(np.float32), time=True)}
    else:
      out = {'frames': spec_lib.image_field(config, None)}
    out['label'] = spec_lib.Field((), np.dtype(np.int64))
    return {**out, **spec_lib.common_fields(train, None)}
