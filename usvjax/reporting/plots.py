"""Pictures for people: segmentation overlays, ROC/PR curves, confusion matrices, curves."""
from __future__ import annotations

import json
import os
from collections.abc import Sequence

import cv2
import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
from sklearn import metrics as skm  # pylint: disable=g-import-not-at-top,wrong-import-position

from usvjax.metrics import classification as class_metrics  # pylint: disable=wrong-import-position
from usvjax.reporting import reports  # pylint: disable=wrong-import-position

GROUND_TRUTH_RGB = (0, 255, 0)
PREDICTION_RGB = (255, 40, 40)
DISPLAY_HEIGHT = 192  # Pixels of an overlay panel's frame.
_BAND, _GAP = 24, 6  # Overlay figures: pixels of a text band, between panels.


def overlay(frame: np.ndarray, mask: np.ndarray, prob: np.ndarray,
            threshold: float = 0.5, min_size: int = 256) -> np.ndarray:
  """uint8 RGB: the frame with the ground-truth (green) and predicted (red) contours.

  Small frames are enlarged by an integer factor to at least ``min_size`` pixels high.
  """
  scale = max(1, min_size // frame.shape[0])
  image = np.clip(np.asarray(frame, np.float32) * 255, 0, 255).astype(np.uint8)
  if image.shape[-1] == 1:
    image = np.repeat(image, 3, axis=-1)
  size = (image.shape[1] * scale, image.shape[0] * scale)
  image = np.ascontiguousarray(cv2.resize(image, size, interpolation=cv2.INTER_LINEAR))
  mask = cv2.resize(np.asarray(mask, np.float32), size, interpolation=cv2.INTER_NEAREST)
  prob = cv2.resize(np.asarray(prob, np.float32), size, interpolation=cv2.INTER_LINEAR)
  for binary, color in ((mask > 0.5, GROUND_TRUTH_RGB), (prob > threshold, PREDICTION_RGB)):
    contours, _ = cv2.findContours(binary.astype(np.uint8), cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(image, contours, -1, color, max(1, scale // 2))
  return image


def overlay_figure(title: str, panels: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray, str]],
                   height: int = DISPLAY_HEIGHT) -> np.ndarray:
  """uint8 RGB [H, W, 3]: ``title``, one row of captioned panels, and a legend of the colours.

  Each panel is (frame [h, w, C] in [0, 1], ground truth [h, w], prediction [h, w] (both
  binary), caption): the frame with the two contours (``overlay``), shown ``height`` pixels
  high (frames are resized for display only; contours are drawn after resizing). Drawn
  with OpenCV (milliseconds: training draws it at every evaluation for TensorBoard).
  """
  columns = []
  for frame, mask, prediction, caption in panels:
    size = (max(1, round(frame.shape[1] * height / frame.shape[0])), height)
    frame = cv2.resize(np.asarray(frame, np.float32), size, interpolation=cv2.INTER_AREA)
    image = overlay(frame.reshape(size[::-1] + (-1,)), *(
        cv2.resize(np.asarray(m, np.float32), size, interpolation=cv2.INTER_LINEAR)
        for m in (mask, prediction)), min_size=0)
    column = np.full((_BAND + height, size[0] + _GAP, 3), 255, np.uint8)
    column[_BAND:, :size[0]] = image
    _text(column, caption, 4, _BAND - 7, size[0] - 4)
    columns.append(column)
  body = np.concatenate(columns, axis=1)
  out = np.full((2 * _BAND + body.shape[0], max(body.shape[1], 320), 3), 255, np.uint8)
  out[_BAND:_BAND + body.shape[0], :body.shape[1]] = body
  _text(out, title, 4, _BAND - 7, out.shape[1] - 8)
  x, y = 4, out.shape[0] - _BAND
  for rgb, label in ((GROUND_TRUTH_RGB, 'ground truth'), (PREDICTION_RGB, 'prediction')):
    cv2.rectangle(out, (x, y + 6), (x + 14, y + 18), rgb, -1)
    x = _text(out, label, x + 20, y + 17, out.shape[1]) + 16
  return out


def _text(image: np.ndarray, text: str, x: int, y: int, max_width: int) -> int:
  """Draws black ``text`` with its baseline at (x, y), shrunk to fit ``max_width`` pixels;
  returns the x where it ends."""
  width = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1)[0][0]
  scale = 0.45 * min(1.0, max_width / max(width, 1))
  cv2.putText(image, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)
  return x + round(width * scale / 0.45)


def overlays(figures: dict[str, np.ndarray], directory: str) -> list[str]:
  """Writes each RGB figure as ``overlay_<name>.png`` in ``directory``; returns the paths."""
  os.makedirs(directory, exist_ok=True)
  paths = []
  for name, figure in figures.items():
    path = os.path.join(directory, f'overlay_{reports.file_name(name)}.png')
    cv2.imwrite(path, cv2.cvtColor(figure, cv2.COLOR_RGB2BGR))
    paths.append(path)
  return paths


def classification_curves(probs: np.ndarray, labels: np.ndarray, directory: str,
                          class_names: list[str] | None, metrics: dict,
                          threshold: float = 0.5) -> dict[str, list]:
  """roc.png, pr.png (one-vs-rest per class when K > 2) and confusion_matrix.png.

  Drawn with scikit-learn's displays from probs [N, K] and integer labels [N]: a class
  whose one-vs-rest target has a single value gets no curve; the confusion matrix holds
  the counts of the predictions ``class_metrics.class_predictions(probs, threshold)``, each with
  its share of the true class's videos. Returns the displays, {'roc': [RocCurveDisplay],
  'pr': [PrecisionRecallDisplay], 'confusion_matrix': [ConfusionMatrixDisplay]}.
  """
  os.makedirs(directory, exist_ok=True)
  num_classes = probs.shape[1]
  names = class_names or [str(k) for k in range(num_classes)]
  positives = [1] if num_classes == 2 else list(range(num_classes))
  displays: dict[str, list] = {'roc': [], 'pr': [], 'confusion_matrix': []}
  for kind, display_type in (('roc', skm.RocCurveDisplay), ('pr', skm.PrecisionRecallDisplay)):
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    for k in positives:
      target = (labels == k).astype(int)
      if target.min() == target.max():
        continue
      # The chance level: the diagonal (ROC, once) or the prevalence (PR, binary only).
      chance = not displays[kind] if kind == 'roc' else len(positives) == 1
      displays[kind].append(display_type.from_predictions(
          target, probs[:, k], name=names[k], ax=ax, plot_chance_level=chance))
    # One-vs-rest targets are 0/1: sklearn's axis labels would name "positive label: 1".
    ax.set_xlabel('false positive rate' if kind == 'roc' else 'recall')
    ax.set_ylabel('true positive rate' if kind == 'roc' else 'precision')
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.legend(loc='lower right' if kind == 'roc' else 'lower left')
    ax.set_title(f"{kind.upper()} (accuracy {metrics.get('accuracy', float('nan')):.3f})")
    fig.tight_layout()
    fig.savefig(os.path.join(directory, f'{kind}.png'), dpi=120)
    plt.close(fig)
  preds = class_metrics.class_predictions(probs, threshold)
  counts = skm.confusion_matrix(labels, preds, labels=list(range(num_classes)))
  fig, ax = plt.subplots(figsize=(4.5, 4.5))
  display = skm.ConfusionMatrixDisplay(counts, display_labels=names).plot(
      ax=ax, cmap='Blues', values_format='d', colorbar=False)
  shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
  for (i, j), text in np.ndenumerate(display.text_):
    text.set_text(f'{counts[i, j]}\n({shares[i, j]:.0%})')
  displays['confusion_matrix'].append(display)
  ax.set_title('confusion matrix' + (f' (threshold {threshold:g})' if num_classes == 2 else '')
               + '\ncounts (share of the true class)')
  fig.tight_layout()
  fig.savefig(os.path.join(directory, 'confusion_matrix.png'), dpi=120)
  plt.close(fig)
  return displays


def reliability_diagram(probs: np.ndarray, labels: np.ndarray, directory: str) -> str:
  """reliability.png: per confidence bin (``class_metrics.reliability_bins``, the ECE's
  bins), the accuracy of its videos as a bar at the bin, the gap to their mean confidence
  shaded, the diagonal (perfect calibration) and the ECE in the title; returns the path."""
  count, confidence, accuracy = class_metrics.reliability_bins(probs, labels)
  bins = len(count)
  edges = np.arange(bins) / bins
  filled = count > 0
  fig, ax = plt.subplots(figsize=(4.5, 4.5))
  ax.bar(edges[filled], accuracy[filled], width=1 / bins, align='edge', edgecolor='black',
         color='tab:blue', label='accuracy')
  ax.bar(edges[filled], confidence[filled] - accuracy[filled], bottom=accuracy[filled],
         width=1 / bins, align='edge', color='tab:red', alpha=0.3, label='gap to confidence')
  ax.plot([0, 1], [0, 1], 'k--', linewidth=1, label='perfect calibration')
  ax.set_xlim(0, 1)
  ax.set_ylim(0, 1)
  ax.set_xlabel('confidence (largest class probability)')
  ax.set_ylabel('accuracy')
  ax.legend(loc='upper left')
  ax.set_title(f'reliability ({bins} bins, {int(count.sum())} videos)\n'
               f'ECE {class_metrics.expected_calibration_error(probs, labels):.3f}')
  fig.tight_layout()
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, 'reliability.png')
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


