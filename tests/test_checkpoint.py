"""Checkpoint retention (last K plus the best), atomicity and damaged checkpoints."""
import glob
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from usvjax.core import checkpoint
from usvjax.errors import ConfigError


def _state(value):
  return {'w': jnp.full((3,), value, jnp.float32)}


def test_keeps_the_last_k_plus_the_best(tmp_path):
  manager = checkpoint.create_manager(str(tmp_path), keep=2, best_metric='dice')
  dice = {1: 0.2, 2: 0.9, 3: 0.5, 4: 0.4, 5: None}
  for step, value in dice.items():
    checkpoint.save(manager, step, _state(step), None if value is None else {'dice': value})
  assert manager.all_steps() == [2, 4, 5]
  reader = checkpoint.create_manager(str(tmp_path), keep=2, best_metric='dice', read_only=True)
  assert checkpoint.resolve_step(reader, 'best') == 2
  assert checkpoint.resolve_step(reader, 'latest') == 5
  np.testing.assert_array_equal(checkpoint.restore(reader, 2, _state(0.0))['w'], 2.0)
  with pytest.raises(ValueError, match=r"checkpoint '3' not found.*\[2, 4, 5\]"):
    checkpoint.resolve_step(reader, '3')


def test_an_interrupted_save_leaves_the_last_checkpoint_loadable(tmp_path, capsys):
  manager = checkpoint.create_manager(str(tmp_path), keep=2)
  checkpoint.save(manager, 1, _state(1.0))
  # What a kill in the middle of writing step 2 leaves behind: an unfinished temp folder.
  partial = os.path.join(manager.directory, '2.orbax-checkpoint-tmp-1234')
  os.makedirs(os.path.join(partial, 'default'))
  with open(os.path.join(partial, 'default', 'half_written'), 'wb') as f:
    f.write(b'\0' * 10)
  reopened = checkpoint.create_manager(str(tmp_path), keep=2)
  assert not os.path.exists(partial)  # Removed when training opens the run again,
  assert f'removed {partial}' in capsys.readouterr().out  # with a line saying so.
  assert reopened.latest_step() == 1
  np.testing.assert_array_equal(checkpoint.restore(reopened, 1, _state(0.0))['w'], 1.0)


def test_no_checkpoint_is_a_clear_error(tmp_path):
  with pytest.raises(FileNotFoundError, match='no checkpoint in'):
    checkpoint.resolve_step(checkpoint.create_manager(str(tmp_path), keep=1), 'latest')


# Damaged checkpoints: real checkpoints written by ``checkpoint.save``, then damaged as a
# full disk, a partial copy or a lost file leaves them.

def _variables(value):
  return {'params': {'w': jnp.full((300,), value, jnp.float32)},
          'batch_stats': {'m': jnp.full((5,), value, jnp.float32)}}


def _abstract():
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
                      _variables(0.0))


def _three_checkpoints(workdir):
  """Steps 1-3 (Dice 0.1, 0.9, 0.3: step 2 is the best), each holding its step number."""
  manager = checkpoint.create_manager(str(workdir), keep=3, best_metric='dice')
  for step, dice in ((1, 0.1), (2, 0.9), (3, 0.3)):
    checkpoint.save(manager, step, _variables(float(step)), {'dice': dice})
  manager.close()
  return os.path.join(str(workdir), 'checkpoints')


