"""Helpers shared by tests."""
import importlib
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_config(name: str, data_dir: str, **overrides):
  """``configs/<name>.py:tiny`` pointed at ``data_dir``, with dotted-key overrides."""
  config = importlib.import_module(f'configs.{name}').get_config('tiny')
  config.dataset.data_dir = data_dir
  for key, value in overrides.items():
    node = config
    *parents, leaf = key.split('.')
    for parent in parents:
      node = node[parent]
    node[leaf] = value
  return config


def flat_local(tree) -> dict:
  """{'a/b/c': numpy array} of a pytree of replicated arrays, from this process's copy."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  return {'/'.join(str(getattr(k, 'key', k)) for k in path): np.asarray(v.addressable_data(0))
          for path, v in jax.tree_util.tree_flatten_with_path(tree)[0]}
