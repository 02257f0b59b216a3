"""Video segmentation, host side: exact per-frame metrics of the task's evaluation outputs
(``usvjax.tasks.segmentation.SegmentationTask.eval_outputs``), its reports and pictures.

**Where frames are scored** (``config.input.eval_resolution``): the model sees square
``input.image_size`` frames, but a frame's lesion is scored at the frame's own stored
(native) size by default, ``'native'``, as the papers and reviewers do: the predicted
probability map is resized back to the stored frame's size (OpenCV bilinear, half-pixel
centres), thresholded there, and compared with the stored mask, read on the host from the
dataset (``StoredSplit``) by video id and frame index, so batching, padding and the number
of devices change nothing. With a pixel spacing stored for the video (a ``pixel_spacing_mm``
feature, (row, column) mm per pixel, (0, 0) when unknown: the segmentation layouts store it
from the folder's ``pixel_spacing.csv``, docs/data.md) boundary distances are also given in
mm. ``'model'`` scores the resized masks at the model's input size (the earlier
behaviour; thin structures lost by resizing then count as neither found nor missed). The
synthetic datasets use the same default ('native'; their frames are stored at 64 or 128
pixels).

Reports (``write_report``): metrics.json with per-video bootstrap 95% intervals of the
headline metrics (``metrics.segmentation.SegmentationEvaluator.confidence_intervals``), and
at its top a warning when nothing is predicted on more than half of the lesion frames (such
a model can still score a high ``mean_dice`` on a split with many lesion-free frames),
per_video.csv, and overlays of ``config.input.overlay_videos`` videos spread over the
ranking by Dice (best, median, worst for 3), each frame's Dice in its panel. ``export``
writes every scored frame's predicted mask as a PNG (``evaluate --export``).
"""
from __future__ import annotations

import os

import cv2
import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from input_pipeline import preprocess
from usvjax.errors import ConfigError
from usvjax.metrics import keys
from usvjax.metrics import segmentation as segmentation_metrics
from usvjax.metrics import statistics
from usvjax.reporting import plots
from usvjax.reporting import reports
from usvjax.tasks.stored_split import StoredSplit
from usvjax.tasks.stored_split import stored_split
from usvjax.tasks.video_keys import decode_key

EVAL_RESOLUTIONS = ('native', 'model')
OVERLAY_FRAMES = 6  # Frames per overlay figure, spread over the video.
PREDICTIONS_DIR = 'predicted_masks'


