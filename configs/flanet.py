"""FLA-Net (Lin et al., MICCAI 2023): ``usvjax/models/flanet.py``.

Loss (Eq. 2): contrastive + MSE(heatmap) + BCE + IoU, all weights 1. Clips of 4 frames
(I_{t-3}..I_t) in training so the contrastive loss has H_{t-1}; the model itself uses 3.

Variants (combine with commas, e.g. ``configs/flanet.py:tiny,basic``; ``images_first``
after the others trains on clips from still images first, then on video, as STM does:
``usvjax/runners/images_then_video.py``):

* ``paper``: 352x352, Res2Net-50 26w4s (initialise it from ImageNet: convert the weights
  with experiments/convert_weights.py, pass ``--config.init.checkpoint=DIR``), Adam 5e-5,
  batch 24, 100 epochs, constant learning rate, heatmap sigma 5 pixels.
* ``released_code``: the released code's choices (jhl-Det/FLA-Net) on top of ``paper``:
  its architecture module by module (``design='released'``: FFA with its SE block on the
  stride-16 features only, after a 1/8 temporal channel shift, added to the current
  frame's features; one smp U-Net decoder (256, 128, 64, 32, 16) plus a transposed-conv
  heatmap head), so that its weights load (experiments/convert_weights.py --flanet);
  heatmap sigma 10; clips of 3 frames; and its training recipe (``train_w_hm.py``):

  - loss = ``structure_loss`` + 0.5 x MSE(heatmap, Gaussian target), no contrastive term
    (it is not in that code). ``structure_loss`` is written as F3Net's wBCE + wIoU, but
    its BCE call passes the deprecated ``reduce='none'``, which PyTorch reads as the old
    boolean ``reduce=True``: the call returns the plain mean BCE over the batch, and the
    boundary weights then cancel (sum(w * mean) / sum(w)). So the loss it trains with is
    plain BCE + boundary-weighted IoU (``bce_weight=1``, ``wiou_weight=1``,
    ``wbce_weight=0``; checked with torch in tests/test_flanet.py); set
    ``--config.task.wbce_weight=1 --config.task.bce_weight=0`` for the loss as written;
  - Adam with the learning rate multiplied by 0.1 at epoch 60 (``adjust_lr``: lr *
    0.1 ** (epoch // 60), epochs counted from 1, so the decay starts after 59 epochs):
    schedule 'step' with a boundary at 59 x steps per epoch;
  - every gradient element clamped to [-0.5, 0.5] (``clip_gradient(optimizer, 0.5)``:
    ``optimizer.clip_value``);
  - no augmentation (its loader only resizes; it also sprinkles 0.15% salt-and-pepper
    pixels into the training masks, which is not reproduced).

  The released defaults (options.py: lr 1e-4, batch 10; trainer.sh: lr 2e-4, batch 2,
  200 epochs; ``range(1, epoch)`` trains epoch - 1 epochs) differ from the paper's
  explicit Adam 5e-5, batch 24, 100 epochs, which are kept. Combine a scale after it
  (``released_code,tiny``).

**Steps per epoch.** One training example per annotated frame (the released loader makes
a clip ending at every frame of every training video; the last batch is kept), so an
epoch is ceil(frames / batch size) steps. The paper's 230 training videos are not
counted separately; at its average of 34,300 / 572 = 60 frames per video they hold
``TRAIN_FRAMES`` = 13,800 frames: 575 steps per epoch at batch 24, 57,500 steps for 100
epochs, the decay at step 59 x 575 = 33,925. ``steps_per_epoch`` computes it from the
batch size when the variant is applied; for another dataset or a later batch-size
override, set ``total_steps`` and ``schedule.step_boundaries`` to match.
* ``demo`` (minutes on a CPU), ``tiny`` (tests; a narrow Res2Net at 64x64).
* Table 3 ablations: ``basic`` (concat + 1x1 conv instead of FFA, no localisation branch),
  ``fla`` (Basic+FLA), ``lb`` (Basic+LB), ``fla_lb`` (Basic+FLA+LB), ``full`` (all of it,
  the default).
"""
import math

import ml_collections

