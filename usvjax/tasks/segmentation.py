"""Video segmentation task: the loss on the target frame and exact per-frame metrics.

The target frame is the last frame of a clip (index -1). ``outputs['logits']`` is
[B, H, W, 1]. The mask loss of a frame is ``bce_weight`` * BCE + ``dice_weight`` * soft
Dice + ``iou_weight`` * soft IoU + ``wbce_weight`` * wBCE + ``wiou_weight`` * wIoU (the last
two weighted by F3Net's boundary weights, ``losses.structure_weights``), averaged over the
valid examples of the batch. Models with auxiliary predictions of the two previous frames
(``outputs['aux_logits']`` [B, 2, H, W, 1] for t-2, t-1; DSANet, Eq. 6 of Zhou et al.) add
``aux_weight`` times each of their mask losses. For models with a localisation heatmap
(FLA-Net, Eq. 2 of Lin et al.) the loss also has:

* ``heatmap_weight`` * MSE(H_t, G^H_t), G^H_t the Gaussian at the box centre of the target
  frame (``batch['heatmaps']``, made when ``config.input.heatmap_sigma`` > 0);
* ``contrastive_weight`` * the location-based contrastive loss (``losses.location_contrastive``,
  margin ``contrastive_margin``). Positive: H_{t-1}, the model's heatmap of the previous
  frame of the same clip (``outputs['previous_heatmap']``: train on clips of 4 frames).
  Negative: H_t of the next example of the global batch (cyclically), used only when it
  comes from another video (``batch['video_hash']``); the term is the mean over such
  pairs, so a batch needs at least two examples (checked when the task is made) and, in
  practice, several videos (the training stream shuffles clips across videos).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from usvjax import losses
from usvjax import metrics


class SegmentationTask:

  def __init__(self, config: ml_collections.ConfigDict, batch_size: int):
    self.config = config
    if config.contrastive_weight and batch_size < 2:
      raise ValueError(f'config.task.contrastive_weight > 0 needs negatives from other videos '
                       f'in the batch: config.input.batch_size is {batch_size}, use >= 2.')

  def _mask_loss(self, logits: jnp.ndarray, target: jnp.ndarray, weights: jnp.ndarray,
                 prefix: str = '') -> tuple[jnp.ndarray, dict]:
    """The weighted mask loss of one frame and its named parts (batch means)."""
    cfg = self.config
    terms = [('bce', cfg.bce_weight, losses.sigmoid_bce), ('soft_dice_loss', cfg.dice_weight,
             losses.soft_dice), ('soft_iou_loss', cfg.iou_weight, losses.soft_iou)]
    if cfg.wbce_weight or cfg.wiou_weight:
      boundary = losses.structure_weights(target)
      terms += [('wbce', cfg.wbce_weight, lambda x, y: losses.weighted_bce(x, y, boundary)),
                ('wiou', cfg.wiou_weight, lambda x, y: losses.weighted_iou(x, y, boundary))]
    parts = {prefix + name: losses.weighted_mean(fn(logits, target), weights)
             for name, weight, fn in terms if weight}
    total = sum(weight * parts[prefix + name] for name, weight, _ in terms if weight)
    return total, parts

  def loss(self, outputs: dict, batch: dict) -> tuple[jnp.ndarray, dict]:
    cfg = self.config
    logits, target = outputs['logits'], batch['masks'][:, -1]
    weights = batch['valid'][:, -1]
    total, parts = self._mask_loss(logits, target, weights)
    if cfg.aux_weight:
      aux = self._output(outputs, 'aux_logits')
      for k in range(aux.shape[1]):
        frame = k - aux.shape[1] - 1  # t-2, t-1 for two auxiliary frames.
        aux_total, aux_parts = self._mask_loss(aux[:, k], batch['masks'][:, frame],
                                               batch['valid'][:, frame], f'aux{k}_')
        total += cfg.aux_weight * aux_total
        parts.update(aux_parts)
    if cfg.heatmap_weight:
      parts['heatmap_mse'] = losses.weighted_mean(losses.mean_squared_error(
          self._output(outputs, 'heatmap'), self._heatmap_target(batch)), weights)
      total += cfg.heatmap_weight * parts['heatmap_mse']
    if cfg.contrastive_weight:
      parts['contrastive'], parts['contrastive_pairs'] = self._contrastive(outputs, batch)
      total += cfg.contrastive_weight * parts['contrastive']
    hard = (logits > 0).astype(jnp.float32)
    inter = jnp.sum(hard * target, axis=(1, 2, 3))
    size = jnp.sum(hard, axis=(1, 2, 3)) + jnp.sum(target, axis=(1, 2, 3))
    batch_dice = losses.weighted_mean(jnp.where(size > 0, 2 * inter / jnp.maximum(size, 1), 1.0),
                                      weights)
    return total, dict(parts, dice=batch_dice)

  @staticmethod
  def _output(outputs: dict, name: str) -> jnp.ndarray:
    if name not in outputs:
      raise ValueError(f'the model gives no {name!r} (outputs: {sorted(outputs)}): set the '
                       'matching config.task weight to 0 (aux_weight, heatmap_weight or '
                       'contrastive_weight), enable the localisation branch, or for '
                       'previous_heatmap train on clips of config.input.clip_length=4.')
    return outputs[name]

  @staticmethod
  def _heatmap_target(batch: dict) -> jnp.ndarray:
    if 'heatmaps' not in batch:
      raise ValueError('config.task.heatmap_weight > 0 needs heatmap targets: set '
                       'config.input.heatmap_sigma > 0.')
    return batch['heatmaps'][:, -1]

  def _contrastive(self, outputs: dict, batch: dict) -> tuple[jnp.ndarray, jnp.ndarray]:
    """The contrastive term and the fraction of examples that found a negative."""
    heatmap = self._output(outputs, 'heatmap')
    valid = batch['valid'][:, -1]
    pairs = (valid & jnp.roll(valid, 1, axis=0)
             & (batch['video_hash'] != jnp.roll(batch['video_hash'], 1, axis=0)))
    per_example = losses.location_contrastive(
        heatmap, self._output(outputs, 'previous_heatmap'), jnp.roll(heatmap, 1, axis=0),
        self.config.contrastive_margin)
    return (losses.weighted_mean(per_example, pairs),
            jnp.sum(pairs) / jnp.maximum(jnp.sum(valid), 1))

  def eval_outputs(self, outputs: dict, batch: dict) -> dict:
    """Everything the host evaluator needs, per example (computed on device)."""
    return {'probs': jax.nn.sigmoid(outputs['logits'][..., 0]),
            'masks': batch['masks'][:, -1, ..., 0], 'frames': batch['frames'][:, -1],
            'valid': batch['valid'][:, -1], 'frame_index': batch['frame_index'],
            'video_key': batch['video_key']}

  def evaluator(self) -> 'SegmentationEvaluation':
    return SegmentationEvaluation(self.config.threshold)


class SegmentationEvaluation:
  """Per-frame metrics for every valid example; per-video means in ``video_rows()``."""

  def __init__(self, threshold: float, max_videos: int = 4, max_frames: int = 6):
    self.metrics = metrics.SegmentationEvaluator(threshold)
    self.max_videos, self.max_frames = max_videos, max_frames
    # {video_id: [(frame_index, frame [H, W, C], mask [H, W], prob [H, W]), ...]} for plots.
    self.examples: dict[str, list[tuple]] = {}

  @property
  def rows(self) -> list[dict]:
    return self.metrics.rows

  def update(self, outputs: dict) -> None:
    """Adds the valid examples of one batch of ``SegmentationTask.eval_outputs``."""
    for i in np.flatnonzero(outputs['valid']):
      video, index = decode_key(outputs['video_key'][i]), int(outputs['frame_index'][i])
      self.metrics.update(outputs['probs'][i], outputs['masks'][i], video_id=video,
                          frame_index=index)
      self._keep_example(video, index, outputs['frames'][i], outputs['masks'][i],
                         outputs['probs'][i])

  def _keep_example(self, video: str, *example) -> None:
    if video not in self.examples and len(self.examples) >= self.max_videos:
      return
    kept = self.examples.setdefault(video, [])
    if len(kept) < self.max_frames:
      kept.append(example)

  def result(self) -> dict[str, float]:
    return self.metrics.result()

  def video_rows(self) -> list[dict]:
    videos: dict[str, list[dict]] = {}
    for row in self.rows:
      videos.setdefault(row['video_id'], []).append(row)
    return [{'video_id': v, 'num_frames': len(rows),
             **{k: float(np.mean([r[k] for r in rows])) for k in metrics.SEGMENTATION_KEYS}}
            for v, rows in videos.items()]


def decode_key(key: np.ndarray) -> str:
  """A video id from its zero-padded uint8 encoding (see input_pipeline.pipeline)."""
  return bytes(np.asarray(key, np.uint8)).rstrip(b'\0').decode('utf-8', 'replace')
