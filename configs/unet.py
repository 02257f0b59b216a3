"""Image U-Net baseline: per-frame segmentation of the target frame.

Variants: ``demo`` (README quick start, synthetic 128x128 data resized to 96), ``tiny``
(tests; seconds per step on a CPU), ``paper`` (352x352, the width of the original U-Net,
Adam 1e-4 for 100 epochs-equivalent).
"""
from configs import common


def _demo(c):
  c.total_steps, c.log_every, c.eval_every, c.checkpoint_every = 400, 20, 100, 100
  c.input.image_size = 96


def _tiny(c):
  c.dataset.config = 'tiny'
  c.total_steps, c.log_every, c.eval_every, c.checkpoint_every = 6, 2, 3, 3
  c.input.update(image_size=32, batch_size=4, eval_batch_size=4, shuffle_buffer=32,
                 video_shuffle_buffer=4)
  c.model.update(width=4, levels=3)


def _paper(c):
  c.dataset.config = 'paper'
  c.total_steps, c.log_every, c.eval_every, c.checkpoint_every = 20000, 100, 1000, 1000
  c.input.update(image_size=352, channels=3, batch_size=16, eval_batch_size=16)
  c.model.update(width=64, levels=5)
  c.optimizer.lr = 1e-4


def get_config(arg: str | None = None):
  c = common.base_config('segmentation')
  c.model = common.ml_collections.ConfigDict(dict(name='unet', width=16, levels=4))
  return common.finalize(c, arg, {'demo': _demo, 'tiny': _tiny, 'paper': _paper})
