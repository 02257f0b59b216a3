"""Run settings are checked before anything trains: every bad setting is one line naming
its config key, all of them in one error; what a model cannot take, its registry entry
declares (``interfaces.Capabilities``), and each declared capability is read; every
shipped tiny/demo config passes."""
import importlib

import ml_collections
import pytest
import tensorflow_datasets as tfds

import helpers
import toy_method  # pylint: disable=unused-import  # Registers the toy method.
from input_pipeline.builders.usv_synthetic import SyntheticConfig
from toy_method import config as toy_config
from toy_method import model as toy_model
from usvjax import models
from usvjax.core import run_checks
from usvjax.errors import ConfigError
from usvjax.runners import two_stage

# 4 virtual devices (tests/conftest.py): batch sizes must be multiples of 4.
BAD_SETTINGS = [
    ('unet', {'input.batch_size': 0}, ['config.input.batch_size=0']),
    ('unet', {'input.batch_size': -4}, ['config.input.batch_size=-4']),
    ('unet', {'input.batch_size': 6}, ['config.input.batch_size=6 is not divisible', 'e.g. 8']),
    ('unet', {'input.eval_batch_size': 0}, ['config.input.eval_batch_size=0']),
    ('unet', {'dataset.eval_split': 'val'}, ["config.dataset.eval_split='val'", 'validation']),
    ('unet', {'dataset.train_split': 'train+tset'}, ["config.dataset.train_split='train+tset'"]),
    ('unet', {'dataset.test_split': 'test[:x]'}, ["config.dataset.test_split='test[:x]'"]),
    ('unet', {'dataset.test_split': 'test[10:]'}, ["config.dataset.test_split='test[10:]'"]),
    ('unet', {'dataset.eval_split': 'validation[4:]'}, ['holds no videos']),
    ('unet', {'eval_every': 0}, ['config.eval_every=0']),
    ('unet', {'checkpoint_every': -1}, ['config.checkpoint_every=-1']),
    ('unet', {'log_every': 0}, ['config.log_every=0']),
    ('unet', {'best_metric': 'dice'}, ["config.best_metric='dice'", 'mean_dice']),
    ('cnn_aver', {'best_metric': 'mean_dice'}, ["config.best_metric='mean_dice'", "'auc'"]),
    ('unet', {'best_mode': 'highest'}, ["config.best_mode='highest'"]),
    ('unet', {'input.image_size': 0}, ['config.input.image_size=0']),
    ('unet', {'input.image_size': 34}, ['config.input.image_size=34', 'multiple of 4']),
    ('flanet', {'input.clip_length': 0}, ['config.input.clip_length=0']),
    ('timesformer', {'input.image_size': 36}, ['config.input.image_size=36', 'multiple of 8']),
    # Capabilities of the registered models: output_stride above; min_frames, max_frames,
    # needs_first_mask and streaming here (single_frame: the stills test below).
    ('timesformer', {'input.length_buckets': (4, 32)},
     ['config.input.length_buckets=(4, 32) reach 32', 'takes at most 16']),
    ('flanet', {'input.clip_length': 2}, ['config.input.clip_length=2', 'at least 3']),
    ('stpfnet', {'input.clip_length': 1}, ['config.input.clip_length=1', 'at least 2']),
    ('stpfnet', {'input.eval_protocol': 'clip'},
     ["config.input.eval_protocol='clip'", "set it to 'first_frame'"]),
    ('unet', {'input.eval_protocol': 'first_frame'},
     ["config.input.eval_protocol='first_frame'", 'does not stream']),
    # usv_synthetic/tiny's videos have 4 to 8 frames.
    ('flanet', {'input.clip_length': 9}, ['config.input.clip_length=9',
                                          'config.dataset.train_split',
                                          'config.dataset.eval_split',
                                          'config.dataset.test_split'], 3),
    # k-fold cross-validation evaluates folds of train_split: eval_split is not read.
    ('dsanet', {'input.clip_length': 9, 'dataset.folds.num': 2, 'dataset.eval_split': 'val'},
     ['config.input.clip_length=9', 'config.dataset.train_split',
      'config.dataset.test_split'], 2),
]


@pytest.fixture(scope='module')
def tiny_builder(data_dir):
  return tfds.builder('usv_synthetic/tiny', data_dir=data_dir)


@pytest.fixture(scope='module')
def stills_builder(tmp_path_factory):
  """usv_synthetic with 1-frame videos in every split (still images posing as videos)."""
  import input_pipeline.builders  # pylint: disable=g-import-not-at-top,unused-import
  builder = tfds.builder('usv_synthetic', data_dir=str(tmp_path_factory.mktemp('stills')),
                         config=SyntheticConfig(
                             name='stills', height=32, width=32, min_frames=1, max_frames=1,
                             num_videos=(('train', 2), ('validation', 2), ('test', 1))))
  builder.download_and_prepare()
  return builder


