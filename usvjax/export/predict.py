"""Batch prediction over a folder: every image, folder of frames, video file and DICOM file
in it, with a run (``functions.in_process``) or an export (``artifact.load``), which share
one interface (``artifact.Artifact``) and one ``export.json``-style metadata.

Segmentation writes, named after each source, ``<stem>/masks/<frame>.png`` (0/255 at the
source's resolution; a folder's frames keep their names, a video's are numbered) and
``<stem>/overlay.mp4`` for videos, ``<stem>_mask.png`` and ``<stem>_overlay.png`` for an
image, and ``predictions.csv`` (source, frames, frames with a predicted lesion). Videos are
streamed frame by frame: a streaming model's ``start``/``step``, else a window of the last
``clip_length`` frames. Classification writes ``predictions.csv``: per source, the frames
the model saw, ``prob_<class>`` of every class and the predicted class; the probabilities
are temperature-scaled where the run was calibrated (``evaluate --calibrate``: the
metadata's ``temperature``, baked into the function by ``functions.prepare``).
"""
from __future__ import annotations

import csv
import os
from collections.abc import Iterator

import cv2
import ml_collections
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from input_pipeline import preprocess
from input_pipeline.builders import common as data_common
from input_pipeline.builders import dicom
from input_pipeline.builders import video_table
from usvjax.errors import ConfigError
from usvjax.export import artifact
from usvjax.reporting import plots
from usvjax.tools import classify

VIDEO_EXTENSIONS = ('.avi', '.mp4', '.mov', '.mkv', '.mpg', '.mpeg', '.wmv', '.m4v')
PREDICTIONS_FILE = 'predictions.csv'


def sources(folder: str) -> list[str]:
  """The inputs of ``folder`` in natural order: images, folders holding images, video files
  and DICOM files (``.dcm`` or a DICOM header); anything else is skipped."""
  data_common.require_dir(folder, 'input folder')
  found = []
  for name in sorted(os.listdir(folder), key=data_common.natural_key):
    path = os.path.join(folder, name)
    if os.path.isdir(path):
      if data_common.list_images(path):
        found.append(path)
    elif name.lower().endswith(data_common.IMAGE_EXTENSIONS + VIDEO_EXTENSIONS) or (
        dicom.is_dicom(path)):
      found.append(path)
  if not found:
    raise data_common.DatasetError(f'{folder} holds no image, folder of frames, video or '
                                   'DICOM file to predict.')
  return found


def _stem(path: str) -> str:
  return os.path.splitext(os.path.basename(os.path.normpath(path)))[0]


def _is_image(path: str) -> bool:
  return os.path.isfile(path) and path.lower().endswith(data_common.IMAGE_EXTENSIONS)


def _frames(path: str) -> Iterator[np.ndarray]:
  """uint8 RGB [H, W, 3] frames of a source (an image is a video of one frame)."""
  return iter([data_common.read_rgb(path)]) if _is_image(path) else video_table.iter_video(
      path)[0]


def _to_model(frames: np.ndarray, metadata: dict) -> np.ndarray:
  """uint8 [T, H, W, 3] -> float32 [T, S, S, C], exactly as the input pipeline does."""
  p = metadata['preprocessing']
  return preprocess.frames_to_model(tf.constant(frames), p['image_size'],
                                    p['channels']).numpy()


