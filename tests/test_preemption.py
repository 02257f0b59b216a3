"""Pre-emption: a SIGTERM stops training after its step with a checkpoint of that step and
one line (exit 143); the rerun ends with exactly the parameters of an uninterrupted run. A
second signal is left to the operating system (it ends the process at once)."""
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import helpers
from usvjax.core import checkpoint
from usvjax.core import preemption

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _train(workdir, data_dir, cache, total_steps: int) -> subprocess.Popen:
  # A constant learning rate: runs of other total_steps compile the same step (cached).
  return subprocess.Popen(
      [sys.executable, '-m', 'experiments.train', '--config=configs/unet.py:tiny',
       f'--workdir={workdir}', f'--config.dataset.data_dir={data_dir}',
       f'--compilation_cache={cache}', '--config.schedule.name=constant',
       f'--config.total_steps={total_steps}', '--config.log_every=1',
       '--config.checkpoint_every=1000', '--config.eval_every=1000'],
      cwd=REPO, env=helpers.subprocess_env(1), text=True, stdout=subprocess.PIPE,
      stderr=subprocess.PIPE)


def _wait_for_logged_steps(workdir, steps: int, process: subprocess.Popen) -> None:
  log, deadline = workdir / 'metrics.jsonl', time.time() + 300
  while time.time() < deadline and process.poll() is None:
    if log.exists() and log.read_text().count('train/loss') >= steps:
      return
    time.sleep(0.2)
  raise AssertionError(f'training logged fewer than {steps} steps: {process.communicate()}')


def _final_parameters(workdir) -> dict:
  return helpers.flat_local(checkpoint.restore_latest_raw(str(workdir))['params'])


def test_sigterm_saves_the_step_and_the_rerun_ends_like_an_uninterrupted_run(data_dir,
                                                                            tmp_path):
  stopped_dir, cache = tmp_path / 'stopped', tmp_path / 'xla'
  process = _train(stopped_dir, data_dir, cache, total_steps=400)
  _wait_for_logged_steps(stopped_dir, 2, process)
  process.send_signal(signal.SIGTERM)
  _, stderr = process.communicate(timeout=300)
  assert process.returncode == 143, stderr
  last_line = stderr.strip().splitlines()[-1]
  match = re.fullmatch(r'stopped by SIGTERM at step (\d+); checkpoint \1 saved in (\S+); '
                       'rerun the same command to resume', last_line)
  assert match, stderr
  step = int(match.group(1))
  assert step >= 2 and 'Traceback' not in stderr
  manager = checkpoint.create_manager(str(stopped_dir), 2, read_only=True)
  assert manager.all_steps() == [step]  # No regular checkpoint: the signal's own save.

  rerun = _train(stopped_dir, data_dir, cache, total_steps=step + 3)
  output, stderr = rerun.communicate(timeout=300)
  assert rerun.returncode == 0, stderr
  assert f'resumed from step {step}' in output + stderr
  straight = _train(tmp_path / 'straight', data_dir, cache, total_steps=step + 3)
  _, stderr = straight.communicate(timeout=300)
  assert straight.returncode == 0, stderr
  want, got = _final_parameters(tmp_path / 'straight'), _final_parameters(stopped_dir)
  assert got.keys() == want.keys()
  for key in want:  # Bitwise: same data stream, same compiled step.
    np.testing.assert_array_equal(got[key], want[key], err_msg=key)


@pytest.mark.parametrize('number', [signal.SIGTERM, signal.SIGINT])
def test_the_first_signal_is_recorded_and_the_second_left_to_the_system(number):
  before = signal.getsignal(number)
  with preemption.StopSignals() as signals:
    assert not signals.reached(1)
    os.kill(os.getpid(), number)
    time.sleep(0.01)  # Python runs the handler at the next bytecode.
    assert signals.reached(2) and signals.received == number
    assert signal.getsignal(number) == signal.SIG_DFL  # A second one ends the process.
    stopped = signals.stopped(2, '/runs/x/checkpoints')
  assert signal.getsignal(number) == before
  assert stopped.exit_code == 128 + number
  assert str(stopped) == (f'stopped by {signal.Signals(number).name} at step 2; checkpoint 2 '
                          'saved in /runs/x/checkpoints; rerun the same command to resume')


@pytest.mark.parametrize('name', ['SIGTERM', 'SIGINT'])
def test_two_processes_stop_at_the_same_step_when_one_is_signalled(name):
  port = str(21000 + os.getpid() % 20000 + len(name))
  workers = [subprocess.Popen(
      [sys.executable, 'tests/preemption_worker.py', str(i), port, name], cwd=REPO,
      env=helpers.subprocess_env(1, JAX_PLATFORMS='cpu'), text=True,
      stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in range(2)]
  outputs = [w.communicate(timeout=120) for w in workers]
  lines = [out.strip().splitlines()[-1] if out.strip() else err for out, err in outputs]
  steps = [re.fullmatch(r'stopped at step (\d+) by SIG\w+', line) for line in lines]
  assert all(steps), lines
  assert steps[0].group(1) == steps[1].group(1) and int(steps[0].group(1)) >= 5, lines
  assert lines[1].endswith(name)  # The signalled process names its own signal.
