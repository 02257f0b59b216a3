"""Shared config skeleton: every method's config starts from ``base_config``.

Variants are chosen by the string after the colon: ``configs/unet.py:tiny``. ``paper``
reproduces the paper's settings; ``tiny`` trains in a minute on a 2-core CPU (tests);
``demo`` is the README quick start. Configs are locked: an override of a key that does
not exist is an error naming the key.

Configs are plain data: they import ml_collections and each other, no library code
(tests/test_pure_configs.py), so loading one imports neither JAX nor TensorFlow.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

import ml_collections


class VariantError(ValueError):
  """An unknown config variant; the message names it and the valid ones (``choices``)."""

  def __init__(self, name: str, choices: Iterable[str] = (), context: str = ''):
    self.choices = sorted(choices)
    # ml_collections re-raises a config file's error as ``type(e)(message)``: a message
    # alone stays that message.
    super().__init__(f'unknown config variant {name!r}{context}; choose from {self.choices}.'
                     if self.choices else name)


class TaskSchema(NamedTuple):
  """What a task (``config.input.task``, an entry of ``usvjax.tasks.TASKS``) adds to the
  schema; tests/test_pure_configs.py checks it against the task's code."""
  task: dict  # ``config.task``: every key the task reads, with its default.
  input: dict  # The task's own ``config.input`` keys, with their defaults.
  best_metric: str  # The validation metric that ranks checkpoints by default.


TASKS = {
    'segmentation': TaskSchema(
        # nsd_tolerance_px / nsd_tolerance_mm: the boundary tolerance of the normalised
        # surface Dice, nsd (pixels of the scored frame) and nsd_mm (where the spacing is
        # known); set them to the tracings' inter-observer boundary variation
        # (usvjax/metrics/distances.py).
        # consistency_weight > 0: a mean teacher (needs optimizer.ema_decay > 0) pulls the
        # model towards its EMA on the unannotated target frames, the student's frames with
        # Gaussian noise of std consistency_noise (usvjax/loss_terms/mean_teacher.py).
        task=dict(bce_weight=1.0, dice_weight=1.0, iou_weight=0.0, wbce_weight=0.0,
                  wiou_weight=0.0, threshold=0.5, nsd_tolerance_px=2.0, nsd_tolerance_mm=1.0,
                  consistency_weight=0.0, consistency_noise=0.1),
        # eval_resolution: 'native' (each frame's stored size) or 'model' (input.image_size),
        # see usvjax/tasks/segmentation_evaluation.py; overlay_videos: how many videos the
        # report's overlays show.
        input=dict(eval_resolution='native', overlay_videos=3),
        # The mean Dice over the lesion frames: a model that predicts nothing scores 0
        # (mean_dice counts a lesion-free frame predicted empty as 1; docs/segmentation.md).
        best_metric='lesion_dice'),
    'classification': TaskSchema(
        task=dict(frame_loss=False, threshold=0.5, threshold_rule='fixed'), input={},
        best_metric='auc'),
    'contrastive': TaskSchema(
        task=dict(temperature=0.5),
        # Positive pairs: two views of one frame ('same_frame') or of two frames of one
        # video ('same_video'); see input_pipeline/view_pairs.py.
        input=dict(positives='same_frame'),
        best_metric='contrastive_accuracy'),
}


