"""What a training run leaves for the person who runs it: TensorBoard scalars and images
with ``metrics.jsonl`` (``Writer``), and profiler traces (``Profiler``).
"""
from __future__ import annotations

import json
import os

import jax
import numpy as np
import tensorflow as tf

from usvjax.core import workdir as workdir_lib


class Profiler:
  """Traces ``steps`` training steps with ``jax.profiler`` into ``logdir`` (the run's
  TensorBoard folder: its profile plugin shows the trace and XLA's per-op statistics; the
  ``*.trace.json.gz`` beside it opens in Perfetto). Tracing starts at the second step of
  the run (or of the resumption), after the first one compiled; 0 steps traces nothing."""

  def __init__(self, steps: int, start_step: int, logdir: str):
    self.first, self.last, self.logdir = start_step + 2, start_step + 1 + steps, logdir
    self.active = False

  def before(self, step: int) -> None:
    if step == self.first and self.last >= self.first:
      jax.profiler.start_trace(self.logdir, create_perfetto_trace=True)
      self.active = True

  def after(self, step: int, outputs) -> None:
    if self.active and step == self.last:
      jax.block_until_ready(outputs)
      self.close()

  def close(self) -> None:
    if self.active:
      jax.profiler.stop_trace()
      self.active = False


class Writer:
  """TensorBoard scalars and a JSON-lines log in the workdir (process 0 only).

  A run resumed at ``start_step`` first drops the log lines of later steps (written after
  its last checkpoint by the run it resumes, and about to be written again) and any line
  cut short by a kill, so ``metrics.jsonl`` holds each step once after any number of
  resumes.
  """

  def __init__(self, workdir: str, start_step: int = 0):
    self.enabled, self.workdir = jax.process_index() == 0, workdir
    if self.enabled:
      with self._writing():
        self.summary = tf.summary.create_file_writer(os.path.join(workdir, 'tensorboard'))
        path = os.path.join(workdir, 'metrics.jsonl')
        _keep_steps_up_to(path, start_step)
        self.jsonl = open(path, 'a')  # pylint: disable=consider-using-with

  def _writing(self):
    return workdir_lib.writing(self.workdir, 'the metrics log', resume_hint(self.workdir))

  def write(self, step: int, scalars: dict[str, float]) -> None:
    if not self.enabled:
      return
    with self._writing():
      with self.summary.as_default(step=step):
        for name, value in scalars.items():
          tf.summary.scalar(name, value)
      self.jsonl.write(json.dumps({'step': step, **scalars}) + '\n')
      self.jsonl.flush()

  def images(self, step: int, images: dict[str, np.ndarray]) -> None:
    """uint8 RGB [H, W, 3] images to TensorBoard (``evaluate.pictures``: overlays)."""
    if not (self.enabled and images):
      return
    with self._writing():
      with self.summary.as_default(step=step):
        for name, image in images.items():
          tf.summary.image(name, image[None])

  def close(self) -> None:
    if self.enabled:
      with self._writing():
        self.summary.flush()
        self.jsonl.close()


def resume_hint(workdir: str) -> str:
  """What to do after a filesystem failure in the middle of a run."""
  return (f'Training stopped; the checkpoints already in {workdir}/checkpoints are intact '
          '(a save is renamed into place only when complete): free space or fix the '
          'filesystem, then rerun the same command to resume from the last one.')


def _keep_steps_up_to(path: str, last_step: int) -> None:
  """Rewrites the JSON-lines log ``path`` (atomically) without lines of steps after
  ``last_step`` and without unreadable lines."""
  if not os.path.exists(path):
    return
  kept = []
  with open(path) as f:
    for line in f:
      try:
        if json.loads(line)['step'] <= last_step:
          kept.append(line)
      except (ValueError, KeyError):
        continue
  with open(path + '.tmp', 'w') as f:
    f.writelines(kept)
  os.replace(path + '.tmp', path)
