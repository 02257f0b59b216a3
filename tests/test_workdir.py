"""The run directory: one trainer at a time, stale locks taken over, unusable paths named."""
import os

import pytest

import helpers
from test_train import _run
from usvjax import train
from usvjax import workdir


def test_a_second_trainer_stops_at_once_and_names_the_holder(data_dir, tmp_path):
  with workdir.hold(str(tmp_path)):
    process = _run(['-m', 'experiments.train', '--config=configs/unet.py:tiny',
                    f'--workdir={tmp_path}', f'--config.dataset.data_dir={data_dir}'])
    output, _ = process.communicate(timeout=300)
  assert process.returncode == 1
  assert f'is in use by a running trainer (host {os.uname().nodename}, pid {os.getpid()})' in output
  assert 'Traceback' not in output
  assert not (tmp_path / 'checkpoints').exists()  # Stopped before anything was written.


def test_a_lock_left_by_a_killed_trainer_is_taken_over(tmp_path):
  (tmp_path / workdir.LOCK_FILE).write_text('host gone, pid 999999\n')  # No flock is held.
  with workdir.hold(str(tmp_path)):
    assert (tmp_path / workdir.LOCK_FILE).read_text() == (
        f'host {os.uname().nodename}, pid {os.getpid()}\n')
  with workdir.hold(str(tmp_path)):  # Released when the trainer ends.
    pass


def test_an_unusable_workdir_is_one_error_naming_the_path(data_dir, tmp_path):
  blocker = tmp_path / 'a_file'
  blocker.write_text('')
  config = helpers.load_config('unet', data_dir)
  with pytest.raises(workdir.WorkdirError, match=f'cannot create the run directory.*{blocker}'):
    train.train_and_evaluate(config, str(blocker / 'run'))
