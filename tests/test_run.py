"""A run resolved once (usvjax/core/run.py): one preparation of the data per command, one
program for training-time validation and checkpoint evaluation, evaluations declared in
the config."""
import json

import ml_collections
import pytest

import helpers
from input_pipeline import pipeline
from usvjax import runners
from usvjax.core import evaluate
from usvjax.core import run as run_lib


@pytest.fixture
def counted(monkeypatch):
  """{'get_builder': calls, 'count_items': calls, 'eval_dataset': calls} of the input
  pipeline."""
  calls = {'get_builder': 0, 'count_items': 0, 'eval_dataset': 0}
  for name in calls:
    original = getattr(pipeline, name)

    def counting(*args, _name=name, _original=original, **kwargs):
      calls[_name] += 1
      return _original(*args, **kwargs)
    monkeypatch.setattr(pipeline, name, counting)
  return calls


def test_a_bfloat16_run_is_evaluated_with_the_program_it_was_validated_with(
    data_dir, tmp_path, counted):
  config = helpers.load_config('unet', data_dir, compute_dtype='bfloat16', total_steps=3,
                               eval_every=3, checkpoint_every=3)
  workdir = str(tmp_path / 'run')
  with run_lib.prepared_once():  # One command: train, then evaluate its checkpoint.
    validation = runners.train(config, workdir)['unet']
    report = runners.evaluate(config, workdir, config.dataset.eval_split, 'latest')['unet']
  assert counted['get_builder'] == 1  # Provenance, training and evaluation share it.
  for key in ('mean_dice', 'mean_mae', 'mean_s_measure', 'max_f'):
    # Bit for bit: a float32 evaluation of these bfloat16-trained weights differs.
    assert report.metrics[key] == validation[key], key
  float32 = run_lib.resolve(helpers.load_config('unet', data_dir, total_steps=3))
  variables, _ = float32.restore(workdir, 'latest')
  metrics, _ = evaluate.evaluate_split(float32, config.dataset.eval_split, variables)
  assert metrics['mean_mae'] != validation['mean_mae']


def test_each_split_is_counted_once_per_run_and_config_evals_are_logged(
    data_dir, tmp_path, counted):
  config = helpers.load_config('unet', data_dir, total_steps=4, eval_every=2,
                               checkpoint_every=2)
  with config.unlocked():
    config.evals.test = ml_collections.ConfigDict(dict(split='test', speckle_looks=0.0))
    config.evals.noisy = ml_collections.ConfigDict(dict(split='test', speckle_looks=2.0))
  runners.train(config, str(tmp_path))
  # Two validations of three evaluations each; validation and test counted once each, and
  # each evaluation's pipeline (validation, test, speckled test) built once.
  assert counted['count_items'] == 2 and counted['get_builder'] == 1
  assert counted['eval_dataset'] == 3
  steps = {}  # Each evaluation's line, merged by step.
  for line in (tmp_path / 'metrics.jsonl').read_text().splitlines():
    row = json.loads(line)
    steps.setdefault(row['step'], {}).update(row)
  evaluated = [r for _, r in sorted(steps.items()) if 'val/mean_dice' in r]
  assert [r['step'] for r in evaluated] == [2, 4]
  for row in evaluated:
    assert {'test/mean_dice', 'noisy/mean_dice'} <= set(row)
    assert row['test/scored_frames'] == row['noisy/scored_frames']
    # Speckle of look number 2 changes what the model sees.
    assert row['noisy/mean_mae'] != row['test/mean_mae']
  # The clean evaluation (its pipeline read a second time) is the checkpoint's test report
  # (a pipeline of its own).
  report = runners.evaluate(config, str(tmp_path), 'test', 'latest')['unet']
  assert report.metrics['mean_dice'] == evaluated[-1]['test/mean_dice']


def test_without_a_command_scope_every_resolve_prepares_its_dataset(data_dir, counted):
  config = helpers.load_config('unet', data_dir)
  run_lib.resolve(config)
  run_lib.resolve(config)
  assert counted['get_builder'] == 2
  with run_lib.prepared_once():
    first = run_lib.resolve(config)
    with run_lib.prepared_once():  # Nested: the outer scope's builders.
      assert run_lib.resolve(config).builder is first.builder
  assert counted['get_builder'] == 3