def training_curves(workdir: str, directory: str) -> str | None:
  """curves.png from ``<workdir>/metrics.jsonl``: training loss and validation metrics."""
  path = os.path.join(workdir, 'metrics.jsonl')
  if not os.path.exists(path):
    return None
  with open(path) as f:
    records = [json.loads(line) for line in f if line.strip()]
  series: dict[str, list[tuple[int, float]]] = {}
  for record in records:
    for key, value in record.items():
      if key != 'step' and (key == 'train/loss' or key.startswith('val/')):
        series.setdefault(key, []).append((record['step'], value))
  keys = ['train/loss'] + [k for k in ('val/lesion_dice', 'val/mean_dice', 'val/accuracy',
                                       'val/auc') if k in series]
  keys = [k for k in keys if k in series]
  fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.2), squeeze=False)
  for ax, key in zip(axes[0], keys):
    steps, values = zip(*series[key])
    ax.plot(steps, values, marker='.' if key.startswith('val/') else None)
    ax.set_title(key)
    ax.set_xlabel('step')
  fig.tight_layout()
  out = os.path.join(directory, 'curves.png')
  fig.savefig(out, dpi=120)
  plt.close(fig)
  return out


def frame_scores(frames: list[int], scores: dict[str, list[float]], title: str,
                 path: str) -> None:
  """One curve per score over the video's frame indices (``usvjax.tools.classify``); a note
  instead when the model gives no per-frame output."""
  fig, ax = plt.subplots(figsize=(6, 3))
  for name, values in scores.items():
    ax.plot(frames, values, marker='o', label=name.replace('_', ' '))
  if scores:
    ax.legend()
  else:
    ax.text(0.5, 0.5, 'this model gives no per-frame output', ha='center', va='center',
            transform=ax.transAxes)
  ax.set_xlabel('frame of the video')
  ax.set_title(title)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
