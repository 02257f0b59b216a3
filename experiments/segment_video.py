r"""Segments one video, frame by frame, with a trained segmentation checkpoint.

  python -m experiments.segment_video --config=configs/stpfnet.py:demo --workdir=runs/stpf \
      --video=PATH [--first_mask=MASK.png] [--output_dir=DIR] [--checkpoint=best]

``--video`` is a video file (anything OpenCV decodes: .mp4, .avi, ...) or a folder of
frames (natural order: frame2 before frame10). Frames are read and segmented one at a time
(``usvjax.streaming``): STPFNet carries its bounded memory from frame to frame and needs
the first frame's mask (``--first_mask``, a PNG the size of the frames, lesion > 0); clip
models (U-Net, FLA-Net, DSANet) keep the last clip_length frames.

Writes to ``--output_dir`` (default WORKDIR/segment_<video name>): ``masks/<frame>.png``
(0/255 at the video's resolution), ``overlay.mp4`` (predicted contour in red), and
``latency.csv`` (seconds per frame; the first frames include compilation). Prints the
frames per second after the first two frames.
"""
from __future__ import annotations

import csv
import itertools
import os
import time

import cv2
import jax
import numpy as np
import tensorflow as tf
from absl import app
from absl import flags
from ml_collections import config_flags

from experiments import common
from input_pipeline import pipeline
from input_pipeline.builders import common as data_common
from input_pipeline.builders import video_table
from usvjax import evaluate
from usvjax import models
from usvjax import parallel
from usvjax import plots
from usvjax import streaming

CONFIG = config_flags.DEFINE_config_file('config', None, 'Config of the run.', lock_config=True)
WORKDIR = flags.DEFINE_string('workdir', None, 'The run directory (holds checkpoints/).')
CHECKPOINT = flags.DEFINE_string('checkpoint', 'best', "'best', 'latest' or a step.")
VIDEO = flags.DEFINE_string('video', None, 'A video file or a folder of frames.')
FIRST_MASK = flags.DEFINE_string('first_mask', '', "The first frame's mask (PNG); needed "
                                 'by STPFNet.')
OUTPUT_DIR = flags.DEFINE_string('output_dir', '', 'Default: WORKDIR/segment_<video name>.')
flags.mark_flags_as_required(['config', 'workdir', 'video'])


def _to_model(frame: np.ndarray, config) -> np.ndarray:
  """uint8 RGB [H, W, 3] -> float32 [1, S, S, C], exactly as the input pipeline does."""
  return pipeline.frames_to_model(tf.constant(frame[None]), config.input.image_size,
                                  config.input.channels).numpy()


def _first_mask(path: str, frame: np.ndarray, size: int) -> np.ndarray:
  mask = data_common.read_mask(path, frame.shape).astype(np.float32)
  return cv2.resize(mask, (size, size), interpolation=cv2.INTER_NEAREST)[None, ..., None]


def segment(config, workdir: str, which: str, video: str, first_mask: str,
            output_dir: str) -> float:
  """Segments ``video`` and writes the outputs (module docstring); returns frames/s."""
  model = models.create_model(config.model)
  frames, fps = video_table.iter_video(video)
  first = next(frames)
  size = config.input.image_size
  if streaming.is_streaming(model) and not first_mask:
    raise ValueError(f'{config.model.name} propagates the first frame\'s mask: pass '
                     '--first_mask=PATH (a PNG the size of the frames, lesion > 0).')
  mask = (_first_mask(first_mask, first, size) if first_mask
          else np.zeros((1, size, size, 1), np.float32))
  x = _to_model(first, config)
  sample = {'frames': np.repeat(x[:, None], config.input.clip_length, axis=1),
            'masks': np.repeat(mask[:, None], config.input.clip_length, axis=1),
            'valid': np.ones((1, config.input.clip_length), bool)}
  mesh = parallel.create_mesh(jax.local_devices()[:1])
  variables, step = evaluate.restore_checkpoint(config, workdir, which, model, sample, mesh)
  stream = streaming.make_stream(model, variables, config.input.clip_length)
  os.makedirs(os.path.join(output_dir, 'masks'), exist_ok=True)
  height, width = first.shape[:2]
  writer = cv2.VideoWriter(os.path.join(output_dir, 'overlay.mp4'),
                           cv2.VideoWriter_fourcc(*'mp4v'), fps or 25.0, (width, height))
  latencies = []
  try:
    for index, frame in enumerate(itertools.chain([first], frames)):
      tick = time.perf_counter()
      x = _to_model(frame, config)
      probs = stream.start(x, mask) if index == 0 else stream.step(x)
      latencies.append(time.perf_counter() - tick)
      prob = cv2.resize(probs[0, ..., 0], (width, height), interpolation=cv2.INTER_LINEAR)
      binary = (prob > config.task.threshold).astype(np.uint8) * 255
      cv2.imwrite(os.path.join(output_dir, 'masks', f'{index:05d}.png'), binary)
      image = plots.overlay(frame / 255.0, np.zeros_like(prob), prob,
                            config.task.threshold, min_size=0)
      writer.write(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
  finally:
    writer.release()
  with open(os.path.join(output_dir, 'latency.csv'), 'w', newline='') as f:
    rows = csv.writer(f)
    rows.writerow(['frame', 'seconds'])
    rows.writerows(enumerate(latencies))
  steady = latencies[2:] or latencies
  print(f'checkpoint step {step}: {len(latencies)} frames segmented, '
        f'{len(steady) / sum(steady):.2f} frames/s after the first two; wrote {output_dir}')
  return len(steady) / sum(steady)


def main(argv):
  del argv
  common.start_processes()
  name = os.path.splitext(os.path.basename(os.path.normpath(VIDEO.value)))[0]
  output_dir = OUTPUT_DIR.value or os.path.join(WORKDIR.value, f'segment_{name}')
  try:
    segment(CONFIG.value, WORKDIR.value, CHECKPOINT.value, VIDEO.value, FIRST_MASK.value,
            output_dir)
  except common.USER_ERRORS as e:
    common.fail(e)


if __name__ == '__main__':
  app.run(main, flags_parser=common.parse_flags)
