"""PyTorch ``state_dict`` -> variables of ``video_resnet.VideoResNetTrunk``: torchvision's
video ResNets (``r3d_18``, ``mc3_18``, ``r2plus1d_18``, Kinetics-400) and, for TSM, a 2-D
torchvision ResNet (ImageNet).

Video ResNet keys map by name (``convert.module_path``: ``layer2.0.conv1.0.3.weight`` ->
``layer2_0/conv1_0_3``); the leaf decides the variable: a convolution's ``weight``
[O, I, kt, kh, kw] -> ``kernel`` [kt, kh, kw, I, O], a BatchNorm's ``weight``/``bias`` ->
``scale``/``bias``, ``running_mean``/``running_var`` -> ``batch_stats`` ``mean``/``var``.
A 2-D ResNet's keys are renamed to the trunk's first (``conv1``/``bn1`` -> ``stem.0``/
``stem.1``, ``layer<i>.<j>.conv<k>``/``bn<k>`` -> ``layer<i>.<j>.conv<k>.0``/``.1``) and
its [O, I, kh, kw] kernels become [1, kh, kw, I, O] (TSM's convolutions see one frame).

The conversion is ``convert.convert``'s, on kernels with their first two axes merged: a
Flax kernel [kt, kh, kw, I, O] is read as [kt kh, kw, I, O] and a PyTorch one
[O, I, kt, kh, kw] as [O, I, kt kh, kw], which ``convert.convert`` transposes as 2-D
kernels (a mismatch is reported in those merged shapes). ``fc.*`` (the Kinetics or
ImageNet classifier) and ``num_batches_tracked`` find no place and are reported as unused;
nothing is skipped silently (``convert.Report``).

PyTorch is needed only to read a ``.pth`` (``convert.load_state_dict``).
"""
from __future__ import annotations

import re

import numpy as np
from flax import traverse_util

from usvjax.models.backbones import convert

_LEAVES = {
    'weight': (('params', 'kernel'), ('params', 'scale')),
    'bias': (('params', 'bias'),),
    'running_mean': (('batch_stats', 'mean'),),
    'running_var': (('batch_stats', 'var'),),
}
_IMAGENET_RENAMES = (
    (r'^conv1\.', 'stem.0.'),
    (r'^bn1\.', 'stem.1.'),
    (r'^(layer\d+\.\d+)\.conv(\d)\.', r'\1.conv\2.0.'),
    (r'^(layer\d+\.\d+)\.bn(\d)\.', r'\1.conv\2.1.'),
)


def imagenet_key(key: str) -> str:
  """A 2-D torchvision ResNet key as the trunk's torchvision-video name (see above)."""
  for pattern, replacement in _IMAGENET_RENAMES:
    key = re.sub(pattern, replacement, key)
  return key


def _merged(array: np.ndarray, torch_layout: bool) -> np.ndarray:
  """A 5-D kernel with its two leading spatial(-temporal) axes merged; others as they are."""
  if np.ndim(array) != 5:
    return array
  shape = np.shape(array)
  if torch_layout:  # [O, I, kt, kh, kw] -> [O, I, kt kh, kw].
    return np.reshape(array, shape[:2] + (shape[2] * shape[3], shape[4]))
  return np.reshape(array, (shape[0] * shape[1],) + shape[2:])  # Flax [kt, kh, kw, I, O].


def convert_trunk(state_dict: dict[str, np.ndarray], variables: dict,
                  imagenet_2d: bool = False) -> tuple[dict, convert.Report]:
  """Fills ``variables`` (``{'params', 'batch_stats'}`` of a ``VideoResNetTrunk``) from a
  torchvision video ResNet's ``state_dict`` (or, ``imagenet_2d``, a 2-D ResNet's); returns
  the new variables (unmatched ones keep their values) and the report."""
  flat = traverse_util.flatten_dict(variables)
  merged = traverse_util.unflatten_dict({k: _merged(v, False) for k, v in flat.items()})
  paths = set(flat)

  def path_of(key: str, ndim: int) -> tuple[str, ...] | None:
    del ndim  # The trunk's variables tell a kernel from a norm scale.
    modules, leaf = convert.module_path(imagenet_key(key) if imagenet_2d else key)
    for collection, name in _LEAVES.get(leaf, ()):
      if (collection, *modules, name) in paths:
        return (collection, *modules, name)
    return None

  tensors = {k: _merged(v, True) for k, v in state_dict.items()}
  filled, report = convert.convert(tensors, merged, path_of)
  filled = {k: np.reshape(v, flat[k].shape) for k, v in traverse_util.flatten_dict(filled).items()}
  return traverse_util.unflatten_dict(filled), report