def base_config(task: str) -> ml_collections.ConfigDict:
  """All keys a run of ``task`` (a key of ``TASKS``) reads, with defaults; method configs
  change values, and add only the keys of their own loss terms
  (``c.task.update(aux_weight=1.0)``, see ``usvjax.loss_terms``) and of their runner
  (``usvjax.runners``)."""
  schema = TASKS[task]
  c = ml_collections.ConfigDict()
  c.seed = 0
  # Accelerator switches (usvjax/core/execution.py, usvjax/core/train.py; docs/performance.md):
  # 'bfloat16' computes in bfloat16 with float32 parameters, optimizer state, BatchNorm
  # statistics, losses and metrics; remat recomputes the backbones' residual blocks in the
  # backward pass instead of storing their activations; profile_steps > 0 traces that many
  # training steps (from the second) into <workdir>/tensorboard; pointwise_matmul runs the
  # backbones' 1x1 convolutions as matrix products (same numbers; their gradients are
  # several times faster under XLA:CPU).
  c.compute_dtype = 'float32'
  c.remat = False
  c.pointwise_matmul = True
  c.profile_steps = 0
  # How the run is trained and evaluated (usvjax/runners/__init__.py): 'single' (one model),
  # 'two_stage' (a frame CNN, its feature cache, sequence models; needs c.frame_cnn),
  # 'pretrain_finetune' (contrastive pretraining, then the model; needs c.pretrain),
  # 'images_then_video' (a video segmenter on clips from still images, then on video;
  # needs c.image_stage: images_then_video below).
  c.runner = 'single'
  c.total_steps = 1000
  c.log_every = 50
  c.eval_every = 500
  c.checkpoint_every = 500
  c.keep_checkpoints = 2
  c.best_metric = schema.best_metric
  c.best_mode = 'max'
  # > 0: training stops after this many evaluations in a row without an improvement of
  # best_metric (usvjax/core/early_stopping.py); 0 trains for total_steps.
  c.early_stopping_patience = 0
  # Evaluations during training besides dataset.eval_split (which ranks checkpoints), as
  # big_vision's config.evals: {name: {split, speckle_looks}}, each logged as <name>/...
  # every eval_every steps (usvjax/core/train.py). speckle_looks > 0 scores the split with
  # multiplicative speckle of that look number (the robustness study's noise), e.g.
  #   c.evals.test = ml_collections.ConfigDict(dict(split='test', speckle_looks=0.0))
  #   c.evals.speckle_l20 = ml_collections.ConfigDict(dict(split='test', speckle_looks=20.0))
  c.evals = ml_collections.ConfigDict()
  # What python -m experiments.evaluate does beyond scoring (its --tta, --clips,
  # --calibrate and --weights set these; usvjax/core/evaluate.py, docs/classification.md):
  # tta 'flip' averages a segmenter's prediction with the un-flipped prediction of the
  # width-flipped frames; clips K > 1 averages a classifier's class probabilities over K
  # frame samplings; calibrate fits a classifier's temperature on dataset.eval_split
  # (<workdir>/calibration.json); weights 'raw' scores a run's trained parameters where it
  # keeps EMA weights (optimizer.ema_decay > 0), 'ema' those.
  c.evaluation = ml_collections.ConfigDict(dict(tta='none', clips=1, calibrate=False,
                                                weights='ema'))

  c.dataset = ml_collections.ConfigDict(dict(
      name='usv_synthetic', config='small', data_dir='', manual_dir='',
      train_split='train', eval_split='validation', test_split='test'))
  # k-fold cross-validation (experiments/cross_validate.py sets these): with num > 0,
  # training and evaluation both draw from train_split, split by video into num folds.
  c.dataset.folds = ml_collections.ConfigDict(dict(num=0, index=0, seed=0))

  c.input = ml_collections.ConfigDict(dict(
      task=task, image_size=128, channels=1, batch_size=8, eval_batch_size=8,
      clip_length=3,  # Segmentation: the target frame and its clip_length - 1 predecessors.
      # Training targets: 'every_frame' (a video's first frames with the first frame
      # repeated before them) or 'distinct_frames' (clips of clip_length distinct frames).
      train_clips='every_frame',
      # Classification sequences: max_frames sampled uniformly, 'up_to' (all frames of a
      # shorter video) or 'exact' (frames of a shorter video repeat); evaluation takes each
      # segment's frame at eval_offset of it (the centre; evaluate --clips sets others).
      max_frames=16, length_buckets=(4, 8, 16), sampling='up_to', eval_offset=0.5,
      shuffle_buffer=512, video_shuffle_buffer=64, heatmap_sigma=0.0,
      # Segmentation evaluation: 'clip' scores every frame as the target of its clip;
      # 'first_frame' (semi-supervised, STPFNet) streams each whole video from its first
      # frame's given mask and scores the later frames.
      eval_protocol='clip',
      # Segmentation training on clips made from still images (STM's first stage): each
      # clip is one annotated frame, every copy deformed by its own random affine
      # (input.augment.affine; input_pipeline/image_clips.py).
      image_clips=False, **schema.input))
  c.input.augment = ml_collections.ConfigDict(dict(
      flip=True, crop_scale=0.8, brightness=0.1, contrast=0.1, speckle_prob=0.0,
      speckle_looks=(20.0, 50.0),
      # Elastic deformation: a smooth random displacement of up to elastic_alpha of the
      # frame size, with probability elastic_prob.
      elastic_prob=0.0, elastic_alpha=0.05))
  # The image clips' affine ranges: degrees of rotation and shear, relative zoom, shift as
  # a fraction of the frame size (each drawn uniformly in [-range, range]).
  c.input.augment.affine = ml_collections.ConfigDict(dict(
      rotation=15.0, shear=10.0, zoom=0.15, shift=0.1))

  c.model = ml_collections.ConfigDict({'name': ''})
  # Pretrained weights: a folder written by experiments/convert_weights.py, loaded into the
  # model's sub-module ``init.target`` ('/'-separated path) before training starts.
  c.init = ml_collections.ConfigDict(dict(checkpoint='', target='encoder/backbone'))
  c.task = ml_collections.ConfigDict(schema.task)

  c.optimizer = ml_collections.ConfigDict(dict(
      name='adam', lr=1e-3, weight_decay=0.0, momentum=0.9, clip_norm=0.0, clip_value=0.0,
      # Gradient accumulation: each step's batch as this many micro-batches, one update.
      accumulate_steps=1,
      # > 0: an exponential moving average of the parameters (ema = d * ema + (1 - d) *
      # params after each update) validates, ranks and is evaluated (usvjax/core/state.py).
      ema_decay=0.0))
  c.schedule = ml_collections.ConfigDict(dict(
      name='cosine', warmup_steps=0, step_boundaries=(), step_factor=0.1))
  return c


