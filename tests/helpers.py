"""Helpers shared by tests."""
import importlib


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
