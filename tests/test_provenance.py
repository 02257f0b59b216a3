"""Runs describe themselves: config changes refused, a changed dataset folder converted
again, compare reruns what changed. (Evaluation with only --workdir: test_train.py, on the
killed-and-resumed run.)"""
import json
import os
import shutil

import ml_collections
import pytest
import tensorflow_datasets as tfds

import helpers
from input_pipeline import fingerprint
from input_pipeline import pipeline
from test_builders import frame
from test_builders import make_frames_table
from test_builders import write_image
from usvjax import runners
from usvjax.errors import ConfigError
from usvjax.reporting import provenance
from usvjax.studies import compare


def test_a_config_that_differs_from_the_runs_is_refused(data_dir, tmp_path):
  config = helpers.load_config('unet', data_dir)
  builder = pipeline.get_builder(config.dataset)
  provenance.record(config, str(tmp_path), builder)
  other = helpers.load_config('unet', data_dir, **{'optimizer.lr': 0.5, 'model.width': 2})
  with pytest.raises(ValueError, match=(
      r"(?s)differs from the one .*\n  - model.width: 2 here, 4 saved\n"
      r"  - optimizer.lr: 0.5 here, .* saved\n.*--allow_config_changes")):
    provenance.check_matches(other, str(tmp_path), 'given with --config')
  (tmp_path / 'checkpoints' / '3').mkdir(parents=True)  # The run has trained.
  with pytest.raises(ValueError, match=(  # Resuming with another config.
      r'(?s)optimizer.lr.*Resume with the same config and overrides .*another --workdir')):
    provenance.record(other, str(tmp_path), builder)
  longer = helpers.load_config('unet', data_dir, total_steps=50)
  provenance.record(longer, str(tmp_path), builder)  # Continuing for more steps is fine.
  assert provenance.load_config(str(tmp_path)).total_steps == 50


def test_compare_reruns_a_run_whose_config_or_data_changed(data_dir, tmp_path):
  config = helpers.load_config('unet', data_dir)
  builder = pipeline.get_builder(config.dataset)
  run_dir = str(tmp_path / 'seed0')
  assert compare._outdated(config, run_dir) == 'it records no config'  # pylint: disable=protected-access
  provenance.record(config, run_dir, builder)
  assert compare._outdated(config, run_dir) == ''  # pylint: disable=protected-access
  narrow = helpers.load_config('unet', data_dir, **{"model.width": 2})
  assert 'model.width: 2 here, 4 saved' in compare._outdated(narrow, run_dir)  # pylint: disable=protected-access
  data = json.loads((tmp_path / 'seed0' / provenance.DATA_FILE).read_text())
  data['splits']['train'] += 1
  (tmp_path / 'seed0' / provenance.DATA_FILE).write_text(json.dumps(data))
  assert compare._outdated(config, run_dir) == 'its data changed'  # pylint: disable=protected-access


def test_a_run_saved_before_a_key_was_added_is_the_run_of_its_old_value(data_dir, tmp_path):
  """provenance.ADDED: a run saved without input.train_clips trained on a clip at every frame."""
  config = helpers.load_config('unet', data_dir)
  assert config.input.train_clips == 'every_frame'
  older = ml_collections.ConfigDict(config.to_dict())
  del older.input['train_clips']
  run_dir = str(tmp_path / 'seed0')
  provenance.record(older, run_dir, pipeline.get_builder(config.dataset))
  assert compare._outdated(config, run_dir) == ''  # pylint: disable=protected-access
  provenance.check_matches(config, run_dir, 'given with --config')
  staged = ml_collections.ConfigDict({'frame_cnn': config.to_dict()})  # A stage's config.
  assert not provenance.differences(staged, ml_collections.ConfigDict({'frame_cnn': older}))
  distinct = helpers.load_config('unet', data_dir, **{'input.train_clips': 'distinct_frames'})
  assert ("input.train_clips: 'distinct_frames' here, 'absent' saved"
          in compare._outdated(distinct, run_dir))  # pylint: disable=protected-access


def test_a_changed_dataset_folder_is_converted_again(tmp_path, caplog):
  root = str(tmp_path / 'cvc')
  make_frames_table(root)
  dataset = ml_collections.ConfigDict({'name': 'usv_frames_table', 'config': 'default',
                                       'data_dir': str(tmp_path / 'tfds'), 'manual_dir': root})

  def first_pixels():
    builder = pipeline.get_builder(dataset)
    return sorted(int(v['frames'][0, 0, 0, 0]) for split in builder.info.splits
                  for v in tfds.as_numpy(builder.as_dataset(split=split)))
  assert first_pixels() == [1, 4, 6]  # First frames of the three sequences.
  assert first_pixels() == [1, 4, 6] and 'converting it again' not in caplog.text
  write_image(f'{root}/Original/4.png', frame(77))
  assert first_pixels() == [1, 6, 77]
  assert 'changed since its conversion' in caplog.text and 'converting it again' in caplog.text


