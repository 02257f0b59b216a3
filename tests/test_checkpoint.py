"""Checkpoint retention (last K plus the best) and atomicity."""
import os

import jax.numpy as jnp
import numpy as np
import pytest

from usvjax.core import checkpoint


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


def test_an_interrupted_save_leaves_the_last_checkpoint_loadable(tmp_path):
  manager = checkpoint.create_manager(str(tmp_path), keep=2)
  checkpoint.save(manager, 1, _state(1.0))
  # What a kill in the middle of writing step 2 leaves behind: an unfinished temp folder.
  partial = os.path.join(manager.directory, '2.orbax-checkpoint-tmp-1234')
  os.makedirs(os.path.join(partial, 'default'))
  with open(os.path.join(partial, 'default', 'half_written'), 'wb') as f:
    f.write(b'\0' * 10)
  reopened = checkpoint.create_manager(str(tmp_path), keep=2)
  assert reopened.latest_step() == 1
  np.testing.assert_array_equal(checkpoint.restore(reopened, 1, _state(0.0))['w'], 1.0)


def test_no_checkpoint_is_a_clear_error(tmp_path):
  with pytest.raises(FileNotFoundError, match='no checkpoint in'):
    checkpoint.resolve_step(checkpoint.create_manager(str(tmp_path), keep=1), 'latest')
