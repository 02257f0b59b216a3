"""A dead peer ends a two-process run promptly, with one clear line and no native stack.

Two processes of ``experiments.train`` train the tiny U-Net over 127.0.0.1 with gloo (the
optimizer of test_train's two-process test); once the first checkpoint is on disk one of them
is killed with SIGKILL. The survivor must exit with status 1 within a generous bound,
printing which process was lost, that the run resumes from the workdir and where the
runtime's own messages went, and nothing else: not the runtime's abort (a native stack),
which ``parallel._exit_when_a_peer_is_lost`` replaces on the releases it was written for, nor
the coordination service's or gloo's lines, which go to the process's errors log.
"""
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

import distributed_worker
import helpers

HEARTBEAT_SECONDS = 5
NATIVE_CRASH_SIGNS = ('Fatal Python error', 'SIGABRT', 'terminate called', 'Check failure',
                      '*** Begin stack trace', 'Aborted', 'Traceback', 'coordination_service',
                      'Gloo', 'WARNING')
LOGS = ('errors.log', 'errors.process1.log')


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


@pytest.mark.parametrize('victim', [1, 0], ids=['worker_dies', 'coordinator_dies'])
def test_survivor_exits_with_one_clear_line(victim, data_dir, tmp_path):
  workdir = tmp_path / 'run'
  port = _free_port()
  env = helpers.subprocess_env(2, JAX_PLATFORMS='cpu')
  # 1000 steps: far more than run before the kill; a checkpoint every 2 steps marks "mid-run".
  overrides = {'dataset.data_dir': data_dir, 'total_steps': 1000, 'eval_every': 1000,
               'checkpoint_every': 2, **distributed_worker.MULTI_PROCESS_OPTIMIZER}
  processes = [subprocess.Popen(
      [sys.executable, '-m', 'experiments.train', '--config=configs/unet.py:tiny',
       f'--workdir={workdir}', *[f'--config.{k}={v}' for k, v in overrides.items()],
       f'--coordinator_address=127.0.0.1:{port}', '--num_processes=2', f'--process_id={i}',
       f'--heartbeat_timeout_seconds={HEARTBEAT_SECONDS}',
       f'--compilation_cache={os.environ["JAX_COMPILATION_CACHE_DIR"]}'],
      cwd=helpers.REPO, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
               for i in range(2)]
  survivor = processes[1 - victim]
  try:
    deadline = time.monotonic() + 300
    while not (workdir / 'checkpoints' / '2').exists():
      for i, p in enumerate(processes):
        if p.poll() is not None:
          pytest.fail(f'process {i} ended early (status {p.returncode}):\n'
                      + p.communicate()[0][-3000:])
      assert time.monotonic() < deadline, 'no checkpoint at step 2'
      time.sleep(0.2)
    processes[victim].send_signal(signal.SIGKILL)
    output = survivor.communicate(timeout=60)[0]
  finally:
    for p in processes:
      if p.poll() is None:
        p.kill()
      p.communicate()
  assert survivor.returncode == 1, output[-3000:]
  lost = f'error: process {victim} of 2 was lost (no heartbeat for {HEARTBEAT_SECONDS} s'
  lines = [line for line in output.splitlines() if line.startswith('error:')]
  assert len(lines) == 1 and lines[0].startswith(lost), output[-3000:]
  assert f'resumed from the last checkpoint in {workdir} by restarting all processes' in lines[0]
  assert lines[0].endswith(f"(the runtime's messages: {workdir / LOGS[1 - victim]})")
  for sign in NATIVE_CRASH_SIGNS:
    assert sign not in output, output[-3000:]
