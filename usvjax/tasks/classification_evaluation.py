"""Video classification, host side: exact video-level metrics of the task's evaluation
outputs (``usvjax.tasks.classification.ClassificationTask.eval_outputs``), the decision
threshold a rule picks on validation predictions (``choose_threshold``), the report
(metrics, per-video table, ROC and PR curves, confusion matrix) and the per-frame scores of
``evaluate --export``.

The report's metrics.json also holds 95% bootstrap intervals (``confidence_intervals``:
``<metric>_ci95`` = [lo, hi] for ``metrics.classification.CI_KEYS``, as the segmentation
reports' ``mean_dice_ci95``), resampling patients where the split's videos carry a
``group`` that some of them share, else videos (``bootstrap_unit``, ``bootstrap_units``:
which, and how many). The groups are read from the stored split only when a report is
written, not at every validation.

With a temperature T != 1 (``evaluate --calibrate``) every probability reported is
softmax(log p / T) (``metrics.classification.temperature_scaled``), and the metrics add
``ece_uncalibrated`` (the ECE of the model's own probabilities) beside ``ece``. The report
draws ``reliability.png``: the ``ECE_BINS`` confidence bins' accuracy against their mean
confidence.
"""
from __future__ import annotations

import csv
import os
from collections.abc import Sequence

import ml_collections
import numpy as np
import tensorflow_datasets as tfds
from sklearn import metrics as skm

from usvjax.errors import ConfigError
from usvjax.metrics import classification as classification_metrics
from usvjax.reporting import plots
from usvjax.reporting import reports
from usvjax.tasks.classification import threshold_rule_target
from usvjax.tasks.video_keys import decode_key
from usvjax.tasks.video_keys import key_text


def choose_threshold(probs: np.ndarray, labels: np.ndarray, rule: str) -> float:
  """The threshold on p(class 1) that ``rule`` picks on these (validation) predictions."""
  if probs.shape[1] != 2 or len(set(labels.tolist())) != 2:
    raise ConfigError(f'config.task.threshold_rule={rule!r} needs a binary task and both '
                      'classes in the validation split.')
  fpr, tpr, thresholds = skm.roc_curve(labels, probs[:, 1], drop_intermediate=False)
  thresholds = np.minimum(thresholds, 1.0)  # The first is +inf: nothing positive.
  target = threshold_rule_target(rule)
  if target is None:
    return float(thresholds[np.argmax(tpr - fpr)])
  return float(thresholds[np.argmax(tpr >= target)])  # tpr rises: the first reaching S.


FRAME_OUTPUTS = ('frame_probs', 'frame_weights')  # Per-frame model outputs, if any.
FRAME_SCORES_FILE = 'frame_scores.csv'