def _error(name: str, data_dir: str, builder, overrides: dict, expected: list[str]) -> str:
  """check_run's error for ``configs/<name>.py:tiny`` with ``overrides``; holds ``expected``."""
  config = helpers.load_config(name, data_dir, **overrides)
  with pytest.raises(ValueError) as e:
    run_checks.check_run(config, builder)
  for part in expected:
    assert part in str(e.value)
  return str(e.value)


@pytest.mark.parametrize('name,overrides,expected,problems',
                         [case if len(case) == 4 else (*case, 1) for case in BAD_SETTINGS])
def test_a_bad_setting_is_an_error_naming_its_key(tiny_builder, data_dir, name, overrides,
                                                  expected, problems):
  error = _error(name, data_dir, tiny_builder, overrides, expected)
  assert error.count('\n  - ') == problems


def test_evaluations_during_training_are_checked_before_training(tiny_builder, data_dir):
  config = helpers.load_config('unet', data_dir)
  with config.unlocked():
    config.evals.val = ml_collections.ConfigDict(dict(split='test', speckle_looks=0.0))
    config.evals.noisy = ml_collections.ConfigDict(dict(split='tset', speckle_looks=20.0))
    config.evals.test = ml_collections.ConfigDict(dict(split='test', speckle_looks=0.0))
  with pytest.raises(ValueError) as e:
    run_checks.check_run(config, tiny_builder)
  error = str(e.value)
  assert error.count('\n  - ') == 2  # 'val' taken, 'tset' unknown; 'test' is fine.
  assert "config.evals.val: 'val' names the validation" in error
  assert "config.evals.noisy.split='tset'" in error


def test_every_problem_is_reported_at_once(tiny_builder, data_dir):
  overrides = {'input.batch_size': 0, 'input.eval_batch_size': 3, 'dataset.eval_split': 'val',
               'eval_every': 0, 'best_metric': 'auc', 'input.image_size': 30,
               'input.clip_length': 9}
  # clip_length is still checked on train_split though eval_split is wrong; FLA-Net's
  # paper design has no stride to check, so image_size 30 is no problem.
  error = _error('flanet', data_dir, tiny_builder, overrides,
                 [f'config.{key}=' for key in overrides if key != 'input.image_size'])
  assert error.count('\n  - ') == 7  # clip_length: train_split and test_split.


@pytest.mark.parametrize('name,overrides,expected', [
    ('flanet', {}, ['config.input.clip_length=4', 'config.dataset.train_split',
                    'config.dataset.eval_split', '(1)']),
    ('dsanet', {}, ['config.input.clip_length=3']),
    ('stpfnet', {}, ['config.input.clip_length=3', "eval_protocol='first_frame'",
                     "config.dataset.eval_split='validation'"]),
    ('stpfnet', {'input.clip_length': 1}, ["eval_protocol='first_frame'"]),
])
def test_one_frame_videos_are_refused_by_video_methods(stills_builder, data_dir, name,
                                                       overrides, expected):
  _error(name, data_dir, stills_builder, overrides, expected)


@pytest.mark.parametrize('test_split,flagged', [('', True), ('validation', False)])
def test_the_test_split_is_checked_before_training_and_the_evaluated_one_at_evaluation(
    tiny_builder, data_dir, monkeypatch, test_split, flagged):
  # Only the test split has a 1-frame video: training must refuse it before it starts,
  # and `evaluate --split=validation` (test_split given) must not.
  monkeypatch.setattr(run_checks, 'video_lengths',
                      lambda builder, split: {'still': 1} if split == 'test' else {'v': 8})
  config = helpers.load_config('stpfnet', data_dir)
  if not flagged:
    run_checks.check_run(config, tiny_builder, test_split)
    return
  error = _error('stpfnet', data_dir, tiny_builder, {},
                 ["config.dataset.test_split='test' has 1 video(s) of fewer frames, "
                  "e.g. 'still' (1)", "eval_protocol='first_frame'"])
  assert error.count('\n  - ') == 2  # Clip length and first-frame protocol.


@pytest.mark.parametrize('name', ['unet', 'cnn_aver', 'clman'])
def test_one_frame_videos_suit_frame_models_and_classifiers(stills_builder, data_dir, name):
  run_checks.check_run(helpers.load_config(name, data_dir, **{'input.image_size': 32}),
                       stills_builder)


def test_video_lengths_are_read_per_video(tiny_builder):
  lengths = run_checks.video_lengths(tiny_builder, 'validation[:2]+test[:1]')
  assert len(lengths) == 3 and all(4 <= n <= 8 for n in lengths.values())


