"""Classifying one video (folder of frames, video file or DICOM cine loop) with a trained
run, and showing which frames mattered (``experiments/classify_video.py`` is the command).

The video's frames are sampled and preprocessed exactly as in evaluation
(``input_pipeline.sequences``: the centre frame of each of n equal segments, n =
min(frames, ``input.max_frames``) or ``max_frames`` with ``sampling='exact'``), the model
runs once on them, and the result is the video's class probabilities and label (binary:
the positive class when its probability >= the threshold the evaluation uses, chosen on
the validation split with ``task.threshold_rule``; otherwise the most probable class). The
video's probabilities are temperature-scaled where ``evaluate --calibrate`` stored a
temperature for the checkpoint (``evaluate.stored_calibration``), as in the evaluation
with ``--calibrate``. Per frame, the model's frame-level output is reported where it has
one: ``frame_logits`` (CNN_Aver/CNN_Vote, CNN-LSTM's frame CNN) as the model's own
probability of the predicted class, in the column ``frame_probability_<class>`` of
``frames.csv``, and ``frame_weights`` (attention pooling) as the weight of each frame.
"""
from __future__ import annotations

import csv
import json
import os
from typing import NamedTuple

import jax
import ml_collections
import numpy as np
import tensorflow as tf

from input_pipeline import preprocess
from input_pipeline import sequence_streams
from input_pipeline import spec as spec_lib
from input_pipeline.builders import video_table
from usvjax import runners
from usvjax.core import evaluate
from usvjax.core import run as run_lib
from usvjax.errors import ConfigError
from usvjax.reporting import plots
from usvjax.reporting import provenance


class Classified(NamedTuple):
  probabilities: dict[str, float]  # Class name -> probability.
  label: str
  frames: list[int]  # Indices (in the video) of the frames the model saw.
  # 'frame_probability_<predicted class>' and/or 'frame_weight': one value per frame.
  frame_scores: dict[str, list[float]]
  step: int  # The checkpoint's step.


def sample_frames(video: str, input_config: ml_collections.ConfigDict
                  ) -> tuple[np.ndarray, list[int]]:
  """The frames evaluation would take from ``video``: uint8 [n, H, W, 3] and their indices."""
  frames = list(video_table.iter_video(video)[0])
  count = (input_config.max_frames if input_config.sampling == 'exact'
           else min(len(frames), input_config.max_frames))
  indices = [int(i) for i in sequence_streams.uniform_indices(len(frames), count).numpy()]
  return np.stack([frames[i] for i in indices]), indices


def _class_names(workdir: str, num_classes: int) -> list[str]:
  recorded = provenance.recorded_data(workdir) or {}
  return recorded.get('classes') or [f'class {k}' for k in range(num_classes)]


def _label(probs: np.ndarray, names: list[str], threshold: float) -> str:
  if len(probs) == 2:
    return names[1] if probs[1] >= threshold else names[0]
  return names[int(np.argmax(probs))]


def resolve(config: ml_collections.ConfigDict) -> run_lib.Run:
  """The run that classifies a video for the run ``config``: its headline row's model
  (``runners``), on one local device, without data (``classify_video`` prepares them only
  where the task chooses its threshold on the validation split)."""
  config = runners.get(config).headline(config).config
  return run_lib.resolve(config, data=False, devices=jax.local_devices()[:1])


def classify_video(run: run_lib.Run, workdir: str, which: str, video: str,
                   output_dir: str) -> Classified:
  """Classifies ``video`` with checkpoint ``which`` of the run in ``workdir`` (``run``, from
  ``resolve``) and writes ``result.json``, ``frames.csv`` and ``frames.png`` into
  ``output_dir``."""
  config, model, task = run.config, run.model, run.task
  fields = run.fields(train=False)
  if not run.definition.pooled or 'frames' not in fields:
    raise ConfigError(f'classify_video needs a video classifier run on frames; the run in '
                      f'{workdir} ({config.model.name}) reads {sorted(fields)}.')
  frames, indices = sample_frames(video, config.input)
  batch = spec_lib.example_batch(fields, 1, len(indices))
  batch['frames'] = preprocess.frames_to_model(
      tf.constant(frames), config.input.image_size, config.input.channels).numpy()[None]
  variables, step = run.restore(workdir, which)
  temperature = evaluate.stored_calibration(run, workdir, variables, step)
  outputs = jax.jit(lambda v, b: model.apply(v, b, train=False))(variables, batch)
  probs = np.asarray(jax.nn.softmax(outputs['logits'][0] / temperature))
  names = _class_names(workdir, len(probs))
  label = _label(probs, names, task.threshold)
  scores = {}
  if 'frame_logits' in outputs:
    frame_probs = np.asarray(jax.nn.softmax(outputs['frame_logits'][0], axis=-1))
    scores[f'frame_probability_{label}'] = frame_probs[:, names.index(label)].tolist()
  if 'frame_weights' in outputs:
    scores['frame_weight'] = np.asarray(outputs['frame_weights'][0]).tolist()
  result = Classified(dict(zip(names, probs.tolist())), label, indices, scores, step)
  _write(result, video, output_dir, task.threshold, temperature)
  return result


def _write(result: Classified, video: str, output_dir: str, threshold: float,
           temperature: float) -> None:
  os.makedirs(output_dir, exist_ok=True)
  with open(os.path.join(output_dir, 'result.json'), 'w', encoding='utf-8') as f:
    json.dump({'video': os.path.abspath(video), 'checkpoint_step': result.step,
               'threshold': threshold, 'temperature': temperature, **result._asdict()},
              f, indent=2)
  with open(os.path.join(output_dir, 'frames.csv'), 'w', newline='', encoding='utf-8') as f:
    writer = csv.writer(f)
    writer.writerow(['frame', *result.frame_scores])
    writer.writerows(zip(result.frames, *result.frame_scores.values()))
  plots.frame_scores(result.frames, result.frame_scores,
                     f'{os.path.basename(os.path.normpath(video))}: {result.label} '
                     f'(p={result.probabilities[result.label]:.3f})',
                     os.path.join(output_dir, 'frames.png'))
