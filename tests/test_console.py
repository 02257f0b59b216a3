"""What a command prints: its own lines on the terminal, the libraries' in <workdir>/errors.log.

The demo's first steps (the tiny U-Net on freshly generated data, then its evaluation) run as
a user runs them, in subprocesses with TensorFlow's log level left unset; a full disk, a
workdir that is a file, a read-only one and a missing config file each end in one line.
"""
import logging
import os
import subprocess
import sys

import pytest

import helpers
from usvjax.core import workdir
from usvjax.reporting import console

LIBRARY_NOISE = ('eprecat', 'oneDNN', 'map_fn_v2', 'PredictCost', 'CropAndResize',
                 'Variant folder', 'Downloading and preparing', 'Unknown size', 'read only',
                 'AutoGraph', 'Traceback', 'WARNING', 'W0000')


def _run(args, workdir_path=None, script=('-m',), **env_vars):
  """(status, terminal output, the workdir's errors.log or '') of a command."""
  env = helpers.subprocess_env(1, **env_vars)
  del env['TF_CPP_MIN_LOG_LEVEL'], env['TF_ENABLE_ONEDNN_OPTS']  # As a user's shell has it.
  process = subprocess.run([sys.executable, *script, *args], cwd=helpers.REPO, env=env,
                           text=True, capture_output=True, timeout=300, check=False)
  log = os.path.join(workdir_path, 'errors.log') if workdir_path else ''
  logged = open(log, encoding='utf-8').read() if log and os.path.exists(log) else ''
  return process.returncode, process.stdout + process.stderr, logged


def _train_args(run_dir, data_dir, *extra):
  return ['experiments.train', '--config=configs/unet.py:tiny', f'--workdir={run_dir}',
          f'--config.dataset.data_dir={data_dir}', '--config.total_steps=2',
          '--config.eval_every=2', '--config.checkpoint_every=1', *extra]


def test_the_demos_first_steps_show_only_the_projects_lines(tmp_path):
  run_dir = str(tmp_path / 'run')
  leftover = tmp_path / 'tfds' / 'usv_synthetic' / 'tiny' / 'incomplete.K1LLED'
  leftover.mkdir(parents=True)  # A killed conversion's: removed with a project warning.
  cache = tmp_path / 'xla'  # JAX's own variable names the commands' compilation cache.
  status, output, logged = _run(_train_args(run_dir, tmp_path / 'tfds'), run_dir,
                                JAX_COMPILATION_CACHE_DIR=str(cache))
  assert status == 0, output[-3000:]
  assert any(name.endswith('-cache') for name in os.listdir(cache))
  for noise in LIBRARY_NOISE:
    assert noise not in output, (noise, output[-3000:])
  assert 'data: usv_synthetic/tiny/1.2.0 in ' in output  # The data summary.
  # The project's log records are plain lines: no absl prefix of level, time and source.
  assert (f'\nwarning: removed {leftover}, the unfinished conversion of an interrupted run\n'
          in output), output[-3000:]
  assert '12 train, 4 validation, 6 test videos' in output
  assert 'step 2 val (validation):' in output  # Progress and validation.
  assert 'TensorInfo.dtype' in logged and 'Downloading and preparing' in logged
  # Evaluation converting data of its own (a new data_dir, as an external test set) is quiet.
  status, output, logged = _run(['experiments.evaluate', f'--workdir={run_dir}',
                                 f'--config={run_dir}/config.py',
                                 f'--config.dataset.data_dir={tmp_path / "tfds_eval"}',
                                 '--allow_config_changes'], run_dir)
  assert status == 0, output[-3000:]
  for noise in LIBRARY_NOISE:
    assert noise not in output, (noise, output[-3000:])
  assert 'Given directory is read only' in logged
  # --verbosity brings the libraries' messages back, on the terminal.
  status, output, _ = _run(['experiments.evaluate', f'--workdir={run_dir}', '--verbosity=0'])
  assert status == 0 and 'Given directory is read only' in output


def test_a_full_disk_is_one_line_naming_the_log(data_dir, tmp_path):
  run_dir = str(tmp_path / 'run')
  status, output, logged = _run(_train_args(run_dir, data_dir), run_dir,
                                script=('tests/full_disk.py',))
  errors = [line for line in output.splitlines() if 'error' in line.lower()]
  assert status == 1 and len(errors) == 1, output[-3000:]
  assert errors[0].startswith(f"error: cannot write the checkpoint of step 1 in the run "
                              f"directory '{run_dir}' (the disk is full).")
  assert errors[0].endswith(f'(library messages and the traceback: {run_dir}/errors.log)')
  assert 'Traceback' not in output
  assert '_SignalingThread.run() raised an exception' in logged  # Orbax's threads.
  assert 'No space left on device' in logged


def test_a_workdir_that_is_a_file_is_one_line(data_dir, tmp_path):
  blocker = tmp_path / 'a_file'
  blocker.write_text('')
  status, output, _ = _run(_train_args(str(blocker), data_dir))
  assert status == 1 and len(output.strip().splitlines()) == 1, output[-3000:]
  assert output.startswith(f"error: the run directory '{blocker}' is a file, not a "
                           'directory. Pass another --workdir'), output


def test_a_missing_config_file_is_one_line(tmp_path):
  status, output, _ = _run(['experiments.train', '--config=configs/nope.py:tiny',
                            f'--workdir={tmp_path / "run"}'])
  assert status == 2 and len(output.strip().splitlines()) == 1, output
  assert output.startswith("error: --config=configs/nope.py:tiny: there is no config file "
                           "'configs/nope.py'"), output
  assert not (tmp_path / 'run').exists()


class _ReadOnly:  # os.statvfs_result's fields that check_space reads, of a read-only mount.
  f_flag, f_bavail, f_frsize = os.ST_RDONLY, 10**6, 4096


def test_a_fresh_read_only_workdir_is_one_error_naming_it(tmp_path, monkeypatch):
  monkeypatch.setattr(os, 'statvfs', lambda path: _ReadOnly())
  with pytest.raises(workdir.WorkdirError, match=(
      rf"^cannot write the run's files in the run directory '{tmp_path}' \(the filesystem "
      r'is read-only\)\. Pass a --workdir on a writable filesystem with free space\.$')):
    workdir.create_writable(str(tmp_path))


@pytest.mark.parametrize('argv', [['train'], ['train', '--verbosity=0']])
def test_tensorflows_machine_dependent_onednn_operations_are_off(argv, monkeypatch):
  monkeypatch.delenv('TF_ENABLE_ONEDNN_OPTS', raising=False)
  console.quiet_native(argv)
  assert os.environ['TF_ENABLE_ONEDNN_OPTS'] == '0'


def test_a_project_warning_is_a_line_led_by_warning():
  formatter = console._ProjectLine()  # pylint: disable=protected-access

  def record(level: int) -> logging.LogRecord:
    return logging.LogRecord('absl', level, __file__, 1, '%s: %d empty', ('x', 3), None)
  assert formatter.format(record(logging.INFO)) == 'x: 3 empty'
  assert formatter.format(record(logging.WARNING)) == 'warning: x: 3 empty'
  assert formatter.format(record(logging.ERROR)) == 'error: x: 3 empty'
