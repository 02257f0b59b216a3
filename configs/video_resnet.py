"""3-D ResNets of Tran et al. (``usvjax/models/video_resnet.py``): R3D-18, MC3-18, R(2+1)D-18,
the video-network rows of CLMAN Table 4 and Cui et al. Table 4.

  python -m experiments.train --config=configs/video_resnet.py:paper,r2plus1d --workdir=runs/r2p1d

Variants (a scale, then an architecture; default ``demo,r3d``):

* ``paper``: CLMAN Table 4's protocol ("only set the batch size and epoch number to the
  same as ours"): batch 8, 320 epochs of its 161 training videos (21 steps per epoch: 6,720
  steps), 16 frames per video sampled uniformly over the whole video ('exact'), 112x112
  (torchvision's Kinetics recipe). The rest is our choice for these networks: SGD with
  momentum 0.9, learning rate 1e-3, weight decay 1e-4, cosine decay with a 320-step warm-up.
  Start from Kinetics-400 with ``experiments/convert_weights.py --video=<arch>`` and
  ``--config.init.checkpoint`` (``init.target`` is 'backbone').
* ``demo`` (minutes on a CPU: width 1/4, 64x64), ``tiny`` (tests: width 1/16, one block
  per stage, 32x32).
* ``r3d``, ``mc3``, ``r2plus1d``: the architecture.

The helpers below are the scales every video-network baseline shares (``configs/tsm.py``,
``configs/c3d.py``, ``configs/timesformer.py``).
"""
import ml_collections

from configs import common

CLMAN_TRAIN_VIDEOS = 161  # CLMAN: 268 videos, 107 for testing; Table 4 uses its protocol.


def clman_table4(c: ml_collections.ConfigDict, frames: int, image_size: int) -> None:
  """CLMAN Table 4's batch (8) and epochs (320), ``frames`` per video at ``image_size``."""
  c.dataset.config = 'paper'
  c.total_steps = 320 * -(-CLMAN_TRAIN_VIDEOS // 8)
  c.log_every, c.eval_every, c.checkpoint_every = 21, 210, 210
  c.input.update(image_size=image_size, batch_size=8, eval_batch_size=8, max_frames=frames,
                 length_buckets=(frames,), sampling='exact')
  c.schedule.update(name='cosine', warmup_steps=c.total_steps // 21)


def demo(c: ml_collections.ConfigDict) -> None:
  common.classification_demo(c)
  c.model.width = 0.25


def tiny(c: ml_collections.ConfigDict) -> None:
  common.classification_tiny(c)
  del c.model['levels']  # classification_tiny's frame-CNN key; these models have none.
  c.model.width = 0.0625


def _tiny(c):
  tiny(c)
  c.model.depths = (1, 1, 1, 1)


def _paper(c):
  clman_table4(c, frames=16, image_size=112)
  c.optimizer.update(name='sgd', lr=1e-3, momentum=0.9, weight_decay=1e-4)


def get_config(arg: str | None = None):
  c = common.base_config('classification')
  c.model = ml_collections.ConfigDict(dict(name='video_resnet', num_classes=2, arch='r3d_18',
                                           width=1.0, depths=(2, 2, 2, 2)))
  c.init.target = 'backbone'
  variants = {'demo': demo, 'tiny': _tiny, 'paper': _paper}
  variants.update({name: lambda c, a=f'{name}_18': c.model.update(arch=a)
                   for name in ('r3d', 'mc3', 'r2plus1d')})
  return common.finalize(c, arg or 'demo,r3d', variants)
