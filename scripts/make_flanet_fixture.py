r"""Makes ``tests/fixtures/flanet_released.npz``: the released FLA-Net's outputs under rule weights.

The parity test (``tests/test_flanet.py``) needs neither the released repository nor its
weights: every tensor of the released model's ``state_dict`` is filled by
:func:`rule_tensor`, a fixed function of the tensor's name and shape, and the frames by
:func:`rule_frames`; the fixture (about 50 KB) keeps only the names and shapes of the state
dict, the model's two outputs on those frames (``logits``, ``heatmap``) and the attention
of its two SE blocks (``se_block1_attention``, ``se_block2_attention``: sigmoid of the
``up`` convolution's output, one value per channel). The test rebuilds the same state
dict, writes it as a ``.pth``, imports it with ``usvjax.models.flanet_import`` (the path a
user's file takes) and compares all four.

Why the attention too: in the released model the frequency module's output does not
depend on its input (its iFFT of [Im X, Re X] used as real + j imaginary parts has a zero
real part for real features, see ``usvjax/models/flanet_released.py``), so the outputs
alone cannot see a change in the SE blocks or the temporal shift; their attention can (the temporal
shift's zero channels have attention input 0, the others 1).

To remake the fixture (nothing of the released code enters this project; it runs in /tmp):

  # The released code, as published (jhl-Det/FLA-Net, commit 4a5edee).
  git clone https://github.com/jhl-Det/FLA-Net /tmp/flanet_release
  # It imports segmentation_models_pytorch/base/heads.py, which the release lacks: take
  # it from segmentation-models-pytorch 0.3.2, the version the release is a copy of.
  python3.11 -m venv /tmp/flaref
  /tmp/flaref/bin/pip install torch timm==0.6.13 segmentation-models-pytorch==0.3.2 \
      pretrainedmodels==0.7.4 efficientnet-pytorch==0.7.1
  cp /tmp/flaref/lib/python3.11/site-packages/segmentation_models_pytorch/base/heads.py \
      /tmp/flanet_release/segmentation_models_pytorch/base/
  /tmp/flaref/bin/python scripts/make_flanet_fixture.py --release=/tmp/flanet_release \
      --output=tests/fixtures/flanet_released.npz

(timm 0.6.12, which smp 0.3.2 pins, does not import on Python 3.11; 0.6.13 is the same
code with that fixed. The fixture in the repository was made with torch 2.14.1 on CPU.)
The model is built exactly as the release's ``train_w_hm.py`` builds it
(``create_model('Unet', encoder_name='timm-res2net50_26w_4s', in_channels=3, classes=1)``,
without downloading ImageNet weights), put in eval mode and run on one clip of
``SIZE`` x ``SIZE`` frames; its clip order is newest first, so the frames go in reversed,
ImageNet-normalised, as its data loader makes them.
"""
from __future__ import annotations

import argparse
import math
import sys
import zlib

import numpy as np

SIZE = 64  # Frames of SIZE x SIZE; a multiple of 32, as the released model requires.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _uniform(name: str, count: int) -> np.ndarray:
  """``count`` numbers in [0, 1) from a hash of ``name`` and the index (integer arithmetic,
  so the same on every machine): murmur3's finaliser of index * golden ratio + crc32."""
  h = np.arange(count, dtype=np.uint32) * np.uint32(0x9E3779B1) + np.uint32(
      zlib.crc32(name.encode()))
  h ^= h >> np.uint32(16)
  h *= np.uint32(0x85EBCA6B)
  h ^= h >> np.uint32(13)
  h *= np.uint32(0xC2B2AE35)
  h ^= h >> np.uint32(16)
  return h.astype(np.float64) / 2.0**32


def rule_tensor(name: str, shape: tuple[int, ...]) -> np.ndarray:
  """The value of the PyTorch tensor ``name`` of ``shape`` (PyTorch layout), by its name:

  * ``running_var``: 0.5 + u; ``running_mean``: 0.2 (u - 1/2); ``num_batches_tracked``: 0;
  * other 1-D ``weight`` (norm scales): 0.75 + 0.5 u; every ``bias``: 0.2 (u - 1/2);
  * other ``weight`` (convolutions): (2u - 1) sqrt(3 / prod(shape[1:])), variance
    1 / fan-in, so activations keep their scale through the network;

  u = :func:`_uniform` of the name. float32 (int64 for ``num_batches_tracked``).
  """
  leaf = name.rsplit('.', 1)[-1]
  if leaf == 'num_batches_tracked':
    return np.zeros(shape, np.int64)
  u = _uniform(name, math.prod(shape)).reshape(shape)
  if leaf == 'running_var':
    value = 0.5 + u
  elif leaf == 'running_mean' or leaf == 'bias':
    value = 0.2 * (u - 0.5)
  elif leaf == 'weight' and len(shape) == 1:
    value = 0.75 + 0.5 * u
  else:
    value = (2.0 * u - 1.0) * math.sqrt(3.0 / math.prod(shape[1:]))
  return value.astype(np.float32)


