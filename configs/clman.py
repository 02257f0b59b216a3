"""CLMAN (Huang et al., Front. Oncol. 2022): ``usvjax/models/clman.py``.

One command trains both stages (``runner='pretrain_finetune'``, ``usvjax.runners``):
contrastive pretraining of the extractor (``c.pretrain``, in ``<workdir>/pretrain``), then
the classifier in the workdir, its extractor (``init.target`` 'encoder', the extractor's
path in both models) initialised from the pretraining run::

  python -m experiments.train --config=configs/clman.py:paper --workdir=runs/clman

Per cross-validation fold the pretraining sees only that fold's training videos. The
pretraining alone is ``configs/clman.py:paper,pretrain``; ``scratch`` trains the classifier
without pretraining (Table 2's "without CL"), and with ``scratch`` an existing pretraining
run can be named in ``--config.init.checkpoint``.

Variants (combine with commas: a scale, then ``pretrain``, an aggregation or a Table 1 row):

* ``paper``: ResNet-18 + GroupNorm + non-local (stages 3, 4), T = 16 frames per video,
  batch 8, SGD lr 1e-4, momentum 0.9, weight decay 5e-4, 320 epochs (161 training videos:
  21 steps per epoch, 6,720 steps), cross entropy. 224x224 grey frames (the paper gives no
  size). The paper's "initial" learning rate has no schedule given: it stays constant;
  the whole network (pretrained extractor included) is fine-tuned. Pretraining: LARS lr
  9e-3, weight decay 1e-6 (neither on biases nor normalisation parameters, as SimCLR),
  batch 64, cosine annealing, temperature 0.5 (not given; SimCLR's), 8,192 epochs of 16
  frames per video (ceil(161 x 16 / 64) = 41 steps per epoch, the last one partial as in
  PyTorch's DataLoader: 335,872 steps; cut it down with --config.total_steps for a first
  try).
* ``demo`` (minutes on a CPU), ``tiny`` (tests).
* ``pretrain``: the SimCLR run alone (model ``simclr``, task ``contrastive``). Positive pairs:
  ``input.positives`` 'same_frame' (two augmentations of one frame, SimCLR's) or
  'same_video' (two frames of one video: "different cross-sections of the same lesion").
* Table 3: ``average``, ``max``, ``lstm``, ``self_attention``, ``external_attention``
  (``model.memory_units`` 64), ``efficient_mhsa`` (``model.attention_heads`` 8,
  ``model.attention_reduction`` 2) replace the multi-meta attention.
  ``--config.model.attention_temperature`` (1, Eq. 5) below 1 lets the multi-meta
  attention approach max pooling.
* Table 1 (the extractor's ablation, all without contrastive pretraining, so each implies
  ``scratch``): ``vanilla`` (ResNet-18 with BatchNorm), ``gn`` (GroupNorm), ``nl``
  (BatchNorm + non-local blocks in stages 3 and 4), ``gn_nl`` (GroupNorm + non-local, the
  paper's extractor).
"""
import ml_collections

from configs import common

TRAIN_VIDEOS = 161  # The paper: 268 videos, 107 for testing.


