r"""Per-frame latency of streaming segmentation as a video gets longer.

  python -m experiments.benchmark_stream --config=configs/stpfnet.py:demo \
      [--lengths=10,100,1000] [--batch_size=1]

Streams synthetic frames (random, at the config's input size; randomly initialised
weights: speed does not depend on them) through ``usvjax.core.streaming`` exactly as
``experiments/segment_video.py`` does, ``batch_size`` videos side by side, and prints for
each video length the median and 90th-percentile milliseconds per frame over the frames
after the first two (which include compilation), and frames/s. With STPFNet's bounded
memory the per-frame cost should not grow with the length; ``--clip_window`` times the
clip forward pass on the last frames instead of a model's own stream, for comparison.
"""
from __future__ import annotations

import time
from collections.abc import Iterator

import jax
import numpy as np
from absl import app
from absl import flags
from ml_collections import config_flags

from experiments import common
from usvjax import models
from usvjax.core import streaming

CONFIG = config_flags.DEFINE_config_file('config', None, 'Config to benchmark.',
                                         lock_config=True)
LENGTHS = flags.DEFINE_list('lengths', ['10', '100', '1000'], 'Video lengths in frames.')
BATCH_SIZE = flags.DEFINE_integer('batch_size', 1, 'Videos streamed side by side.')
CLIP_WINDOW = flags.DEFINE_bool('clip_window', False, 'Run the clip forward pass on the last '
                                'clip_length frames instead of the model\'s own stream (FLA-Net, '
                                'DSANet: three encoder passes per frame instead of one).')
flags.mark_flag_as_required('config')


def frame_latencies(stream, frames: Iterator[np.ndarray], mask: np.ndarray) -> list[float]:
  """Seconds per frame of streaming ``frames`` ([B, H, W, C] each; the first with ``mask``)."""
  times = []
  for t, frame in enumerate(frames):
    tick = time.perf_counter()
    probs = stream.start(frame, mask) if t == 0 else stream.step(frame)
    np.asarray(probs)  # Wait for the device.
    times.append(time.perf_counter() - tick)
  return times


def main(argv):
  del argv
  common.start_processes()
  config = CONFIG.value
  model = models.create_model(config.model)
  size, channels, clip = config.input.image_size, config.input.channels, config.input.clip_length
  b = BATCH_SIZE.value
  rng = np.random.default_rng(0)
  mask = np.zeros((b, size, size, 1), np.float32)
  mask[:, size // 4:size // 2, size // 4:size // 2] = 1.0
  sample = {'frames': np.zeros((b, clip, size, size, channels), np.float32),
            'masks': np.zeros((b, clip, size, size, 1), np.float32),
            'valid': np.ones((b, clip), bool)}
  variables = jax.jit(lambda: model.init(jax.random.key(0), sample, train=False))()
  mode = 'clip window' if CLIP_WINDOW.value else 'stream'
  print(f'{config.model.name} ({mode}) at {size}x{size}, batch {b}, {jax.devices()[0].platform}')
  print('| frames | ms/frame (median) | ms/frame (p90) | frames/s |')
  print('|---|---|---|---|')
  stream = streaming.make_stream(model, variables, clip,  # start() resets.
                                 capabilities=models.capabilities(config.model),
                                 clip_window=CLIP_WINDOW.value)
  for length in (int(n) for n in LENGTHS.value):
    frames = (rng.random((b, size, size, channels), dtype=np.float32) for _ in range(length))
    steady = frame_latencies(stream, frames, mask)[2:] or [float('nan')]
    median, p90 = np.median(steady), np.percentile(steady, 90)
    print(f'| {length} | {1e3 * median:.2f} | {1e3 * p90:.2f} | {b / median:.1f} |')


if __name__ == '__main__':
  app.run(main, flags_parser=common.parse_flags)
