"""CLMAN (Huang et al., Front. Oncol. 2022): ``usvjax/models/clman.py``.

Two runs: contrastive pretraining of the extractor (``pretrain``), then the classifier,
its extractor initialised from the pretraining run::

  python -m experiments.train --config=configs/clman.py:paper,pretrain --workdir=runs/clman_cl
  python -m experiments.train --config=configs/clman.py:paper --workdir=runs/clman \
      --config.init.checkpoint=runs/clman_cl

(``init.target`` is 'encoder', the extractor's path in both models; without
``init.checkpoint`` the classifier trains from scratch, Table 2's "without CL").

Variants (combine with commas: a scale, then ``pretrain`` or an aggregation):

* ``paper``: ResNet-18 + GroupNorm + non-local (stages 3, 4), T = 16 frames per video,
  batch 8, SGD lr 1e-4, momentum 0.9, weight decay 5e-4, 320 epochs (161 training videos:
  21 steps per epoch, 6,720 steps), cross entropy. 224x224 grey frames (the paper gives no
  size). Pretraining: LARS lr 9e-3, weight decay 1e-6, batch 64, cosine annealing,
  temperature 0.5 (not given; SimCLR's), 8,192 epochs of 16 frames per video (41 steps per
  epoch: 335,872 steps; cut it down with --config.total_steps for a first try).
* ``demo`` (minutes on a CPU), ``tiny`` (tests).
* ``pretrain``: the SimCLR run (model ``simclr``, task ``contrastive``). Positive pairs:
  ``input.positives`` 'same_frame' (two augmentations of one frame, SimCLR's) or
  'same_video' (two frames of one video: "different cross-sections of the same lesion").
* Table 3: ``average``, ``max``, ``lstm``, ``self_attention`` replace the multi-meta
  attention.
"""
import ml_collections

from configs import common

TRAIN_VIDEOS = 161  # The paper: 268 videos, 107 for testing.


def _paper(c):
  c.dataset.config = 'paper'
  c.input.update(image_size=224, channels=1, max_frames=16, length_buckets=(16,))
  if c.input.task == 'contrastive':
    c.total_steps = 8192 * (TRAIN_VIDEOS * 16 // 64)
    c.log_every, c.eval_every, c.checkpoint_every = 100, 5000, 5000
    c.input.update(batch_size=64, eval_batch_size=64)
    c.optimizer.update(name='lars', lr=9e-3, weight_decay=1e-6, momentum=0.9)
    c.schedule.name = 'cosine'
  else:
    c.total_steps = 320 * -(-TRAIN_VIDEOS // 8)
    c.log_every, c.eval_every, c.checkpoint_every = 21, 210, 210
    c.input.update(batch_size=8, eval_batch_size=8, sampling='exact')
    c.optimizer.update(name='sgd', lr=1e-4, momentum=0.9, weight_decay=5e-4)
    c.schedule.name = 'constant'


def _demo(c):
  common.classification_demo(c)
  c.model.backbone_width = 0.25
  if c.input.task == 'contrastive':
    c.input.max_frames = 4


def _tiny(c):
  common.classification_tiny(c)
  c.model.backbone_width = 0.0625
  c.input.image_size = 64  # GroupNorm needs more than one value per group at stride 32.
  if c.input.task == 'contrastive':
    c.input.update(max_frames=2, length_buckets=(2,))


def _pretrain(c):
  del c  # get_config builds the contrastive config when this variant is named.


def _augment_views(c):
  """SimCLR's augmentations (Eq. 2's tau): flip, crop and scale, brightness, contrast,
  elastic deformation."""
  c.input.augment.update(flip=True, crop_scale=0.3, brightness=0.3, contrast=0.3,
                         elastic_prob=0.5)


AGGREGATIONS = ('average', 'max', 'lstm', 'self_attention')


def get_config(arg: str | None = None):
  names = (arg or 'demo').split(',')
  if 'pretrain' in names:
    c = common.base_config('contrastive')
    c.model = ml_collections.ConfigDict(dict(
        name='simclr', backbone='resnet18', backbone_width=1.0, norm='group',
        nonlocal_stages=(3, 4), projection=(512, 128)))
    _augment_views(c)
  else:
    c = common.base_config('classification')
    c.model = ml_collections.ConfigDict(dict(
        name='clman', num_classes=2, backbone='resnet18', backbone_width=1.0, norm='group',
        nonlocal_stages=(3, 4), aggregation='multi_meta', attention_layers=2, hidden=256))
  c.init.target = 'encoder'  # --config.init.checkpoint=PRETRAINING_RUN loads the extractor.
  variants = {'demo': _demo, 'tiny': _tiny, 'paper': _paper, 'pretrain': _pretrain}
  variants.update({a: lambda c, a=a: c.model.update(aggregation=a) for a in AGGREGATIONS})
  return common.finalize(c, arg, variants)
