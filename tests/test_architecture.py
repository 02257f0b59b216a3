"""The house's structure: one batch specification, registries instead of name checks, a
new method from one model file, one config and one registration line, restores without
the optimizer state, and no host sync per step that would hide which step went wrong."""
import ast
import importlib
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import helpers
from input_pipeline import pipeline
from input_pipeline import spec
from usvjax import losses
from usvjax import models
from usvjax import runners
from usvjax import tasks
from usvjax.core import checkpoint
from usvjax.core import run as run_lib
from usvjax.core import train
import toy_method  # Registers the toy method: the package's one line.
from toy_method import config as toy_config

SHARED_ROOTS = ('usvjax', 'input_pipeline', 'experiments')
REGISTRIES = ('usvjax/models/__init__.py', 'usvjax/tasks/__init__.py', 'usvjax/runners/__init__.py')
# Tools of FLA-Net's released PyTorch code: there 'flanet' names that release (a flag of
# convert_weights, a case of the side-by-side benchmark), not a model registry entry.
RELEASE_TOOLS = ('experiments/convert_weights.py', 'experiments/benchmark_torch.py',
                 'experiments/torch_side.py')


def _registered_names() -> dict[str, str]:
  """{name: its registry} of every model, runner and task."""
  return {**{name: 'model' for name in models.MODELS},
          **{name: 'runner' for name in runners.RUNNERS},
          **{name: 'task' for name in tasks.TASKS}}


def _quoted_names(source: str, names) -> list[tuple[int, str]]:
  """(line, name) of every string literal of ``source`` that is exactly one of ``names``;
  docstrings, comments and longer strings that mention a name are not looked at."""
  tree = ast.parse(source)
  docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef,
                                     ast.AsyncFunctionDef))
                and ast.get_docstring(node, clean=False) is not None}
  return sorted((node.lineno, node.value) for node in ast.walk(tree)
                if isinstance(node, ast.Constant) and isinstance(node.value, str)
                and node.value in names and id(node) not in docstrings)


# The layers of docs/architecture.md, lowest first: a module imports only from its own
# group and from groups of lower layers.
LAYERS = (('errors', 'interfaces', 'losses'), ('loss_terms', 'metrics', 'input_pipeline'),
          ('models',), ('reporting',), ('tasks',), ('core', 'benchmarking'), ('runners',),
          ('studies', 'tools', 'export'))
LAYER_OF = {group: rank for rank, groups in enumerate(LAYERS) for group in groups}


def _group(module: str) -> str | None:
  """The layer group of a dotted module name (``usvjax.core.train`` -> ``core``)."""
  parts = module.split('.')
  if parts[0] == 'input_pipeline':
    return 'input_pipeline'
  return parts[1] if parts[0] == 'usvjax' and len(parts) > 1 else None


def _imported_modules(tree: ast.AST) -> list[tuple[int, str]]:
  """(line, dotted module) of every import in ``tree``, ``from usvjax import x`` as usvjax.x."""
  found = []
  for node in ast.walk(tree):
    if isinstance(node, ast.ImportFrom) and node.module:
      names = ([f'usvjax.{alias.name}' for alias in node.names] if node.module == 'usvjax'
               else [node.module])
      found += [(node.lineno, name) for name in names]
    elif isinstance(node, ast.Import):
      found += [(node.lineno, alias.name) for alias in node.names]
  return found


def test_imports_go_downwards_only():
  repo = pathlib.Path(helpers.REPO)
  upward = []
  for path in [p for root in ('usvjax', 'input_pipeline') for p in sorted((repo / root).rglob('*.py'))]:
    own = _group('.'.join(path.relative_to(repo).with_suffix('').parts))
    if own not in LAYER_OF:
      continue
    for line, module in _imported_modules(ast.parse(path.read_text())):
      target = _group(module)
      if target in LAYER_OF and target != own and LAYER_OF[target] > LAYER_OF[own]:
        upward.append(f'{path}:{line} ({own}) imports {module} ({target})')
  assert not upward, upward
  packages = {p.name for p in (repo / 'usvjax').iterdir() if (p / '__init__.py').exists()}
  assert packages <= set(LAYER_OF), packages - set(LAYER_OF)


def test_the_name_scan_finds_quoted_names_in_code_only():
  source = ('"""Runs \'two_stage\'."""\nSTRIDES = {"timesformer": 16}  # \'unet\'\n'
            "if runner != 'two_stage':\n  print(f'{runner} is not two_stage')\n")
  assert _quoted_names(source, {'two_stage', 'timesformer', 'unet'}) == [
      (2, 'timesformer'), (3, 'two_stage')]


def test_no_model_runner_or_task_name_outside_the_registries():
  """Shared code asks a registry (a model's capabilities, the runner, the task) instead of
  naming a method. A file named after a model, runner or task is that one's own
  (models/flanet.py, loss_terms/flanet.py, two_stage.py, tasks/segmentation.py)."""
  repo = pathlib.Path(helpers.REPO)
  names = _registered_names()
  paths = [p for root in SHARED_ROOTS for p in sorted((repo / root).rglob('*.py'))]
  offenders = [
      f'{path.relative_to(repo)}:{line}: {name!r} ({names[name]} name)'
      for path in paths
      if str(path.relative_to(repo)) not in REGISTRIES + RELEASE_TOOLS
      and path.stem not in names
      for line, name in _quoted_names(path.read_text(), names)]
  assert not offenders, offenders
  assert 'is_two_stage' not in ''.join(p.read_text() for p in paths)


