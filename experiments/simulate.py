r"""Looks at and measures the B-mode simulator.

  python -m experiments.simulate [--out=docs/synthetic_grid.png] [--videos=6]

Writes a grid of simulated frames (rows: videos, benign first; green contours benign,
red malignant), prints the simulator's speed in frames/s at 128x128 and 352x352, and
checks that the class is not given away by brightness: a logistic regression on each
video's mean brightness (fit on one set of videos, scored on another) should be near
chance (AUC ~ 0.5).
"""
import time

import cv2
import numpy as np
from absl import app
from absl import flags
from sklearn import linear_model
from sklearn import metrics

from input_pipeline import simulator

OUT = flags.DEFINE_string('out', 'docs/synthetic_grid.png', 'Grid PNG to write.')
VIDEOS = flags.DEFINE_integer('videos', 6, 'Videos in the grid (half benign, half malignant).')
SIZE = flags.DEFINE_integer('size', 160, 'Frame size in the grid.')


def speed(size: int, num_videos: int = 8) -> float:
  sim = simulator.Simulator(simulator.SimulatorConfig(height=size, width=size))
  start, frames = time.perf_counter(), 0
  for index in range(num_videos):
    frames += len(sim.video(1, index).frames)
  return frames / (time.perf_counter() - start)


def grid(num_videos: int, size: int, frames_per_video: int = 4) -> np.ndarray:
  sim = simulator.Simulator(simulator.SimulatorConfig(height=size, width=size, min_frames=12,
                                                      max_frames=12))
  by_label = {0: [], 1: []}
  index = 0
  while min(len(v) for v in by_label.values()) < num_videos // 2:
    video = sim.video(0, index)
    by_label[video.label].append(video)
    index += 1
  rows = []
  for video in by_label[0][:num_videos // 2] + by_label[1][:num_videos // 2]:
    color = (0, 200, 0) if video.label == 0 else (0, 0, 255)
    tiles = []
    for t in np.linspace(0, len(video.frames) - 1, frames_per_video).round().astype(int):
      tile = cv2.cvtColor(video.frames[t, ..., 0], cv2.COLOR_GRAY2BGR)
      contours, _ = cv2.findContours(video.masks[t, ..., 0], cv2.RETR_EXTERNAL,
                                     cv2.CHAIN_APPROX_NONE)
      cv2.drawContours(tile, contours, -1, color, 1)
      tiles.append(np.pad(tile, ((2, 2), (2, 2), (0, 0))))
    rows.append(np.concatenate(tiles, axis=1))
  return np.concatenate(rows, axis=0)


def brightness_auc(num_videos: int = 200, size: int = 96) -> float:
  """Test AUC of benign/malignant from per-video mean brightness alone."""
  sim = simulator.Simulator(simulator.SimulatorConfig(height=size, width=size))

  def features(seed):
    videos = [sim.video(seed, i) for i in range(num_videos)]
    return (np.array([[v.frames.mean()] for v in videos]), np.array([v.label for v in videos]))
  (x_train, y_train), (x_test, y_test) = features(0), features(1)
  model = linear_model.LogisticRegression().fit(x_train, y_train)
  return metrics.roc_auc_score(y_test, model.predict_proba(x_test)[:, 1])


def main(argv):
  del argv
  cv2.imwrite(OUT.value, grid(VIDEOS.value, SIZE.value))
  print(f'grid written to {OUT.value}')
  for size in (128, 352):
    print(f'simulator speed at {size}x{size}: {speed(size):.0f} frames/s (one CPU process)')
  print(f'benign vs malignant from mean brightness alone: test AUC {brightness_auc():.3f}')


if __name__ == '__main__':
  app.run(main)
