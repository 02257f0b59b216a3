"""A released FLA-Net PyTorch ``state_dict`` -> variables of usvjax's FLA-Net (``released_code``).

The released model (jhl-Det/FLA-Net: an smp ``Unet`` on ``timm-res2net50_26w_4s`` with its
``FAM`` and ``HeatmapHead``) and ``usvjax.models.flanet_released.ReleasedFLANet`` (what
``FLANet(design='released')`` builds, in its own scope) are the same network module by
module, so its 590 tensors map by name:

| PyTorch prefix | Flax module |
|---|---|
| ``encoder.`` | ``encoder/`` (Res2Net names as in ``backbones/convert.py``) |
| ``decoder.blocks.<i>.conv<k>.{0,1}.`` | ``decoder/block<i>_conv<k>/{Conv_0,BatchNorm_0}`` |
| ``FAM_list.0.`` | ``fusions_<level>/`` (``se_block1``, ``se_block2``, ``reduce``, ``norm``) |
| ``heatmaphead_list.0.`` | ``heatmap_head/`` (``upsample1``, ``upsample2``, ``upsample3``) |
| ``segmentation_head.0.`` | ``segmentation_head`` |

Below the prefix a numeric component joins the previous one (``layer1.0`` -> ``layer1_0``).
Leaves: ``weight`` is a convolution's ``kernel`` (4-D; [O, I, kh, kw] -> [kh, kw, I, O];
the transposed convolutions' [I, O, kh, kw] takes the same transposition, as they use
``transpose_kernel=True``) or a norm's ``scale``; ``bias`` as is; ``running_mean`` and
``running_var`` go to ``batch_stats``; ``num_batches_tracked`` is not needed (reported as
unused, like every tensor that finds no place; see ``convert.Report``).

PyTorch is needed only to read a ``.pth`` (``convert.load_state_dict``); a state dict of
numpy arrays converts without it.
"""
from __future__ import annotations

from collections.abc import Callable
import re

import numpy as np
from flax import traverse_util

from usvjax.models.backbones import convert

IGNORED_SUFFIX = 'num_batches_tracked'
_RENAMES = (
    (r'^FAM_list\.0\.', 'fusions_{level}.'),
    (r'^heatmaphead_list\.0\.', 'heatmap_head.'),
    (r'^segmentation_head\.0\.', 'segmentation_head.'),
    (r'^decoder\.blocks\.(\d+)\.conv(\d)\.0\.', r'decoder.block\1_conv\2.Conv_0.'),
    (r'^decoder\.blocks\.(\d+)\.conv(\d)\.1\.', r'decoder.block\1_conv\2.BatchNorm_0.'),
)
# Where a leaf may sit under its module: a convolution's kernel, a Flax norm's own
# parameters, or those of the Res2Net's norm wrapper (``bn1/norm``).
_LEAVES = {
    'weight': (('params', 'kernel'), ('params', 'scale'), ('params', 'norm', 'scale')),
    'bias': (('params', 'bias'), ('params', 'norm', 'bias')),
    'running_mean': (('batch_stats', 'mean'), ('batch_stats', 'norm', 'mean')),
    'running_var': (('batch_stats', 'var'), ('batch_stats', 'norm', 'var')),
}


def path_finder(variables: dict, level: str = 'stride16'
                ) -> Callable[[str, int], tuple[str, ...] | None]:
  """``path_of(key, ndim)`` for ``convert.convert``: the Flax path of a released tensor in
  ``variables`` (its FFA at ``level``), or None if it has no place there."""
  paths = set(traverse_util.flatten_dict(variables))

  def path_of(key: str, ndim: int) -> tuple[str, ...] | None:
    del ndim  # The Flax module tells a kernel from a norm scale.
    for pattern, replacement in _RENAMES:
      key = re.sub(pattern, replacement.replace('{level}', level), key)
    modules, leaf = convert.module_path(key)
    for collection, *inner in _LEAVES.get(leaf, ()):
      path = (collection, *modules, *inner)
      if path in paths:
        return path
    return None

  return path_of


def convert_state_dict(state_dict: dict[str, np.ndarray], variables: dict,
                       level: str = 'stride16') -> tuple[dict, convert.Report]:
  """Fills ``variables`` (``{'params', 'batch_stats'}`` of ``FLANet(design='released')``)
  from a released state dict; returns them and the report of what did not fit."""
  return convert.convert(state_dict, variables, path_finder(variables, level))


def import_file(path: str, variables: dict, level: str = 'stride16'
                ) -> tuple[dict, convert.Report]:
  """``convert_state_dict`` of a ``.pth`` (needs PyTorch) or ``.safetensors`` file."""
  return convert_state_dict(convert.load_state_dict(path), variables, level)


def problems(report: convert.Report) -> list[str]:
  """What keeps a conversion from being exact: every missing variable, mismatched shape
  and unused tensor (other than the ``num_batches_tracked`` counters)."""
  return (report.missing + report.mismatched
          + [k for k in report.unused if not k.endswith(IGNORED_SUFFIX)])