@pytest.mark.parametrize('name, variant', [('unet', 'tiny'), ('flanet', 'tiny'),
                                           ('stpfnet', 'tiny'), ('cnn_aver', 'tiny'),
                                           ('clman', 'tiny,pretrain'), ('cnn_lstm', 'tiny')])
def test_pipeline_batches_are_exactly_the_batch_spec(data_dir, name, variant):
  config = importlib.import_module(f'configs.{name}').get_config(variant)
  config.dataset.data_dir = data_dir
  builder = pipeline.get_builder(config.dataset)
  features = builder.info.features
  spec.check(next(pipeline.train_batches(config, builder, tasks.example_source(config))),
             tasks.batch_spec(config, True, features))
  batches, _ = pipeline.eval_batches(config, builder, tasks.example_source(config),
                                     config.dataset.eval_split)
  spec.check(next(batches), tasks.batch_spec(config, False, features))


def test_cached_features_are_a_time_field_padded_across_processes():
  class FeatureCache:
    def __contains__(self, key):
      return key in ('features', 'label')

    def __getitem__(self, key):
      return type('Feature', (), {'shape': (None, 6)})()
  config = helpers.load_config('cnn_lstm', '')
  fields = tasks.batch_spec(config, True, FeatureCache())
  assert fields['features'] == spec.Field((None, 6), np.dtype(np.float32), time=True)
  batch = spec.example_batch(fields, 2, length=3)
  padded = spec.pad_time(batch, fields, 5)
  assert padded['features'].shape == (2, 5, 6) and padded['valid'].shape == (2, 5)
  assert not padded['valid'][:, 3:].any() and padded['label'].shape == (2,)


def test_a_new_method_is_one_model_file_one_config_and_one_line(data_dir, tmp_path):
  assert models.MODELS['toy'].model is toy_method.model.ToySegmenter  # By the one line.
  assert models.capabilities(toy_config.get_config('tiny').model).min_frames == 2
  config = toy_config.get_config('tiny')
  config.dataset.data_dir = data_dir
  task = tasks.create_task(config)
  batch = spec.example_batch(tasks.batch_spec(config, True), 2, 1)
  batch['masks'][0, -1, :8] = 1.0
  logits = jnp.linspace(-2.0, 2.0, 2 * 32 * 32).reshape(2, 32, 32, 1)
  area = jnp.array([0.1, 0.7])
  loss, parts = task.loss({'logits': logits, 'area': area}, jax.tree.map(jnp.asarray, batch))
  mask_loss, _ = losses.mask_loss(logits, jnp.asarray(batch['masks'][:, -1]),
                                  jnp.ones(2), config.task)
  prior = ((0.1 - 0.25) ** 2 + (0.7 - 0.25) ** 2) / 2
  assert float(parts['area_prior']) == pytest.approx(prior, rel=1e-6)
  assert float(loss) == pytest.approx(float(mask_loss) + 0.5 * prior, rel=1e-6)
  runners.get(config).train(config, str(tmp_path))
  logged = [json.loads(line) for line in open(tmp_path / 'metrics.jsonl')]
  assert [r['step'] for r in logged if 'train/area_prior' in r] == [1, 2, 3]
  report = runners.get(config).evaluate(config, str(tmp_path))['toy']
  assert report.metrics['scored_frames'] > 0


def test_evaluation_restores_parameters_without_optimizer_state(data_dir, tmp_path):
  config = helpers.load_config('unet', data_dir, total_steps=2, eval_every=2,
                               checkpoint_every=2)
  state, _ = train.train_and_evaluate(run_lib.resolve(config), str(tmp_path))
  variables, step = run_lib.resolve(config).restore(str(tmp_path), 'latest')
  assert step == 2 and set(variables) == {'params', 'batch_stats'}
  for ours, saved in zip(jax.tree.leaves(variables), jax.tree.leaves(state.variables())):
    np.testing.assert_array_equal(np.asarray(ours.addressable_data(0)),
                                  np.asarray(saved.addressable_data(0)))
  config.model.width = 8  # Not the config the run was trained with.
  with pytest.raises(ValueError, match=r'does not fit the model.*: \(8,\) here, \(4,\) saved'):
    run_lib.resolve(config).restore(str(tmp_path), 'latest')


def test_a_nan_between_logging_steps_is_named_by_its_own_step(data_dir, tmp_path,
                                                              monkeypatch):
  config = helpers.load_config('unet', data_dir, total_steps=6, log_every=5, eval_every=6,
                               checkpoint_every=6)
  make_batches = pipeline.train_batches

  def poisoned(*args, **kwargs):
    for step, batch in enumerate(make_batches(*args, **kwargs), start=1):
      yield dict(batch, frames=np.full_like(batch['frames'], np.nan)) if step == 2 else batch
  monkeypatch.setattr(pipeline, 'train_batches', poisoned)
  with pytest.raises(train.NonFiniteLossError, match='loss is nan at step 2.*no checkpoint'):
    train.train_and_evaluate(run_lib.resolve(config), str(tmp_path))
  assert checkpoint.create_manager(str(tmp_path), 2, read_only=True).all_steps() == []
