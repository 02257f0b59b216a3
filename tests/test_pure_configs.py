"""Configs are plain data: loading any config, in any variant, imports nothing beyond
ml_collections (and what it imports), the standard library and the configs themselves; and
the task schema they hold (``configs/common.py:TASKS``) is the one the tasks read."""
import glob
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

import helpers
from configs import common
from usvjax import tasks

# Variants that get_config handles before its variant table (so its error does not list them).
_EXTRA_ARGS = {'configs.clman': ('pretrain', 'tiny,pretrain', 'paper,pretrain')}

# Run in a fresh interpreter: imports every config module, calls get_config with no argument
# and with each variant its VariantError lists (and _EXTRA_ARGS), and prints what was called
# and the top-level modules imported that are neither ml_collections' nor the stdlib's.
_PROBE = """
import importlib, importlib.util, json, sys
import ml_collections
allowed = set(sys.modules)
from configs import common
extra_args = json.loads(sys.argv[2])
called = []
def load(name):  # A path is loaded as --config loads a file: its package is not imported.
  if not name.endswith('.py'):
    return importlib.import_module(name)
  spec = importlib.util.spec_from_file_location('user_config', name)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module
for name in json.loads(sys.argv[1]):
  module = load(name)
  try:
    module.get_config('no such variant')
    raise AssertionError(f'{name}: an unknown variant raised nothing')
  except common.VariantError as e:
    choices = e.choices
  for arg in [None, *choices, *extra_args.get(name, ())]:
    module.get_config(arg)
    called.append(f'{name}:{arg}')
imported = {m.split('.')[0] for m in set(sys.modules) - allowed}
print(json.dumps({'called': called, 'imported': sorted(
    imported - set(sys.stdlib_module_names) - {'configs', 'toy_method', 'ml_collections', 'absl'})}))
"""


def _config_modules() -> list[str]:
  """Every config module: configs/*.py and the toy method's file (as ``--config`` loads it:
  its package, which registers the method, is not imported)."""
  names = [f'configs.{os.path.basename(p)[:-3]}'
           for p in sorted(glob.glob(os.path.join(helpers.REPO, 'configs', '*.py')))]
  return [n for n in names if n not in ('configs.__init__', 'configs.common')] + [
      'tests/toy_method/config.py']


def test_loading_every_config_imports_no_library_code():
  result = subprocess.run(
      [sys.executable, '-c', _PROBE, json.dumps(_config_modules()), json.dumps(_EXTRA_ARGS)],
      cwd=helpers.REPO, capture_output=True, text=True, check=False,
      env=dict(os.environ, PYTHONPATH=os.pathsep.join(
          [helpers.REPO, os.path.join(helpers.REPO, 'tests')])))
  assert result.returncode == 0, result.stderr
  report = json.loads(result.stdout.splitlines()[-1])
  assert {'configs.unet:paper', 'configs.clman:paper,pretrain', 'tests/toy_method/config.py:tiny'
          } <= set(report['called'])
  assert not report['imported'], (
      f'loading the configs imported {report["imported"]}: configs may import only '
      'ml_collections and each other.')


class _Recorder(dict):
  """A ``config.task`` section that records the keys read from it (as item or attribute)."""

  def __init__(self, values: dict):
    super().__init__(values)
    self.read: set[str] = set()

  def __getitem__(self, key: str):
    self.read.add(key)
    return super().__getitem__(key)

  def __getattr__(self, key: str):
    return self[key]


def _arrays(**shapes) -> dict[str, jax.ShapeDtypeStruct]:
  """{name: ShapeDtypeStruct} from {name: (shape, dtype)}."""
  return {k: jax.ShapeDtypeStruct(shape, dtype) for k, (shape, dtype) in shapes.items()}


# {task: (model outputs, batch)} of 2 examples (3 frames of 8x8 pixels), shapes only.
_KEY = ((2, 16), jnp.uint8)
_EXAMPLES = {
    'segmentation': (_arrays(logits=((2, 8, 8, 1), jnp.float32)), _arrays(
        masks=((2, 3, 8, 8, 1), jnp.float32), valid=((2, 3), bool), annotated=((2, 3), bool),
        frame_index=((2,), jnp.int32), video_key=_KEY)),
    'classification': (_arrays(logits=((2, 2), jnp.float32)), _arrays(
        label=((2,), jnp.int32), valid=((2, 3), bool), video_key=_KEY)),
    'contrastive': (_arrays(projections=((2, 2, 8), jnp.float32)), _arrays(
        valid=((2, 2), bool), video_hash=((2,), jnp.int32))),
}


def test_the_schema_has_every_registered_task():
  assert set(common.TASKS) == set(tasks.TASKS) == set(_EXAMPLES)


@pytest.mark.parametrize('name', sorted(_EXAMPLES))
def test_each_task_reads_exactly_its_config_keys(name):
  """A task built on its ``config.task`` schema (no loss terms) reads every key of it, and
  only those, in its loss, its evaluation outputs and its evaluator (traced, not run); the
  schema's default best metric is one its evaluation reports."""
  schema, definition = common.TASKS[name], tasks.definition(name)
  config = _Recorder(schema.task)
  task = definition.task(config, 2)
  outputs, batch = _EXAMPLES[name]
  jax.eval_shape(task.loss, outputs, batch)
  jax.eval_shape(task.eval_outputs, outputs, batch)
  task.evaluator()
  assert config.read == set(schema.task)
  assert schema.best_metric in definition.metrics