def _paper(c):
  c.dataset.config = 'paper'
  c.input.update(image_size=224, channels=1, max_frames=16, length_buckets=(16,))
  c.total_steps = 320 * -(-TRAIN_VIDEOS // 8)
  c.log_every, c.eval_every, c.checkpoint_every = 21, 210, 210
  c.input.update(batch_size=8, eval_batch_size=8, sampling='exact')
  c.optimizer.update(name='sgd', lr=1e-4, momentum=0.9, weight_decay=5e-4)
  c.schedule.name = 'constant'


def _paper_pretrain(c):
  c.dataset.config = 'paper'
  c.input.update(image_size=224, channels=1, max_frames=16, length_buckets=(16,))
  c.total_steps = 8192 * -(-TRAIN_VIDEOS * 16 // 64)
  c.log_every, c.eval_every, c.checkpoint_every = 100, 5000, 5000
  c.input.update(batch_size=64, eval_batch_size=64)
  c.optimizer.update(name='lars', lr=9e-3, weight_decay=1e-6, momentum=0.9)
  c.schedule.name = 'cosine'


def _demo(c):
  common.classification_demo(c)
  c.model.backbone_width = 0.25


def _demo_pretrain(c):
  _demo(c)
  c.input.max_frames = 4


def _tiny(c):
  common.classification_tiny(c)
  c.model.backbone_width = 0.0625
  c.input.image_size = 64  # GroupNorm needs more than one value per group at stride 32.


def _tiny_pretrain(c):
  _tiny(c)
  c.input.update(max_frames=2, length_buckets=(2,))


def _augment_views(c):
  """SimCLR's augmentations (Eq. 2's tau): flip, crop and scale, brightness, contrast,
  elastic deformation."""
  c.input.augment.update(flip=True, crop_scale=0.3, brightness=0.3, contrast=0.3,
                         elastic_prob=0.5)


def _scratch(c):
  """The classifier alone, from scratch or from --config.init.checkpoint."""
  c.runner = 'single'
  if 'pretrain' in c:
    del c['pretrain']


def _table1(c, norm, nonlocal_stages):
  """A row of Table 1: the extractor's norm and non-local stages, without pretraining."""
  c.model.update(norm=norm, nonlocal_stages=nonlocal_stages)
  _scratch(c)


AGGREGATIONS = ('average', 'max', 'lstm', 'self_attention', 'external_attention',
                'efficient_mhsa')
# Table 1: {variant: (norm, non-local stages)}.
TABLE1 = {'vanilla': ('batch', ()), 'gn': ('group', ()), 'nl': ('batch', (3, 4)),
          'gn_nl': ('group', (3, 4))}
PRETRAIN_SCALES = {'demo': _demo_pretrain, 'tiny': _tiny_pretrain, 'paper': _paper_pretrain}


def pretraining_config(scale: str = 'demo') -> ml_collections.ConfigDict:
  """The SimCLR pretraining config at ``scale`` ('demo', 'tiny' or 'paper')."""
  c = common.base_config('contrastive')
  c.model = ml_collections.ConfigDict(dict(
      name='simclr', backbone='resnet18', backbone_width=1.0, norm='group',
      nonlocal_stages=(3, 4), projection=(512, 128)))
  c.init.target = 'encoder'
  _augment_views(c)
  return common.finalize(c, scale, PRETRAIN_SCALES)


def get_config(arg: str | None = None):
  names = (arg or 'demo').split(',')
  scale = next((n for n in names if n in PRETRAIN_SCALES), 'demo')
  if 'pretrain' in names:
    unknown = [n for n in names if n not in (scale, 'pretrain')]
    if unknown:
      raise common.VariantError(unknown[0], PRETRAIN_SCALES, ' for pretraining')
    return pretraining_config(scale)
  c = common.base_config('classification')
  c.model = ml_collections.ConfigDict(dict(
      name='clman', num_classes=2, backbone='resnet18', backbone_width=1.0, norm='group',
      nonlocal_stages=(3, 4), aggregation='multi_meta', attention_layers=2,
      attention_temperature=1.0, hidden=256, memory_units=64, attention_heads=8,
      attention_reduction=2))
  c.init.target = 'encoder'  # The pretraining run initialises the extractor.
  c.runner = 'pretrain_finetune'
  c.pretrain = pretraining_config(scale)
  with c.pretrain.unlocked():  # One source of truth: pretraining uses the top level's.
    del c.pretrain['dataset'], c.pretrain['seed']
  variants = {'demo': _demo, 'tiny': _tiny, 'paper': _paper, 'scratch': _scratch}
  variants.update({a: lambda c, a=a: c.model.update(aggregation=a) for a in AGGREGATIONS})
  variants.update({name: lambda c, row=row: _table1(c, *row) for name, row in TABLE1.items()})
  return common.finalize(c, arg or 'demo', variants)
