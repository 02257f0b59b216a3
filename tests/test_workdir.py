"""The run directory: one trainer at a time, stale locks taken over, unusable paths named."""
import os

import pytest

import helpers
from test_train import _run
from usvjax.core import run as run_lib
from usvjax.core import train
from usvjax.core import workdir


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
    train.train_and_evaluate(run_lib.resolve(config), str(blocker / 'run'))


class _Stats:  # os.statvfs_result's fields that check_space reads.
  def __init__(self, flag: int, free_blocks: int):
    self.f_flag, self.f_bavail, self.f_frsize = flag, free_blocks, 4096


@pytest.mark.parametrize('flag,free_blocks,cause', [
    (os.ST_RDONLY, 10**6, 'the filesystem is read-only'),
    (0, 2, 'the disk is full: 0.0 MB free, 1.0 MB needed'),
])
def test_a_checkpoint_that_cannot_be_written_is_refused_before_writing(
    tmp_path, monkeypatch, flag, free_blocks, cause):
  monkeypatch.setattr(os, 'statvfs', lambda path: _Stats(flag, free_blocks))
  with pytest.raises(workdir.WorkdirError, match=(
      rf"^cannot write the checkpoint of step 5 in the run directory '{tmp_path}' "
      rf'\({cause}\)\. Rerun\.$')):
    workdir.check_space(str(tmp_path), 10**6, 'the checkpoint of step 5', 'Rerun.')
  monkeypatch.undo()
  workdir.check_space(str(tmp_path), 10**6, 'the checkpoint of step 5', 'Rerun.')


@pytest.mark.parametrize('error,cause', [
    (OSError(28, 'No space left on device'), 'the disk is full'),
    (OSError(30, 'Read-only file system'), 'the filesystem is read-only'),
    (ValueError('RESOURCE_EXHAUSTED: Error writing local file "x/_sharding": Failed to '
                "write 407 bytes to file 17: No space left on device [os_error_code='28']"),
     'the disk is full'),  # TensorStore's, under Orbax.
])
def test_a_write_failure_is_one_error_naming_the_directory(error, cause):
  with pytest.raises(workdir.WorkdirError, match=rf"^cannot write the log in the run "
                     rf"directory '/runs/a' \({cause}\)\. Resume\.$"):
    with workdir.writing('/runs/a', 'the log', 'Resume.'):
      raise error


@pytest.mark.parametrize('error', [OSError(2, 'No such file'), ValueError('a bug')])
def test_other_errors_pass_through_writing_unchanged(error):
  with pytest.raises(type(error)) as raised:
    with workdir.writing('/runs/a', 'the log', 'Resume.'):
      raise error
  assert raised.value is error
