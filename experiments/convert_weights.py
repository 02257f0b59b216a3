r"""Converts PyTorch ImageNet weights into a backbone checkpoint for usvjax configs.

  python -m experiments.convert_weights --weights=resnet50-0676ba61.pth --arch=resnet50 \
      --output=weights/resnet50_imagenet
  python -m experiments.train --config=... --config.init.checkpoint=weights/resnet50_imagenet

--weights is a local torchvision ResNet or timm Res2Net state_dict (.pth/.pt, which needs
PyTorch installed, or .safetensors). Every tensor that does not find its place, and every
backbone variable left without a tensor, is listed; with --strict (default) any of them is
an error. Nothing is downloaded.
"""
from absl import app
from absl import flags
import jax
import jax.numpy as jnp

from experiments import common
from usvjax.models.backbones import convert
from usvjax.models.backbones import resnet

WEIGHTS = flags.DEFINE_string('weights', None, 'PyTorch state_dict file.')
ARCH = flags.DEFINE_enum('arch', 'resnet50', sorted(resnet.ARCHITECTURES), 'Architecture.')
OUTPUT = flags.DEFINE_string('output', None, 'Folder for the converted checkpoint.')
NORM = flags.DEFINE_enum('norm', 'batch', ['batch', 'group'], 'Normalisation of the model.')
STRICT = flags.DEFINE_bool('strict', True, 'Fail unless every backbone variable is loaded.')
flags.mark_flags_as_required(['weights', 'output'])


def main(argv):
  del argv
  try:
    state_dict = convert.load_state_dict(WEIGHTS.value)
  except (FileNotFoundError, ImportError) as e:
    common.fail(e)
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
