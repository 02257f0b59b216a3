"""C3D_BN (``usvjax/models/c3d.py``): the C3D row of Cui et al. Table 4.

  python -m experiments.train --config=configs/c3d.py:paper --workdir=runs/c3d

Variants:

* ``paper``: C3D with BatchNorm after every convolution and without conv5, 12 frames per
  video (the paper: "based on 16 frames not 12 frames") at 112x112 (C3D's), trained like
  the paper's frame CNN (``configs/cnn_aver.py:paper``): Adam 1e-5, constant, 300 epochs of
  its 649 training videos per fold in batches of 8 (82 steps per epoch: 24,600 steps),
  validation every 20 epochs. The paper gives no other setting for C3D_BN.
* ``demo`` (width 1/4, fc 256, 64x64), ``tiny`` (tests: width 1/16, fc 16, 32x32).
"""
import ml_collections

from configs import common
from configs import video_resnet


def _paper(c):
  c.dataset.config = 'paper'
  c.total_steps, c.log_every, c.eval_every, c.checkpoint_every = 24600, 100, 1640, 1640
  c.input.update(image_size=112, batch_size=8, eval_batch_size=8, max_frames=12,
                 length_buckets=(12,), sampling='exact')
  c.optimizer.lr = 1e-5
  c.schedule.name = 'constant'


def _demo(c):
  video_resnet.demo(c)
  c.model.fc = (256, 256)


def _tiny(c):
  video_resnet.tiny(c)
  c.model.fc = (16,)


def get_config(arg: str | None = None):
  c = common.base_config('classification')
  c.model = ml_collections.ConfigDict(dict(
      name='c3d', num_classes=2, stages=((64,), (128,), (256, 256), (512, 512)),
      fc=(4096, 4096), width=1.0, dropout=0.5))
  return common.finalize(c, arg, {'demo': _demo, 'tiny': _tiny, 'paper': _paper})