class ClassificationEvaluation:
  """Collects the probabilities of every valid video; metrics in ``result()`` (an
  ``interfaces.Evaluation``)."""

  def __init__(self, threshold: float, temperature: float = 1.0):
    self.threshold, self.temperature = threshold, temperature
    self.rows: list[dict] = []
    self.class_names: list[str] | None = None
    self.stored: tuple[tfds.core.DatasetBuilder, str] | None = None
    self._groups: dict[str, str] | None = None

  def use_split(self, config: ml_collections.ConfigDict, builder: tfds.core.DatasetBuilder,
                split: str) -> None:
    """Remembers where the evaluated videos are stored, for their groups (read lazily)."""
    if config.dataset.folds.num:  # k-fold: the evaluated fold is part of train_split.
      split = config.dataset.train_split
    self.stored = builder, split

  def groups(self) -> dict[str, str]:
    """{video id: its group (patient)} of the stored split; {} without one."""
    if self._groups is None:
      self._groups = {} if self.stored is None else _stored_groups(*self.stored)
    return self._groups

  def units(self) -> list[str]:
    """Per video added: its patient where known, else the video itself."""
    groups = self.groups()
    return [groups.get(row['video_id'], row['video_id']) for row in self.rows]

  def update(self, outputs: dict) -> None:
    """Adds the valid videos of one batch of ``ClassificationTask.eval_outputs``."""
    for i in np.flatnonzero(outputs['valid']):
      frames = int(outputs['num_frames'][i])
      self.rows.append({'video_id': decode_key(outputs['video_key'][i]),
                        'label': int(outputs['label'][i]), 'num_frames': frames,
                        'probs': [float(p) for p in outputs['probs'][i]],
                        **{k: np.asarray(outputs[k][i][:frames]) for k in FRAME_OUTPUTS
                           if k in outputs}})

  def average_samplings(self) -> None:
    """One row per video, its class probabilities the mean of the rows added for it (one
    per frame sampling of ``evaluate --clips``); the per-frame outputs stay the first
    sampling's (the segment centres)."""
    merged: dict[str, dict] = {}
    for row in self.rows:
      merged.setdefault(row['video_id'], dict(row, probs=[]))['probs'].append(row['probs'])
    self.rows = [dict(row, probs=np.mean(row['probs'], axis=0).tolist())
                 for row in merged.values()]

  def arrays(self, scaled: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities [N, K], labels [N]) of the videos added, with the temperature
    applied unless not ``scaled``."""
    probs = np.array([r['probs'] for r in self.rows])
    if scaled:
      probs = classification_metrics.temperature_scaled(probs, self.temperature)
    return probs, np.array([r['label'] for r in self.rows])

  def result(self) -> dict[str, float]:
    if not self.rows:
      raise ConfigError('no videos were evaluated.')
    out = classification_metrics.classification_metrics(*self.arrays(), threshold=self.threshold)
    if self.temperature != 1.0:
      out['ece_uncalibrated'] = classification_metrics.expected_calibration_error(
          *self.arrays(scaled=False))
    return out

  def fit_temperature(self) -> dict[str, float]:
    """Fits the temperature on the videos added (their own probabilities) and uses it;
    returns it with the NLL and ECE of these videos before and after."""
    probs, labels = self.arrays(scaled=False)
    self.temperature = classification_metrics.fit_temperature(probs, labels)
    scaled = classification_metrics.temperature_scaled(probs, self.temperature)
    nll, ece = (classification_metrics.negative_log_likelihood,
                classification_metrics.expected_calibration_error)
    return {'temperature': self.temperature, 'validation_nll_before': nll(probs, labels),
            'validation_nll_after': nll(scaled, labels),
            'validation_ece_before': ece(probs, labels),
            'validation_ece_after': ece(scaled, labels)}

  def confidence_intervals(self) -> dict:
    """{'<metric>_ci95': [lo, hi], 'bootstrap_unit': 'patient' | 'video',
    'bootstrap_units': how many} (module docstring)."""
    return classification_metrics.bootstrap_intervals(*self.arrays(), self.threshold,
                                                      self.units())

  def video_rows(self, class_names: Sequence[str] | None = None) -> list[dict]:
    """Per video: id, frames, true and predicted class (index and name), and one numeric
    probability column per class (``prob_<class name>``)."""
    probs, labels = self.arrays()
    names = list(class_names or [str(k) for k in range(probs.shape[1])])
    preds = classification_metrics.class_predictions(probs, self.threshold)
    return [{'video_id': row['video_id'], 'num_frames': row['num_frames'],
             'label': label, 'true_class': names[label], 'predicted': int(pred),
             'predicted_class': names[pred], 'correct': int(pred == label),
             **{f'prob_{name}': float(p) for name, p in zip(names, video_probs)}}
            for row, video_probs, label, pred in zip(self.rows, probs, labels.tolist(),
                                                     preds.tolist())]

  def paired_values(self) -> dict[str, dict]:
    """Binary classification: {'video_probs': {video: [p(class 1), label]}}, what a
    comparison's paired AUC test resamples; {} for more classes."""
    probs, labels = self.arrays()
    if probs.ndim != 2 or probs.shape[1] != 2:
      return {}
    return {'video_probs': {row['video_id']: [float(p), int(label)]
                            for row, p, label in zip(self.rows, probs[:, 1], labels)}}

  def write_report(self, directory: str, metrics_: dict,
                   class_names: list[str] | None = None) -> None:
    """metrics.json (with the bootstrap intervals), per_video.csv, ROC and PR curves, the
    confusion matrix and the reliability diagram."""
    reports.write_tables(directory, dict(metrics_, **self.confidence_intervals()),
                         self.video_rows(class_names))
    self.class_names = class_names
    plots.classification_curves(*self.arrays(), directory, class_names, metrics_,
                                self.threshold)
    plots.reliability_diagram(*self.arrays(), directory)

  def export(self, directory: str) -> list[str]:
    """``frame_scores.csv``: per video and frame of the sequence the model saw (position
    in the sampled sequence), the frame's class probabilities and attention weight where
    the model gives them. (The per-video probabilities are in per_video.csv.)"""
    if not any(k in row for row in self.rows for k in FRAME_OUTPUTS):
      raise ConfigError('--export: this model gives no per-frame output; the per-video '
                        'probabilities are in per_video.csv.')
    num_classes = len(self.rows[0]['probs'])
    names = list(self.class_names or [str(k) for k in range(num_classes)])
    columns = ['video_id', 'position'] + [f'frame_prob_{n}' for n in names] + ['frame_weight']
    path = os.path.join(directory, FRAME_SCORES_FILE)
    with open(path, 'w', newline='', encoding='utf-8') as f:
      writer = csv.writer(f)
      writer.writerow(columns)
      for row in self.rows:
        for t in range(row['num_frames']):
          probs = row['frame_probs'][t].tolist() if 'frame_probs' in row else [''] * num_classes
          weight = float(row['frame_weights'][t]) if 'frame_weights' in row else ''
          writer.writerow([row['video_id'], t, *probs, weight])
    return [path]


def _stored_groups(builder: tfds.core.DatasetBuilder, split: str) -> dict[str, str]:
  """{video key: group} of ``split`` as stored (frames not decoded); {} without groups."""
  features = builder.info.features
  if 'group' not in features:
    return {}
  decoders = {k: tfds.decode.SkipDecoding() for k in ('frames', 'masks') if k in features}
  videos = builder.as_dataset(split=split, decoders=decoders, shuffle_files=False)
  return {key_text(v['video_id']): v['group'].decode('utf-8', 'replace')
          for v in videos.as_numpy_iterator()}
