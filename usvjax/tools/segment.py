"""Segmenting one video file or folder of frames with a trained checkpoint, streaming
(``usvjax.core.streaming``), and writing masks, an overlay video and a latency log
(``experiments/segment_video.py`` is the command).
"""
from __future__ import annotations

import csv
import itertools
import os
import time
from collections.abc import Iterator
from typing import NamedTuple

import cv2
import jax
import ml_collections
import numpy as np
import tensorflow as tf

from input_pipeline import preprocess
from input_pipeline.builders import common as data_common
from input_pipeline.builders import video_table
from usvjax.core import run as run_lib
from usvjax.core import streaming
from usvjax.errors import ConfigError
from usvjax.reporting import plots


def _to_model(frame: np.ndarray, config) -> np.ndarray:
  """uint8 RGB [H, W, 3] -> float32 [1, S, S, C], exactly as the input pipeline does."""
  return preprocess.frames_to_model(tf.constant(frame[None]), config.input.image_size,
                                  config.input.channels).numpy()


def _first_mask(path: str, frame: np.ndarray, size: int) -> np.ndarray:
  mask = data_common.read_mask(path, frame.shape, threshold=0).astype(np.float32)  # Lesion > 0.
  return cv2.resize(mask, (size, size), interpolation=cv2.INTER_NEAREST)[None, ..., None]


def _frame_name(video: str, index: int) -> str:
  """The name (without extension) of frame ``index`` of a folder of frames, else its index."""
  if os.path.isdir(video):
    return os.path.splitext(data_common.list_images(video)[index])[0]
  return f'{index:05d}'


class Segmented(NamedTuple):
  num_frames: int
  frames_per_second: float  # Over the frames after the first two (compilation).
  step: int  # The checkpoint's step.


def resolve(config: ml_collections.ConfigDict) -> run_lib.Run:
  """The run that segments a video for the run ``config``: on one local device, without
  data (a video needs no dataset)."""
  return run_lib.resolve(config, data=False, devices=jax.local_devices()[:1])


def _frames_from(video: str, first_frame: int) -> tuple[Iterator[np.ndarray], float]:
  """The frames of ``video`` from index ``first_frame`` on, and its frame rate."""
  frames, fps = video_table.iter_video(video)
  if first_frame < 0:
    raise ConfigError(f'--first_frame={first_frame} must be >= 0.')
  skipped = sum(1 for _ in itertools.islice(frames, first_frame))
  if skipped < first_frame:
    raise ConfigError(f'--first_frame={first_frame} but {video!r} has {skipped} frames: '
                      f'give a frame index below {skipped}.')
  return frames, fps


def segment_video(run: run_lib.Run, workdir: str, which: str, video: str,
                  first_mask: str, output_dir: str, first_frame: int = 0) -> Segmented:
  """Segments ``video`` with checkpoint ``which`` of ``workdir`` from frame ``first_frame``
  on (the traced frame ``first_mask`` belongs to; earlier frames are not segmented) and
  writes to ``output_dir``: ``masks/<frame>.png`` (0/255 at the video's resolution, named
  after the source frame of a folder, else ``<index:05d>``; the first is the given mask for
  a propagating model), ``overlay.mp4`` (predicted contours in red) and ``latency.csv``
  (seconds per frame, preprocessing included). ``run`` comes from ``resolve``."""
  config, model = run.config, run.model
  frames, fps = _frames_from(video, first_frame)
  first = next(frames, None)
  if first is None:
    raise ConfigError(f'{video!r} has no frame {first_frame}: give a smaller --first_frame.')
  size = config.input.image_size
  if run.capabilities.needs_first_mask and not first_mask:
    raise ConfigError(f'{config.model.name} propagates the first frame\'s mask: pass '
                      '--first_mask=PATH (a PNG the size of the frames, lesion > 0).')
  mask = (_first_mask(first_mask, first, size) if first_mask
          else np.zeros((1, size, size, 1), np.float32))
  variables, step = run.restore(workdir, which)
  stream = streaming.make_stream(model, variables, config.input.clip_length,
                                 capabilities=run.capabilities)
  os.makedirs(os.path.join(output_dir, 'masks'), exist_ok=True)
  height, width = first.shape[:2]
  writer = cv2.VideoWriter(os.path.join(output_dir, 'overlay.mp4'),
                           cv2.VideoWriter_fourcc(*'mp4v'), fps or 25.0, (width, height))
  latencies = []
  try:
    for index, frame in enumerate(itertools.chain([first], frames), start=first_frame):
      if frame.shape != first.shape:
        raise data_common.DatasetError(
            f'frame {index} of {video!r} is {frame.shape[1]}x{frame.shape[0]}, frame '
            f'{first_frame} is {width}x{height}: a video\'s frames must all have one size.')
      tick = time.perf_counter()
      x = _to_model(frame, config)
      probs = stream.start(x, mask) if index == first_frame else stream.step(x)
      latencies.append(time.perf_counter() - tick)
      prob = cv2.resize(probs[0, ..., 0], (width, height), interpolation=cv2.INTER_LINEAR)
      binary = (prob > config.task.threshold).astype(np.uint8) * 255
      cv2.imwrite(os.path.join(output_dir, 'masks', f'{_frame_name(video, index)}.png'), binary)
      image = plots.overlay(frame / 255.0, np.zeros_like(prob), prob,
                            config.task.threshold, min_size=0)
      writer.write(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
  finally:
    writer.release()
  with open(os.path.join(output_dir, 'latency.csv'), 'w', newline='') as f:
    rows = csv.writer(f)
    rows.writerow(['frame', 'seconds'])
    rows.writerows(enumerate(latencies, start=first_frame))
  steady = latencies[2:] or latencies
  return Segmented(len(latencies), len(steady) / sum(steady), step)