def _probabilities(model: artifact.Artifact, frames: Iterator[np.ndarray]
                   ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """(frame, probabilities [S, S]) per frame: streamed with the model's own state where it
  has one, else on the window of the last clip_length frames."""
  metadata = model.metadata
  streaming = 'start' in model.functions
  window, state = [], None
  for index, frame in enumerate(frames):
    x = _to_model(frame[None], metadata)
    if streaming:
      state, probs = (model.start(x, np.zeros((*x.shape[:-1], 1), np.float32)) if index == 0
                      else model.step(state, x))
    else:
      length = metadata['preprocessing']['clip_length']
      window = [x] * length if index == 0 else window[1:] + [x]
      probs = model(np.stack(window, axis=1))
    yield frame, probs[0, ..., 0]


def _segment(model: artifact.Artifact, source: str, output: str) -> list:
  threshold = model.metadata['threshold']
  image = _is_image(source)
  names = (data_common.list_images(source) if os.path.isdir(source) else [])
  writer, lesion_frames, count = None, 0, 0
  if not image:
    os.makedirs(os.path.join(output, _stem(source), 'masks'), exist_ok=True)
  try:
    for index, (frame, prob) in enumerate(_probabilities(model, _frames(source))):
      height, width = frame.shape[:2]
      prob = cv2.resize(prob, (width, height), interpolation=cv2.INTER_LINEAR)
      binary = (prob > threshold).astype(np.uint8) * 255
      overlay = cv2.cvtColor(plots.overlay(frame / 255.0, np.zeros_like(prob), prob, threshold,
                                           min_size=0), cv2.COLOR_RGB2BGR)
      if image:
        cv2.imwrite(os.path.join(output, f'{_stem(source)}_mask.png'), binary)
        cv2.imwrite(os.path.join(output, f'{_stem(source)}_overlay.png'), overlay)
      else:
        name = os.path.splitext(names[index])[0] if names else f'{index:05d}'
        cv2.imwrite(os.path.join(output, _stem(source), 'masks', f'{name}.png'), binary)
        if writer is None:
          writer = cv2.VideoWriter(os.path.join(output, _stem(source), 'overlay.mp4'),
                                   cv2.VideoWriter_fourcc(*'mp4v'), 25.0, (width, height))
        writer.write(overlay)
      lesion_frames += int(binary.any())
      count += 1
  finally:
    if writer is not None:
      writer.release()
  return [os.path.basename(os.path.normpath(source)), count, lesion_frames]


def _classify(model: artifact.Artifact, source: str) -> list:
  metadata = model.metadata
  p = metadata['preprocessing']
  if _is_image(source):
    frames, indices = data_common.read_rgb(source)[None], [0]
  else:
    frames, indices = classify.sample_frames(source, ml_collections.ConfigDict(
        {'max_frames': p['max_frames'], 'sampling': p['sampling']}))
  x = _to_model(frames, metadata)[None]
  valid = np.ones(x.shape[:2], bool)
  length = metadata['functions']['predict']['inputs'][0]['shape'][1]
  if isinstance(length, int):  # Exported with a fixed number of frames: pad, not valid.
    x = np.concatenate([x, np.zeros((1, length - x.shape[1], *x.shape[2:]), x.dtype)], 1)
    valid = np.concatenate([valid, np.zeros((1, length - valid.shape[1]), bool)], 1)
  probs = model(x, valid)[0]
  names = metadata['class_names']
  label = classify._label(probs, names, metadata['threshold'])  # pylint: disable=protected-access
  return [os.path.basename(os.path.normpath(source)), len(indices), *probs.tolist(), label]


def predict_folder(model: artifact.Artifact, folder: str, output: str) -> str:
  """Predicts every source of ``folder`` (``sources``) with ``model`` into ``output``;
  returns the path of its ``predictions.csv``."""
  metadata = model.metadata
  pooled = metadata['classifies_videos']
  if not pooled and metadata['capabilities']['needs_first_mask']:
    raise ConfigError(f'{metadata["model"]} propagates the first frame\'s mask, which a '
                      'folder does not give: segment each video with python -m '
                      'experiments.segment_video --first_mask=PATH.')
  header = (['source', 'frames', *(f'prob_{n}' for n in metadata['class_names']),
             'predicted_class'] if pooled else ['source', 'frames', 'lesion_frames'])
  os.makedirs(output, exist_ok=True)
  rows = []
  for source in tqdm(sources(folder), desc='predict', unit='source'):
    rows.append(_classify(model, source) if pooled else _segment(model, source, output))
  path = os.path.join(output, PREDICTIONS_FILE)
  with open(path, 'w', newline='', encoding='utf-8') as f:
    writer = csv.writer(f)
    writer.writerow(header)
    writer.writerows(rows)
  return path