def _configs(variant):
  """(name, config) of every shipped config at ``variant``, stages included."""
  out = []
  for name in ('unet', 'flanet', 'dsanet', 'stpfnet', 'cnn_aver', 'cnn_lstm', 'clman'):
    config = importlib.import_module(f'configs.{name}').get_config(variant)
    out.append((name, config))
    if name == 'cnn_lstm':
      out.append(('cnn_lstm/frame_cnn', two_stage.frame_cnn_config(config)))
    if name == 'clman':
      out.append(('clman/pretrain', importlib.import_module('configs.clman').get_config(
          f'{variant},pretrain')))
  return out


@pytest.mark.parametrize('variant', ['tiny', 'demo'])
def test_every_shipped_config_passes(tiny_builder, variant):
  # Demo configs read usv_synthetic/small (8 to 16 frames per video), tiny ones tiny or
  # variable: checked against tiny's data (4 to 8 frames), a stricter test for the
  # lengths; variable's 1-frame videos serve only the classifiers (cnn_lstm).
  for name, config in _configs(variant):
    try:
      run_checks.check_run(config, tiny_builder)
    except ValueError as e:
      raise AssertionError(f'{name}:{variant}: {e}') from e


def _toy_error(builder, data_dir: str, capabilities: models.Capabilities, **overrides) -> str:
  """check_run's error for the toy method's tiny config with ``overrides``, the toy
  registered with ``capabilities`` (through ``models.register``, as its package does)."""
  models.register('toy', toy_model.ToySegmenter, toy_model.loss_terms, capabilities)
  config = toy_config.get_config('tiny')
  config.dataset.data_dir = data_dir
  config.update_from_flattened_dict(overrides)
  with pytest.raises(ConfigError) as e:
    run_checks.check_run(config, builder)
  return str(e.value)


@pytest.mark.parametrize('capabilities, overrides, key', [
    (models.Capabilities(min_frames=2), {'input.clip_length': 1}, 'input.clip_length=1'),
    (models.Capabilities(min_frames=4), {}, 'input.clip_length=3'),
    (models.Capabilities(max_frames=2), {}, 'input.clip_length=3'),
    (models.Capabilities(output_stride=64), {}, 'input.image_size=32'),
    (models.Capabilities(), {'input.eval_protocol': 'first_frame'},
     "input.eval_protocol='first_frame'"),
])
def test_a_method_is_refused_what_its_registration_forbids(tiny_builder, data_dir, monkeypatch,
                                                           capabilities, overrides, key):
  monkeypatch.setattr(models, 'MODELS', dict(models.MODELS))  # The toy's own entry back.
  error = _toy_error(tiny_builder, data_dir, capabilities, **overrides)
  assert error.count('\n  - ') == 1 and f'  - config.{key}' in error


def test_a_single_frame_method_takes_one_frame_videos(stills_builder, data_dir, monkeypatch):
  monkeypatch.setattr(models, 'MODELS', dict(models.MODELS))
  error = _toy_error(stills_builder, data_dir, models.Capabilities(min_frames=2))
  assert error.count('\n  - ') == 3 and 'config.input.clip_length=3' in error  # 3 splits.
  models.register('toy', toy_model.ToySegmenter, toy_model.loss_terms,
                  models.Capabilities(single_frame=True))
  config = toy_config.get_config('tiny')
  config.dataset.data_dir = data_dir
  run_checks.check_run(config, stills_builder)


def test_a_streaming_declaration_must_match_the_class(monkeypatch):
  monkeypatch.setattr(models, 'MODELS', dict(models.MODELS))
  models.register('toy', toy_model.ToySegmenter, capabilities=models.Capabilities(
      streaming=True))
  with pytest.raises(TypeError, match=r"'toy' is registered with streaming=True, but "
                                      'ToySegmenter lacks start and step'):
    models.capabilities(toy_config.get_config('tiny').model)


@pytest.mark.parametrize('threshold_rule, refused', [('fixed', False), ('youden', True)])
def test_scoring_an_external_test_only_dataset_reads_only_its_split(
    tiny_builder, data_dir, threshold_rule, refused):
  # A dataset of one split ('test'): training splits that do not exist are no problem when
  # a given split is scored, unless the task picks its threshold on the validation split.
  config = helpers.load_config('cnn_aver', data_dir, **{
      'dataset.train_split': 'no_such_train', 'dataset.eval_split': 'no_such_validation',
      'task.threshold_rule': threshold_rule, 'input.image_size': 32})
  if not refused:
    run_checks.check_run(config, tiny_builder, 'test')
    return
  with pytest.raises(ValueError, match="config.dataset.eval_split='no_such_validation'"):
    run_checks.check_run(config, tiny_builder, 'test')
