"""STPFNet (Tu et al.): ``usvjax/models/stpfnet.py``.

Training (Sec. III-E): clips of 3 consecutive, distinct frames (``input.train_clips=
'distinct_frames'``: no clip at a video's first two frames, whose memory frame would be the
target itself); frame 1 with its ground truth is the memory, frames 2 and 3 are predicted in
order; cross entropy on both (Eq. 12: BCE on the target frame 3 plus ``aux_weight`` = 1
times BCE on frame 2). Evaluation follows the semi-supervised protocol
(``input.eval_protocol='first_frame'``): each whole video, the first frame's ground truth
given, every later frame predicted from the memory and the previous prediction; the first
frame is not scored.

Variants (combine with commas, e.g. ``configs/stpfnet.py:tiny,no_sfm``):

* ``paper``: ResNet-50 (ImageNet weights: convert them with experiments/convert_weights.py
  and pass ``--config.init.checkpoint=DIR``), 352x352 RGB (the paper gives no input size;
  FLA-Net's). The paper names no optimizer, schedule or length: we take STM's Adam at
  1e-5, constant, batch 4, and 50 epochs of the paper's split (90% of UVBLS200's 10,666
  frames, about 9,600 clips: 2,400 steps per epoch, 120,000 steps). The paper splits the
  videos 90% / 10% (train / test) with no validation set: for UVBLS200 (DAVIS layout,
  ``--config.dataset.name=usv_davis --config.dataset.config=480p
  --config.dataset.manual_dir=DIR``) list the videos in ``ImageSets/2017/train.txt`` and
  ``val.txt`` (its ``validation`` split), set ``--config.dataset.eval_split=validation
  --config.dataset.test_split=validation`` and
  report the final checkpoint (``--which=latest``): picking the best on the test videos
  would flatter the result.
* ``demo`` (minutes on a CPU), ``tiny`` (tests).
* ``images_first`` (after the others, e.g. ``demo,images_first``): STM's recipe, clips made
  from still images (the training frames, or ``image_stage.dataset_*``) for as many steps
  as the run, then video (``usvjax/runners/images_then_video.py``).
* Table II-III ablations: ``baseline`` (STM: no SFM, no MSFF), ``no_sfm`` (MSFF only),
  ``no_msff`` (SFM, features summed), ``max_only``, ``avg_only``, ``no_w`` (MSFF without
  encoder features), ``w_stride8`` / ``w_stride16`` ("+2" / "+3"), ``no_mask`` (SFM without
  the previous-mask prior), and ``no_tfm`` (no memory read over past frames: beyond the
  paper, whose every variant keeps TFM). The default is the full model ("+4", both pools,
  mask prior).
* Memory encoder (``model.memory_encoder``): 'stm' (the default) encodes memory frames as
  STM does, with a network of its own whose first convolution takes the frame, its mask and
  the background, and memory key and value heads of its own; ``shared_memory`` (``'shared'``,
  the form before issue 41) encodes them with the query encoder and adds the mask at the
  memory value head. See ``usvjax/models/stpfnet_memory.py``.
"""
import ml_collections

from configs import common


def _paper(c):
  c.dataset.config = 'paper'
  c.total_steps, c.log_every, c.eval_every, c.checkpoint_every = 120000, 100, 4800, 4800
  c.input.update(image_size=352, channels=3, batch_size=4, eval_batch_size=4)
  c.input.augment.update(flip=True, crop_scale=0.8, brightness=0.0, contrast=0.0)
  c.optimizer.lr = 1e-5
  c.schedule.name = 'constant'


def _demo(c):
  c.total_steps, c.log_every, c.eval_every, c.checkpoint_every = 300, 20, 100, 100
  c.input.update(image_size=64, batch_size=8, eval_batch_size=8)
  c.model.update(backbone_width=0.125, decoder_channels=(64, 32, 16), msff_reduction=4)


def _tiny(c):
  c.dataset.config = 'tiny'
  c.total_steps, c.log_every, c.eval_every, c.checkpoint_every = 6, 2, 3, 3
  c.input.update(image_size=64, batch_size=4, eval_batch_size=4, shuffle_buffer=32,
                 video_shuffle_buffer=4)
  c.model.update(backbone='resnet18', backbone_width=0.0625, decoder_channels=(8, 8, 8),
                 msff_reduction=2, memory_size=3, memory_every=2)


ABLATIONS = {
    'baseline': dict(spatial_fusion=False, fusion='sum', fusion_level=''),
    'no_sfm': dict(spatial_fusion=False),
    'no_msff': dict(fusion='sum', fusion_level=''),
    'max_only': dict(pools=('max',)),
    'avg_only': dict(pools=('avg',)),
    'no_w': dict(fusion_level=''),
    'w_stride8': dict(fusion_level='stride8'),
    'w_stride16': dict(fusion_level='stride16'),
    'no_mask': dict(mask_prior=False),
    'no_tfm': dict(temporal_read=False),
    'shared_memory': dict(memory_encoder='shared'),
}


def _shared_memory(c):
  """The memory frames through the query encoder: no memory network to initialise."""
  c.model.update(**ABLATIONS['shared_memory'])
  c.init.target = 'encoder'


def get_config(arg: str | None = None):
  c = common.base_config('segmentation')
  c.model = ml_collections.ConfigDict(dict(
      name='stpfnet', backbone='resnet50', backbone_width=1.0,
      read_level='stride16', decoder_channels=(256, 128, 64), temporal_read=True,
      spatial_fusion=True, mask_prior=True, fusion='msff', pools=('avg', 'max'),
      fusion_level='stride32', msff_reduction=16, memory_size=5, memory_every=5,
      memory_encoder='stm'))
  c.input.update(clip_length=3, eval_protocol='first_frame', train_clips='distinct_frames')
  # --config.init.checkpoint=DIR loads converted ImageNet weights into the query encoder and
  # the memory encoder's trunk, as STM initialises both (shared_memory: the encoder only).
  c.init.target = 'encoder,memory_network/trunk'
  # Eqs. 10-12: cross entropy on frames 2 and 3, no overlap term (see the model docstring).
  c.task.update(bce_weight=1.0, dice_weight=0.0, iou_weight=0.0, aux_weight=1.0)
  variants = {'demo': _demo, 'tiny': _tiny, 'paper': _paper, 'full': lambda c: None,
              'images_first': common.images_then_video}
  variants.update({name: lambda c, kw=kw: c.model.update(**kw) for name, kw in ABLATIONS.items()})
  variants['shared_memory'] = _shared_memory
  return common.finalize(c, arg, variants)
