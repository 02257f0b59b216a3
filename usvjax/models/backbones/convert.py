"""PyTorch ``state_dict`` (torchvision ResNet, timm Res2Net) -> Flax backbone variables.

Names map mechanically because ``resnet.py`` mirrors the PyTorch module names: a numeric
path component joins the previous one with ``_`` (``layer1.0.convs.2`` ->
``layer1_0/convs_2``); norms hold their Flax layer as ``norm``. Leaves:

| PyTorch | Flax | transform |
|---|---|---|
| conv ``weight`` [O, I, kh, kw] | ``params/.../kernel`` | -> [kh, kw, I, O] |
| norm ``weight`` / ``bias`` | ``params/.../norm/scale`` / ``bias`` | as is |
| ``running_mean`` / ``running_var`` | ``batch_stats/.../norm/mean`` / ``var`` | as is |
| ``num_batches_tracked`` | — | not needed (ignored, reported) |
| ``fc.*`` (the ImageNet classifier) | — | not part of the trunk (ignored, reported) |

Nothing is skipped silently: :func:`convert` returns a report of every tensor that found no
place (``unused``), every Flax variable that got no tensor (``missing``) and every shape
that disagrees (``mismatched``). Loading into a GroupNorm model loads the convolutions and
reports the BatchNorm tensors as unused.
"""
from __future__ import annotations

from collections.abc import Callable
import dataclasses
import os

import numpy as np
from flax import traverse_util

_LEAVES = {'running_mean': ('batch_stats', 'mean'), 'running_var': ('batch_stats', 'var')}
_IGNORED_SUFFIXES = ('num_batches_tracked',)


@dataclasses.dataclass
class Report:
  loaded: list[str] = dataclasses.field(default_factory=list)
  unused: list[str] = dataclasses.field(default_factory=list)
  missing: list[str] = dataclasses.field(default_factory=list)
  mismatched: list[str] = dataclasses.field(default_factory=list)

  def summary(self) -> str:
    lines = [f'loaded {len(self.loaded)} tensors']
    for name in ('unused', 'missing', 'mismatched'):
      items = getattr(self, name)
      if items:
        shown = ', '.join(items[:8]) + (' ...' if len(items) > 8 else '')
        lines.append(f'{name} ({len(items)}): {shown}')
    return '\n'.join(lines)


def load_state_dict(path: str) -> dict[str, np.ndarray]:
  """Tensors of a ``.pth``/``.pt`` (torch) or ``.safetensors`` file as numpy arrays."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f'weights file {path!r} does not exist.')
  if path.endswith('.safetensors'):
    from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
    return dict(load_file(path))
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(f'reading {path!r} needs PyTorch (pip install torch); or convert it to '
                      '.safetensors first.') from e
  state = torch.load(path, map_location='cpu', weights_only=True)
  state = state.get('state_dict', state.get('model', state)) if isinstance(state, dict) else state
  return {k.removeprefix('module.'): v.detach().cpu().numpy() for k, v in state.items()}


def module_path(torch_key: str) -> tuple[list[str], str]:
  """(Flax module names, leaf) of a PyTorch key: ``layer1.0.convs.2.weight`` ->
  (['layer1_0', 'convs_2'], 'weight'); a numeric component joins the previous one."""
  parts = torch_key.split('.')
  leaf, modules = parts[-1], []
  for part in parts[:-1]:
    if part.isdigit() and modules:
      modules[-1] = f'{modules[-1]}_{part}'
    else:
      modules.append(part)
  return modules, leaf


def flax_path(torch_key: str, ndim: int) -> tuple[str, ...] | None:
  """('params'|'batch_stats', module..., leaf) for a PyTorch key; None if not in a trunk."""
  modules, leaf = module_path(torch_key)
  if not modules or modules[0] == 'fc' or leaf in _IGNORED_SUFFIXES:
    return None
  if leaf in _LEAVES:
    collection, name = _LEAVES[leaf]
    return (collection, *modules, 'norm', name)
  if leaf == 'weight' and ndim == 4:
    return ('params', *modules, 'kernel')
  if leaf in ('weight', 'bias') and ndim == 1:
    return ('params', *modules, 'norm', 'scale' if leaf == 'weight' else 'bias')
  if leaf == 'bias':
    return ('params', *modules, 'bias')
  return None


def convert(state_dict: dict[str, np.ndarray], variables: dict,
            path_of: Callable[[str, int], tuple[str, ...] | None] = flax_path
            ) -> tuple[dict, Report]:
  """Fills ``variables`` (``{'params', 'batch_stats'}`` of a ResNet) from ``state_dict``.

  ``path_of(key, ndim)`` places a tensor (default: :func:`flax_path`, a trunk's names; the
  released FLA-Net's are in ``usvjax/models/flanet_import.py``); 4-D tensors are
  convolution weights, transposed to Flax's layout. Returns the new variables (unmatched
  ones keep their values) and the report.
  """
  flat = traverse_util.flatten_dict(variables)
  report = Report()
  for key, tensor in state_dict.items():
    path = path_of(key, np.ndim(tensor))
    if path is None or path not in flat:
      report.unused.append(key)
      continue
    value = np.transpose(tensor, (2, 3, 1, 0)) if path[-1] == 'kernel' else np.asarray(tensor)
    if value.shape != tuple(flat[path].shape):
      report.mismatched.append(f'{key} {tuple(value.shape)} vs {"/".join(path)} '
                               f'{tuple(flat[path].shape)}')
      continue
    flat[path] = value.astype(flat[path].dtype)
    report.loaded.append(key)
  loaded = {path_of(k, np.ndim(state_dict[k])) for k in report.loaded}
  report.missing = ['/'.join(p) for p in flat if p not in loaded]
  return traverse_util.unflatten_dict(flat), report


def save_converted(variables: dict, directory: str) -> str:
  """Writes converted backbone variables as an orbax checkpoint any config can name."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  directory = os.path.abspath(directory)
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(directory, variables)
  return directory


def load_converted(directory: str) -> dict:
  """Reads what :func:`save_converted` wrote (numpy arrays on the host)."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  if not os.path.isdir(directory):
    raise FileNotFoundError(f'pretrained checkpoint {directory!r} does not exist; write it '
                            'with experiments/convert_weights.py.')
  with ocp.StandardCheckpointer() as checkpointer:
    return checkpointer.restore(os.path.abspath(directory))