from configs import common


TRAIN_FRAMES = 13_800  # The paper's 230 training videos at 34,300 / 572 frames per video.


def steps_per_epoch(c) -> int:
  """Training steps of one pass over the paper's training frames at ``c``'s batch size."""
  return math.ceil(TRAIN_FRAMES / c.input.batch_size)


def _paper(c):
  c.dataset.config = 'paper'
  c.input.update(image_size=352, channels=3, batch_size=24, eval_batch_size=24,
                 heatmap_sigma=5.0)
  epoch = steps_per_epoch(c)  # 575.
  c.total_steps, c.log_every = 100 * epoch, 100
  c.eval_every = c.checkpoint_every = 5 * epoch
  c.optimizer.lr = 5e-5
  c.schedule.name = 'constant'


def _released_code(c):
  _paper(c)
  c.model.update(design='released', decoder_channels=(256, 128, 64, 32, 16),
                 ffa_levels=('stride16',), ffa_combine='add', ffa_reduction=2,
                 temporal_shift=0.125, groups=8)
  c.input.update(heatmap_sigma=10.0, clip_length=3)
  c.input.augment.update(flip=False, crop_scale=1.0, brightness=0.0, contrast=0.0)
  c.task.update(bce_weight=1.0, iou_weight=0.0, wbce_weight=0.0, wiou_weight=1.0,
                heatmap_weight=0.5, contrastive_weight=0.0)
  c.optimizer.clip_value = 0.5
  c.schedule.update(name='step', step_boundaries=(59 * steps_per_epoch(c),), step_factor=0.1)


def _demo(c):
  c.total_steps, c.log_every, c.eval_every, c.checkpoint_every = 300, 20, 100, 100
  c.input.update(image_size=64, batch_size=8, eval_batch_size=8, heatmap_sigma=2.0)
  # Four decoder widths for the paper's design, five for the released one.
  c.model.update(backbone_width=0.125,
                 decoder_channels=(64, 32, 16, 8, 8)[:len(c.model.decoder_channels)])


def _tiny(c):
  c.dataset.config = 'tiny'
  c.total_steps, c.log_every, c.eval_every, c.checkpoint_every = 6, 2, 3, 3
  c.input.update(image_size=32, batch_size=4, eval_batch_size=4, shuffle_buffer=32,
                 video_shuffle_buffer=4, heatmap_sigma=1.5)
  c.model.update(backbone_width=0.0625, groups=4,
                 decoder_channels=(16, 8, 8, 4, 4)[:len(c.model.decoder_channels)])


def _ablation(aggregation: str, localization: bool, contrastive: bool):
  def apply(c):
    c.model.update(aggregation=aggregation, localization=localization)
    c.task.update(heatmap_weight=1.0 if localization else 0.0,
                  contrastive_weight=1.0 if contrastive else 0.0)
    c.input.clip_length = 4 if contrastive else 3
  return apply


def get_config(arg: str | None = None):
  c = common.base_config('segmentation')
  c.model = ml_collections.ConfigDict(dict(
      name='flanet', backbone='res2net50_26w_4s', backbone_width=1.0,
      decoder_channels=(256, 128, 64, 32), aggregation='ffa', ffa_levels=('stride32',),
      ffa_combine='replace', ffa_reduction=16, temporal_shift=0.0, localization=True,
      groups=32, design='paper'))
  c.input.update(clip_length=4, heatmap_sigma=5.0)
  c.init.target = 'encoder'  # --config.init.checkpoint=DIR loads converted ImageNet weights.
  c.task.update(bce_weight=1.0, dice_weight=0.0, iou_weight=1.0, heatmap_weight=1.0,
                contrastive_weight=1.0, contrastive_margin=1e-3)
  return common.finalize(c, arg, {
      'demo': _demo, 'tiny': _tiny, 'paper': _paper, 'released_code': _released_code,
      'basic': _ablation('concat', False, False), 'fla': _ablation('ffa', False, False),
      'lb': _ablation('concat', True, False), 'fla_lb': _ablation('ffa', True, False),
      'full': _ablation('ffa', True, True), 'images_first': common.images_then_video})
