"""DSANet (Zhou et al.): ``usvjax/models/dsanet.py``.

Loss (Eq. 6): Dice + wBCE + wIoU (F3Net's boundary-weighted structure loss) on the target
frame and on the two previous frames (auxiliary heads), summed. Clips of 3 frames.

Variants: ``paper``: 352x352, Res2Net-50 26w4s (ImageNet weights: convert them with
experiments/convert_weights.py and pass ``--config.init.checkpoint=DIR``), Adam 1e-4 with
weight decay 5e-4 (L2, as PyTorch's Adam), batch 2, random flips only, 15 epochs (the paper
does not give its splits; for about 8,000 training frames of ERUS10K's 10,000 that is
4,000 steps per epoch, 60,000 steps); ``demo`` (minutes on a CPU); ``tiny`` (tests);
``images_first`` (after the others, e.g. ``demo,images_first``: clips from still images
first, then video, as STM trains; ``usvjax/runners/images_then_video.py``).

Model and schedule of ``paper`` as released (ZhouL2001/DSANet): AFSA and self-attention at
stride 4 on 256 channels, 12 attention layers; linear warm-up over 15 // 8 = 1 epoch, then
cosine decay; every gradient element clipped to [-0.5, 0.5] (trainV4.py calls
``clip_gradient(optimizer, 0.5)`` from a utils.py that is not released; in the code that
script is copied from (PraNet's lineage) it clamps each element: optax.clip). Released
details optax does not copy: the scheduler steps once per epoch (and an extra step
before training skips the zero-lr warm-up epoch), the cosine ends at 1e-6 (T_max 15
epochs) and training stops after 14 epochs (``range(1, 15)``).
"""
import ml_collections

from configs import common


def _paper(c):
  c.dataset.config = 'paper'
  c.total_steps, c.log_every, c.eval_every, c.checkpoint_every = 60000, 100, 4000, 4000
  c.input.update(image_size=352, channels=3, batch_size=2, eval_batch_size=8)
  c.input.augment.update(flip=True, crop_scale=1.0, brightness=0.0, contrast=0.0)
  c.optimizer.update(lr=1e-4, weight_decay=5e-4, clip_value=0.5)
  c.schedule.update(name='cosine', warmup_steps=4000)


def _demo(c):
  c.total_steps, c.log_every, c.eval_every, c.checkpoint_every = 300, 20, 100, 100
  c.input.update(image_size=64, batch_size=8, eval_batch_size=8)
  c.model.update(backbone_width=0.125, channels=16, attention_layers=2)


def _tiny(c):
  c.dataset.config = 'tiny'
  c.total_steps, c.log_every, c.eval_every, c.checkpoint_every = 6, 2, 3, 3
  c.input.update(image_size=32, batch_size=4, eval_batch_size=4, shuffle_buffer=32,
                 video_shuffle_buffer=4)
  c.model.update(backbone_width=0.0625, channels=16, attention_layers=1)


def get_config(arg: str | None = None):
  c = common.base_config('segmentation')
  c.model = ml_collections.ConfigDict(dict(
      name='dsanet', backbone='res2net50_26w_4s', backbone_width=1.0, level='stride4',
      channels=256, attention_layers=12, similarity='channel', afsa='bounded', lgsa=True))
  c.input.clip_length = 3
  c.init.target = 'encoder'  # --config.init.checkpoint=DIR loads converted ImageNet weights.
  c.task.update(bce_weight=0.0, dice_weight=1.0, iou_weight=0.0, wbce_weight=1.0,
                wiou_weight=1.0, aux_weight=1.0)
  return common.finalize(c, arg, {'demo': _demo, 'tiny': _tiny, 'paper': _paper,
                                  'images_first': common.images_then_video})