class SegmentationEvaluation:
  """Per-frame metrics for every valid example; per-video means in ``video_rows()``
  (an ``interfaces.Evaluation``).

  Made by the task at the model's resolution without pictures; ``use_split`` (called by
  ``evaluate.evaluate_split``) gives it the evaluated split's stored videos and the
  config's ``input.eval_resolution`` and ``input.overlay_videos``.
  """

  def __init__(self, threshold: float,
               nsd_tolerance_px: float = segmentation_metrics.NSD_TOLERANCE_PX,
               nsd_tolerance_mm: float = segmentation_metrics.NSD_TOLERANCE_MM):
    self.threshold = threshold
    self.metrics = segmentation_metrics.SegmentationEvaluator(threshold, nsd_tolerance_px,
                                                              nsd_tolerance_mm)
    self.resolution, self.overlay_videos = 'model', 0
    self.stored: StoredSplit | None = None
    self.display: tuple[int, int] | None = None  # Model mode: (image_size, channels).
    # {video: {frame index: PNG of ground truth + 2 x prediction at the scored size}}.
    self.labels: dict[str, dict[int, bytes]] = {}
    self.dice: dict[tuple[str, int], float] = {}

  def use_split(self, config: ml_collections.ConfigDict, builder: tfds.core.DatasetBuilder,
                split: str) -> None:
    """Scores ``split`` of ``builder`` as ``config.input`` says (module docstring)."""
    resolution = config.input.eval_resolution
    if resolution not in EVAL_RESOLUTIONS:
      raise ConfigError(f'config.input.eval_resolution={resolution!r}: use one of '
                        f'{EVAL_RESOLUTIONS}.')
    if config.dataset.folds.num:  # k-fold: the evaluated fold is part of train_split.
      split = config.dataset.train_split
    self.resolution, self.overlay_videos = resolution, config.input.overlay_videos
    self.stored = stored_split(builder, split)
    self.display = (config.input.image_size, config.input.channels)

  @property
  def rows(self) -> list[dict]:
    return self.metrics.rows

  def update(self, outputs: dict) -> None:
    """Adds the valid examples of one batch of ``SegmentationTask.eval_outputs``."""
    for i in np.flatnonzero(outputs['valid']):
      video, index = decode_key(outputs['video_key'][i]), int(outputs['frame_index'][i])
      prob, gt, spacing = np.asarray(outputs['probs'][i], np.float32), outputs['masks'][i], None
      if self.resolution == 'native':
        gt = self.stored.mask(video, index)
        # Clipped: a bilinear mix of values in [0, 1] may round just outside it.
        prob = np.clip(cv2.resize(prob, gt.shape[::-1], interpolation=cv2.INTER_LINEAR), 0, 1)
        spacing = self.stored.video(video).spacing
      row = self.metrics.update(prob, gt, spacing, video_id=video, frame_index=index)
      self.dice[video, index] = row['dice']
      label = (np.asarray(gt) > 0.5) + 2 * (prob > self.threshold)
      self.labels.setdefault(video, {})[index] = cv2.imencode('.png', label.astype(np.uint8))[1]

  def result(self) -> dict[str, float]:
    return {**self.metrics.result(), **self._hard_frame_metrics()}

  def _hard_frame_metrics(self) -> dict[str, float]:
    """Where the dataset flags hard frames (``hard_frame``: the synthetic videos'
    low-contrast episodes), the mean Dice over them (``hard_frame_dice``, with
    ``num_hard_frames``) and over the other scored frames (``other_frame_dice``)."""
    if self.stored is None or not self.dice:
      return {}
    flags = {key: self.stored.video(key[0]).hard for key in self.dice}
    if any(f is None for f in flags.values()):
      return {}
    hard = [d for key, d in self.dice.items() if flags[key][key[1]]]
    other = [d for key, d in self.dice.items() if not flags[key][key[1]]]
    if not hard:
      return {}
    return {'hard_frame_dice': float(np.mean(hard)), 'num_hard_frames': len(hard),
            'other_frame_dice': float(np.mean(other)) if other else float('nan')}

  def video_rows(self) -> list[dict]:
    """Per video: its frame and lesion-frame counts, the means of the frame metrics over
    its frames (``keys.SEGMENTATION_KEYS``) and over its lesion frames (``lesion_dice``,
    NaN without one), and the boundary metrics' means over its distance frames."""
    videos: dict[str, list[dict]] = {}
    for row in self.rows:
      videos.setdefault(row['video_id'], []).append(row)
    distances = keys.DISTANCE_KEYS + (
        keys.DISTANCE_MM_KEYS if self.metrics.with_spacing else ())
    return [{'video_id': v, 'scored_frames': len(rows),
             'num_lesion_frames': sum(r['lesion'] for r in rows),
             **{k: float(np.mean([r[k] for r in rows])) for k in keys.SEGMENTATION_KEYS},
             'lesion_dice': statistics.defined_mean([r['dice'] for r in rows if r['lesion']]),
             **{k: statistics.defined_mean([r[k] for r in rows]) for k in distances}}
            for v, rows in videos.items()]

  def paired_values(self) -> dict[str, dict]:
    """{'video_dice': {video: [its lesion Dice, its lesion frames]}} of the videos with a
    lesion frame: what a comparison's paired test resamples (``compare_report.paired_tests``;
    the headline ``lesion_dice`` is their lesion-frame-weighted mean)."""
    return {'video_dice': {r['video_id']: [r['lesion_dice'], r['num_lesion_frames']]
                           for r in self.video_rows() if r['num_lesion_frames']}}

  def warnings(self, metrics_: dict) -> list[str]:
    """The lines a report puts at its top: one when nothing is predicted on more than
    ``keys.EMPTY_PREDICTION_WARNING`` of the lesion frames."""
    missed = metrics_.get(keys.MISSED_KEY, float('nan'))
    if not missed > keys.EMPTY_PREDICTION_WARNING:
      return []
    return [f'predictions are empty on {missed:.1%} of the {metrics_["num_lesion_frames"]} '
            f'lesion frames: this model mostly predicts nothing; read lesion_dice '
            f'({metrics_["lesion_dice"]:.3f}), not mean_dice ({metrics_["mean_dice"]:.3f}).']

  def write_report(self, directory: str, metrics_: dict,
                   class_names: list[str] | None = None) -> None:
    """metrics.json (with the bootstrap intervals, the scored resolution and, first, any
    ``warnings``), per_video.csv and one overlay PNG per shown video."""
    del class_names
    reports.write_tables(directory, dict(metrics_, **self.metrics.confidence_intervals(),
                                         eval_resolution=self.resolution), self.video_rows(),
                         self.warnings(metrics_))
    figures = self._overlay_figures()
    plots.overlays({f'{tag}_{video}': image for tag, video, image in figures}, directory)

  def pictures(self) -> dict[str, np.ndarray]:
    """{'best' | 'median' | 'worst' | 'rank<r>': uint8 RGB overlay figure} (TensorBoard)."""
    return {tag: image for tag, _, image in self._overlay_figures()}

  def _overlay_figures(self) -> list[tuple[str, str, np.ndarray]]:
    """(tag, video, figure) of ``overlay_videos`` videos spread over the ranking by Dice."""
    if self.stored is None or not self.overlay_videos or not self.rows:
      return []
    ranked = sorted(self.video_rows(), key=lambda r: -r['dice'])
    shown = ranked_positions(len(ranked), self.overlay_videos)
    wanted = {}
    for position in shown:
      indices = sorted(self.labels[ranked[position]['video_id']])
      picks = np.unique(np.linspace(0, len(indices) - 1, OVERLAY_FRAMES).round().astype(int))
      wanted[ranked[position]['video_id']] = [indices[p] for p in picks]
    frames = self.stored.frames(wanted)
    figures = []
    for position, tag in shown.items():
      row = ranked[position]
      video = row['video_id']
      panels = []
      for index in wanted[video]:
        frame = frames[video][index]
        if self.resolution == 'model':
          frame = preprocess.frames_to_model(tf.constant(frame[None]), *self.display).numpy()[0]
        else:
          frame = frame / 255.0
        label = cv2.imdecode(self.labels[video][index], cv2.IMREAD_GRAYSCALE)
        panels.append((frame, label & 1, label >> 1,
                       f'{self._frame_title(video, index)}: Dice {self.dice[video, index]:.3f}'))
      title = (f'{tag}: {video}, Dice {row["dice"]:.3f} ({position + 1} of {len(ranked)} '
               f'videos by Dice, {self.resolution} resolution)')
      figures.append((tag, video, plots.overlay_figure(title, panels)))
    return figures

  def _frame_title(self, video: str, index: int) -> str:
    """A frame's name in a figure: its stored file name where the dataset has them."""
    names = self.stored.video(video).frame_names if self.stored else None
    return f'{names[index]} (frame {index})' if names else f'frame {index}'

  def export(self, directory: str) -> list[str]:
    """Writes every scored frame's predicted mask (0/255 PNG, at the scored resolution:
    the frame's own with ``eval_resolution='native'``) to
    ``<directory>/predicted_masks/<video>/<frame>.png``, named after the stored frame
    names when the dataset has them (a ``frame_names`` feature), else the frame index;
    returns the paths."""
    paths = []
    for video, labels in self.labels.items():
      names = self.stored.video(video).frame_names if self.stored else None
      folder = os.path.join(directory, PREDICTIONS_DIR, reports.file_name(video))
      os.makedirs(folder, exist_ok=True)
      for index, encoded in sorted(labels.items()):
        stem = os.path.splitext(names[index])[0] if names else f'{index:05d}'
        path = os.path.join(folder, reports.file_name(stem) + '.png')
        predicted = cv2.imdecode(encoded, cv2.IMREAD_GRAYSCALE) >> 1
        cv2.imwrite(path, predicted.astype(np.uint8) * 255)
        paths.append(path)
    return paths


def ranked_positions(num_videos: int, shown: int) -> dict[int, str]:
  """{position in the ranking (0 = best): tag} of ``shown`` videos spread evenly over a
  ranking of ``num_videos``: 'best', 'worst', 'median' ((V - 1) / 2 rounded half up) and
  'rank<r>' (1-based) for the others; 1 shown video is the best."""
  positions = np.floor(np.linspace(0, num_videos - 1, min(shown, num_videos)) + 0.5)
  median = int(np.floor((num_videos - 1) / 2 + 0.5))
  tags = {}
  for position in sorted(set(positions.astype(int).tolist())):
    tags[position] = ('best' if position == 0 else 'worst' if position == num_videos - 1
                      else 'median' if position == median else f'rank{position + 1}')
  return tags