def rule_frames() -> np.ndarray:
  """The input clip, usvjax layout: [1, 3 (t-2, t-1, t), SIZE, SIZE, 3] in [0, 1): a smooth
  moving blob (so the frames differ as video frames do) plus a little hashed noise."""
  y, x = np.meshgrid(np.arange(SIZE), np.arange(SIZE), indexing='ij')
  frames = []
  for t in range(3):
    blob = np.exp(-((x - 20 - 6 * t) ** 2 + (y - 30 + 3 * t) ** 2) / (2 * 9.0 ** 2))
    ramp = np.stack([x / SIZE, y / SIZE, 0.5 * np.ones_like(x, np.float64)], -1)
    frames.append(0.6 * blob[..., None] + 0.3 * ramp)
  noise = _uniform('input.frames', 3 * SIZE * SIZE * 3).reshape(3, SIZE, SIZE, 3)
  return (np.stack(frames) + 0.1 * noise)[None].astype(np.float32)


def rule_state_dict(shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
  """{name: rule_tensor(name, shape)} for every tensor of a state dict's layout."""
  return {name: rule_tensor(name, shape) for name, shape in shapes.items()}


def _released_outputs(release: str, frames: np.ndarray) -> tuple[dict, dict[str, np.ndarray]]:
  """Builds the released model from the release folder, fills it by the rule, runs it:
  (state dict shapes, {'logits', 'heatmap' (NHWC), 'se_block<i>_attention' [4c]})."""
  import torch  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, release)
  import segmentation_models_pytorch as smp  # pylint: disable=g-import-not-at-top
  if not smp.__file__.startswith(release):
    raise RuntimeError(f'segmentation_models_pytorch came from {smp.__file__}, not {release}.')
  model = smp.create_model(arch='Unet', encoder_name='timm-res2net50_26w_4s',
                           encoder_weights=None, in_channels=3, classes=1)
  shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
  model.load_state_dict({k: torch.from_numpy(v) for k, v in rule_state_dict(shapes).items()})
  model.eval()
  normalised = (frames - np.asarray(IMAGENET_MEAN)) / np.asarray(IMAGENET_STD)
  clip = normalised[:, ::-1].transpose(0, 1, 4, 2, 3).astype(np.float32)  # Newest first, NCHW.
  attention = {}
  for name in ('se_block1', 'se_block2'):
    getattr(model.FAM_list[0], name).up.register_forward_hook(
        lambda module, inputs, output, name=name: attention.update({name: output}))
  with torch.no_grad():
    masks, (heatmap,) = model(torch.from_numpy(np.ascontiguousarray(clip)))
  outputs = {'logits': masks.numpy().transpose(0, 2, 3, 1),
             'heatmap': heatmap.numpy().transpose(0, 2, 3, 1)}
  for name, pre_sigmoid in attention.items():
    outputs[f'{name}_attention'] = torch.sigmoid(pre_sigmoid).numpy().reshape(-1)
  return shapes, outputs


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--release', required=True, help='folder of the released FLA-Net code')
  parser.add_argument('--output', required=True, help='the .npz to write')
  args = parser.parse_args()
  shapes, outputs = _released_outputs(args.release, rule_frames())
  names = sorted(shapes)
  padded = np.zeros((len(names), 4), np.int32)
  for i, name in enumerate(names):
    padded[i, :len(shapes[name])] = shapes[name]
  np.savez_compressed(args.output, names=np.array(names), shapes=padded,
                      ndims=np.array([len(shapes[n]) for n in names], np.int8), **outputs)
  print(f'{args.output}: {len(names)} tensors; ' + ', '.join(
      f'{k} {v.shape} in [{v.min():.3g}, {v.max():.3g}]' for k, v in outputs.items()))


if __name__ == '__main__':
  main()