def _frames_table_dataset(root, data_dir) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({'name': 'usv_frames_table', 'config': 'default',
                                    'data_dir': str(data_dir), 'manual_dir': str(root)})


def test_a_folder_copied_with_new_times_is_the_same_data(tmp_path, caplog, monkeypatch):
  """Contents, not modification times, identify a folder: a copy elsewhere with other times
  gets a conversion of its own (one folder, one conversion) but is the same data, so compare
  reruns none of its runs; an unchanged folder is not read again (the per-file hashes kept
  beside the conversion)."""
  root = tmp_path / 'cvc'
  make_frames_table(str(root))
  builder = pipeline.get_builder(_frames_table_dataset(root, tmp_path / 'tfds'))
  recorded = provenance.data_fingerprint(builder)
  copy = tmp_path / 'elsewhere' / 'cvc'
  shutil.copytree(root, copy)
  for path in copy.rglob('*.png'):
    os.utime(path, ns=(1, 1))
  copied = pipeline.get_builder(_frames_table_dataset(copy, tmp_path / 'tfds'))
  assert 'converting it again' not in caplog.text
  assert copied.data_dir != builder.data_dir
  assert provenance.same_data(provenance.data_fingerprint(copied), recorded)
  copied_source = fingerprint.folder_fingerprint(copy, fingerprint.file_hashes(copy))
  assert copied_source['folder'] != recorded['source']['folder']
  assert fingerprint.same_source(copied_source, recorded['source'])
  monkeypatch.setattr(fingerprint, '_file_sha256', lambda path: pytest.fail(f'read {path}'))
  assert provenance.same_data(provenance.data_fingerprint(
      pipeline.get_builder(_frames_table_dataset(copy, tmp_path / 'tfds'))), recorded)
  write_image(str(copy / 'Original' / '4.png'), frame(77))
  with pytest.raises(pytest.fail.Exception, match='Original/4.png'):  # Changed: read again.
    pipeline.get_builder(_frames_table_dataset(copy, tmp_path / 'tfds'))


def test_records_made_before_contents_were_hashed(tmp_path, caplog):
  """An old conversion (its fingerprint a hash of sizes and times) is converted again once;
  an old run record counts as today's data when its file count and size agree."""
  root = tmp_path / 'cvc'
  make_frames_table(str(root))
  dataset = _frames_table_dataset(root, tmp_path / 'tfds')
  builder = pipeline.get_builder(dataset)
  new = provenance.data_fingerprint(builder)
  old_source = {k: new['source'][k] for k in ('folder', 'files', 'bytes')}
  old_source['sha256'] = '0' * 64
  fingerprint.store(builder.data_dir, old_source)
  assert provenance.same_data(dict(new, source=old_source), new)
  assert not provenance.same_data(dict(new, source=dict(old_source, bytes=1)), new)
  assert not provenance.same_data(dict(new, splits={'train': 99}), new)
  builder = pipeline.get_builder(dataset)
  assert 'made before usvjax fingerprinted file contents' in caplog.text
  assert provenance.data_fingerprint(builder) == new


@pytest.mark.parametrize('name,refused', [
    ('unet', {'input.batch_size': 3}),  # Not divisible by the 4 devices.
    ('cnn_lstm', {'frame_cnn.input.batch_size': 3, 'dataset.config': 'tiny'}),
    ('clman', {'pretrain.input.batch_size': 3}),
])
def test_a_run_refused_at_start_does_not_block_the_corrected_rerun(
    name, refused, data_dir, tmp_path, monkeypatch):
  """Every runner: the refused run saved its config, the corrected one replaces it (no
  checkpoint was saved) and trains; once it has a checkpoint, the config is the run's."""
  with pytest.raises(ConfigError, match='batch_size'):
    runners.train(helpers.load_config(name, data_dir, **refused), str(tmp_path))
  corrected = helpers.load_config(name, data_dir, **{k: v for k, v in refused.items()
                                                     if 'batch_size' not in k})
  runner = runners.get(corrected)
  trained = []
  monkeypatch.setattr(type(runner), 'train', lambda self, config, workdir, which: trained.append(
      os.makedirs(os.path.join(workdir, 'stage', 'checkpoints', '1'))) or {})
  runners.train(corrected, str(tmp_path))
  assert trained and not provenance.differences(corrected, provenance.load_config(str(tmp_path)))
  with pytest.raises(ConfigError, match='Resume with the same config'):
    runners.train(helpers.load_config(name, data_dir, **refused), str(tmp_path))
