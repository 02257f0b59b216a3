"""TSM, the temporal shift network (``usvjax/models/tsm.py``; CLMAN Table 4).

  python -m experiments.train --config=configs/tsm.py:paper --workdir=runs/tsm

Variants:

* ``paper``: TSM-ResNet-50, 1/8 of the channels shifted each way (residual shift), 8
  segments (in training one random frame per segment, TSM's; the centres in evaluation)
  at 224x224, dropout 0.5 before the classifier, in CLMAN Table 4's protocol (batch 8, 320
  epochs: 6,720 steps; see ``configs/video_resnet.py``). Optimiser of the released TSM
  code: SGD, momentum 0.9, weight decay 1e-4, learning rate 0.01 per 64 videos scaled to
  batch 8 (1.25e-3), cosine decay. The paper starts from ImageNet: convert a torchvision
  ResNet-50 with ``experiments/convert_weights.py --video=tsm_resnet50`` and pass it as
  ``--config.init.checkpoint`` (``init.target`` 'backbone').
* ``demo`` (ResNet-18 at width 1/4, 64x64), ``tiny`` (tests: width 1/16, one block per
  stage, 32x32).
"""
import ml_collections

from configs import common
from configs import video_resnet


def _paper(c):
  video_resnet.clman_table4(c, frames=8, image_size=224)
  c.model.arch = 'resnet50'
  c.optimizer.update(name='sgd', lr=0.01 * 8 / 64, momentum=0.9, weight_decay=1e-4)


def _tiny(c):
  video_resnet.tiny(c)
  c.model.depths = (1, 1, 1, 1)


def get_config(arg: str | None = None):
  c = common.base_config('classification')
  c.model = ml_collections.ConfigDict(dict(name='tsm', num_classes=2, arch='resnet18',
                                           width=1.0, shift_div=8, dropout=0.5,
                                           depths=()))  # () is the arch's.
  c.init.target = 'backbone'
  return common.finalize(c, arg, {'demo': video_resnet.demo, 'tiny': _tiny,
                                 'paper': _paper})
