r"""Converts PyTorch weights into a usvjax checkpoint: ImageNet backbones, or a whole FLA-Net.

  python -m experiments.convert_weights --weights=resnet50-0676ba61.pth --arch=resnet50 \
      --output=weights/resnet50_imagenet
  python -m experiments.train --config=... --config.init.checkpoint=weights/resnet50_imagenet

--weights is a local torchvision ResNet or timm Res2Net state_dict (.pth/.pt, which needs
PyTorch installed, or .safetensors). Every tensor that does not find its place, and every
backbone variable left without a tensor, is listed; with --strict (default) any of them is
an error. Nothing is downloaded.

With --flanet, --weights is a state dict of the released FLA-Net (jhl-Det/FLA-Net, e.g.
its published checkpoint; a DataParallel ``module.`` prefix is removed), and the whole
model of ``configs/flanet.py:released_code`` is converted (``usvjax/models/flanet_import.py``;
--arch and --norm do not apply). Strict means every variable is filled and every tensor
but the ``num_batches_tracked`` counters is used:

  python -m experiments.convert_weights --flanet --weights=FLA-Net.pth \
      --output=weights/flanet_released
  python -m experiments.train --config=configs/flanet.py:released_code \
      --workdir=runs/flanet_released --config.init.checkpoint=weights/flanet_released \
      --config.init.target= --config.total_steps=0 [--config.dataset...]

(``init.target=`` empty: the whole model; ``total_steps=0`` evaluates the weights as they
are, as the run's step-0 checkpoint; more steps fine-tune them.)

With --video, the trunk (``init.target`` 'backbone') of a video network is converted
(``usvjax/models/backbones/video_convert.py``): r3d_18, mc3_18 or r2plus1d_18 from a
torchvision video ResNet state dict (Kinetics-400, e.g. r2plus1d_18-91a641e6.pth), or
tsm_resnet50 / tsm_resnet18 from a 2-D torchvision ResNet (ImageNet, as TSM starts):

  python -m experiments.convert_weights --video=r2plus1d_18 --weights=r2plus1d_18-91a641e6.pth \
      --output=weights/r2plus1d_18_kinetics
"""
from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from configs import flanet as flanet_config
from experiments import common
from usvjax import models
from usvjax.models import flanet_import
from usvjax.models import tsm
from usvjax.models import video_resnet
from usvjax.models.backbones import convert
from usvjax.models.backbones import resnet
from usvjax.models.backbones import video_convert

WEIGHTS = flags.DEFINE_string('weights', None, 'PyTorch state_dict file.')
ARCH = flags.DEFINE_enum('arch', 'resnet50', sorted(resnet.ARCHITECTURES), 'Architecture.')
OUTPUT = flags.DEFINE_string('output', None, 'Folder for the converted checkpoint.')
NORM = flags.DEFINE_enum('norm', 'batch', ['batch', 'group'], 'Normalisation of the model.')
STRICT = flags.DEFINE_bool('strict', True, 'Fail unless every backbone variable is loaded.')
FLANET = flags.DEFINE_bool('flanet', False, 'The weights are a released FLA-Net state dict: '
                           'convert the whole configs/flanet.py:released_code model.')
VIDEO = flags.DEFINE_enum(
    'video', None,
    sorted(video_resnet.ARCHITECTURES) + [f'tsm_{a}' for a in sorted(tsm.ARCHITECTURES)],
    'Convert the trunk of this video network (see above; --arch and --norm do not apply).')
flags.mark_flags_as_required(['weights', 'output'])


def _convert_flanet(state_dict: dict[str, np.ndarray]) -> dict:
  """The released FLA-Net's variables (see ``usvjax/models/flanet_import.py``)."""
  config = flanet_config.get_config('released_code').model
  model = models.create_model(config)
  batch = {'frames': jnp.zeros((1, 3, 64, 64, 3))}
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), batch, train=False))
  empty = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
  variables, report = flanet_import.convert_state_dict(state_dict, empty, config.ffa_levels[0])
  print(report.summary())
  if STRICT.value and flanet_import.problems(report):
    common.fail(ValueError('the weights are not the released FLA-Net (see above); pass '
                           '--nostrict to keep what fits.'))
  return variables


def _convert_video(state_dict: dict[str, np.ndarray]) -> dict:
  """The trunk of the --video network (see ``backbones/video_convert.py``)."""
  imagenet_2d = VIDEO.value.startswith('tsm_')
  trunk = (tsm.trunk(VIDEO.value.removeprefix('tsm_')) if imagenet_2d else
           video_resnet.VideoResNetTrunk(**video_resnet.ARCHITECTURES[VIDEO.value]))
  shapes = jax.eval_shape(lambda: trunk.init(
      jax.random.key(0), jnp.zeros((1, 2, 32, 32, 3)), jnp.ones((1, 2), bool), train=False))
  empty = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
  variables, report = video_convert.convert_trunk(state_dict, empty, imagenet_2d)
  print(report.summary())
  if STRICT.value and (report.missing or report.mismatched):
    common.fail(ValueError(f'the weights do not fit {VIDEO.value} (see above); pass --nostrict '
                           'to keep what fits.'))
  return variables


def main(argv):
  del argv
  try:
    state_dict = convert.load_state_dict(WEIGHTS.value)
  except (FileNotFoundError, ImportError) as e:
    common.fail(e)
  if FLANET.value:
    variables = _convert_flanet(state_dict)
    print(f'converted FLA-Net written to {convert.save_converted(variables, OUTPUT.value)}')
    return
  if VIDEO.value:
    variables = _convert_video(state_dict)
    print(f'converted {VIDEO.value} written to {convert.save_converted(variables, OUTPUT.value)}')
    return
  model = resnet.ResNet(ARCH.value, norm=NORM.value)
  variables = jax.jit(lambda x: model.init(jax.random.key(0), x, train=False))(
      jnp.zeros((1, 64, 64, 3)))
  variables, report = convert.convert(state_dict, variables)
  print(report.summary())
  if STRICT.value and (report.missing or report.mismatched):
    common.fail(ValueError('the weights do not fit the model (see above); pass --arch/--norm '
                           'for the right model, or --nostrict to keep what fits.'))
  print(f'converted backbone written to {convert.save_converted(variables, OUTPUT.value)}')


if __name__ == '__main__':
  app.run(main, flags_parser=common.parse_flags)