def finalize(config: ml_collections.ConfigDict, arg: str | None, variants: dict) -> ml_collections.ConfigDict:
  """Applies the variants named by ``arg`` (comma-separated, in order; default: the first
  one) and locks the config."""
  for name in (arg or next(iter(variants))).split(','):
    if name not in variants:
      raise VariantError(name, variants)
    variants[name](config)
  config.lock()
  return config


def images_then_video(c: ml_collections.ConfigDict, total_steps: int | None = None) -> None:
  """A video segmenter trained first on clips made from still images (``input.image_clips``)
  for ``total_steps`` (default: the run's), then on video (usvjax/runners/images_then_video.py).
  The image stage reads the run's dataset unless ``image_stage.dataset_*`` name another
  (e.g. a dataset of annotated stills)."""
  c.runner = 'images_then_video'
  c.image_stage = ml_collections.ConfigDict(dict(
      total_steps=total_steps or c.total_steps, dataset_name='', dataset_config='',
      dataset_manual_dir=''))


def classification_demo(c: ml_collections.ConfigDict) -> None:
  """The ``demo`` variant shared by the video classifiers: minutes on a CPU."""
  c.total_steps, c.log_every, c.eval_every, c.checkpoint_every = 300, 20, 100, 100
  c.input.update(image_size=64, batch_size=8, eval_batch_size=8)


def classification_tiny(c: ml_collections.ConfigDict) -> None:
  """The ``tiny`` variant shared by the video classifiers: seconds, for tests."""
  c.dataset.config = 'tiny'
  c.total_steps, c.log_every, c.eval_every, c.checkpoint_every = 6, 2, 3, 3
  c.input.update(image_size=32, batch_size=4, eval_batch_size=4, max_frames=8,
                 length_buckets=(4, 8), shuffle_buffer=8, video_shuffle_buffer=4)
  c.model.update(width=4, levels=3)