def _truncate_data(directory, step):
  """Cuts every data file of ``step`` to half its size; returns one of them."""
  files = glob.glob(os.path.join(directory, str(step), 'default', 'd', '*'))
  for path in files:
    os.truncate(path, os.path.getsize(path) // 2)
  return files[0]


def _remove(directory, step, name):
  path = os.path.join(directory, str(step), 'default', name)
  os.remove(path)
  return path


def _read_variables(manager):
  abstract = _abstract()
  return lambda step: checkpoint.restore_variables(manager, step, abstract)


@pytest.mark.parametrize('damage', ['truncated', 'manifest'])
def test_a_damaged_latest_checkpoint_falls_back_to_the_newest_intact_one(tmp_path, capsys,
                                                                        damage):
  directory = _three_checkpoints(tmp_path)
  failing = (_truncate_data(directory, 3) if damage == 'truncated'
             else _remove(directory, 3, 'manifest.ocdbt'))
  reader = checkpoint.create_manager(str(tmp_path), keep=3, best_metric='dice', read_only=True)
  variables, step = checkpoint.restore_chosen(reader, 'latest', _read_variables(reader))
  assert step == 2
  np.testing.assert_array_equal(variables['params']['w'], 2.0)
  lines = capsys.readouterr().out.strip().splitlines()
  assert len(lines) == 1, lines
  assert lines[0].startswith('warning: checkpoint step 3 in ') and failing in lines[0]
  assert 'trying step 2' in lines[0]
  assert os.path.isdir(os.path.join(directory, '3'))  # Evaluation moves nothing.


def test_a_damaged_best_checkpoint_falls_back_to_the_newest_intact_one(tmp_path, capsys):
  directory = _three_checkpoints(tmp_path)
  failing = _remove(directory, 2, 'manifest.ocdbt')
  reader = checkpoint.create_manager(str(tmp_path), keep=3, best_metric='dice', read_only=True)
  assert checkpoint.restore_chosen(reader, 'best', _read_variables(reader))[1] == 3
  assert failing in capsys.readouterr().out


def test_a_damaged_step_asked_for_by_number_is_one_clear_error(tmp_path):
  directory = _three_checkpoints(tmp_path)
  failing = _truncate_data(directory, 2)
  reader = checkpoint.create_manager(str(tmp_path), keep=3, best_metric='dice', read_only=True)
  with pytest.raises(ConfigError) as raised:
    checkpoint.restore_chosen(reader, '2', _read_variables(reader))
  message = str(raised.value)
  assert '\n' not in message and message.startswith('checkpoint step 2 in ')
  assert failing in message and 'cannot be read' in message and '[1, 2, 3]' in message


def test_resuming_moves_a_damaged_latest_checkpoint_aside_and_saves_its_step_again(tmp_path,
                                                                                 capsys):
  directory = _three_checkpoints(tmp_path)
  _truncate_data(directory, 3)
  manager = checkpoint.create_manager(str(tmp_path), keep=3, best_metric='dice')
  state, step = checkpoint.restore_newest(manager, _variables(0.0))
  assert step == 2 and float(state['params']['w'][0]) == 2.0
  moved = os.path.join(str(tmp_path), checkpoint.DAMAGED_DIR, '3')
  assert f'moved to {moved}' in capsys.readouterr().out
  assert os.path.isdir(moved) and manager.all_steps() == [1, 2]
  checkpoint.save(manager, 3, _variables(30.0), {'dice': 0.3})
  assert float(checkpoint.restore(manager, 3, _variables(0.0))['params']['w'][0]) == 30.0


def test_resuming_without_checkpoints_starts_at_step_0(tmp_path):
  manager = checkpoint.create_manager(str(tmp_path), keep=3)
  state, step = checkpoint.restore_newest(manager, _variables(7.0))
  assert step == 0 and float(state['params']['w'][0]) == 7.0


def test_all_checkpoints_damaged_is_one_clear_error(tmp_path):
  directory = _three_checkpoints(tmp_path)
  for step in (1, 2):
    _truncate_data(directory, step)
  _remove(directory, 3, 'manifest.ocdbt')
  reader = checkpoint.create_manager(str(tmp_path), keep=3, read_only=True)
  with pytest.raises(ConfigError, match=r'every checkpoint in .* is damaged \(step 3: .*manifest'
                                        r'.ocdbt is missing; step 2: .* cannot be read: .*; step 1: '):
    checkpoint.restore_chosen(reader, 'latest', _read_variables(reader))


def test_the_raw_latest_checkpoint_falls_back_too(tmp_path, capsys):
  directory = _three_checkpoints(tmp_path)
  _truncate_data(directory, 3)
  np.testing.assert_array_equal(checkpoint.restore_latest_raw(str(tmp_path))['params']['w'], 2.0)
  assert 'checkpoint step 3' in capsys.readouterr().out


def test_a_model_that_does_not_fit_is_not_mistaken_for_damage(tmp_path):
  _three_checkpoints(tmp_path)
  reader = checkpoint.create_manager(str(tmp_path), keep=3, read_only=True)
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  other = {'params': {'w': jax.ShapeDtypeStruct((7,), jnp.float32, sharding=sharding)},
           'batch_stats': {'m': jax.ShapeDtypeStruct((5,), jnp.float32, sharding=sharding)}}
  with pytest.raises(ConfigError, match='does not fit the model'):
    checkpoint.restore_chosen(reader, 'latest',
                              lambda step: checkpoint.restore_variables(reader, step, other))
