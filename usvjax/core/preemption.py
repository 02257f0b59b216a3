"""Stopping training cleanly on SIGTERM (what SLURM and Kubernetes send before pre-empting a
job) and SIGINT (Ctrl-C).

The first signal asks the loop to stop after the current step: it saves a checkpoint of that
step and raises ``Stopped``, which the entry points print as one line and exit with 128 +
the signal's number (143 for SIGTERM, 130 for SIGINT). A second signal exits at once: the
first one put the default action back, so the operating system ends the process even while
it waits in native code. A checkpoint is renamed into place only when complete, so neither
way damages the ones already saved; a rerun of the same command resumes from the newest.

Multi-process runs must agree on the step they save (every process takes part in the save).
There the pre-emption notice goes through JAX's coordination service
(``multihost_utils.reached_preemption_sync_point``): a SIGTERM to any process reaches all of
them, and all stop at the same step. SIGINT is turned into that notice (the process sends
itself SIGTERM, which the service's handler receives).
"""
from __future__ import annotations

import signal
import threading
import types

import jax
from jax.experimental import multihost_utils

from usvjax.reporting import console

HANDLED = (signal.SIGTERM, signal.SIGINT)


class Stopped(Exception):
  """Training stopped by a signal after saving the checkpoint of the step it finished."""

  def __init__(self, message: str, exit_code: int):
    super().__init__(message)
    self.exit_code = exit_code


class StopSignals:
  """Context manager that holds the SIGTERM/SIGINT handlers while training runs.

  ``reached(step)``, called after every step (no device sync), says whether to save and stop
  there. Outside the main thread (where Python cannot install handlers) it never fires.
  """

  def __init__(self):
    self.received: int | None = None  # The first signal's number.
    self._previous: dict[int, object] = {}
    self._distributed = jax.process_count() > 1

  def __enter__(self) -> StopSignals:
    if threading.current_thread() is threading.main_thread():
      # Multi-process: SIGTERM stays with the coordination service's handler.
      mine = (signal.SIGINT,) if self._distributed else HANDLED
      self._previous = {s: signal.signal(s, self._on_signal) for s in mine}
    return self

  def __exit__(self, *unused_exc) -> None:
    for number, handler in self._previous.items():
      signal.signal(number, handler)

  def _on_signal(self, number: int, unused_frame: types.FrameType | None) -> None:
    self.received = number
    signal.signal(number, signal.SIG_DFL)  # A second one ends the process at once.
    console.say(f'{signal.Signals(number).name} received: finishing the current step to '
                'save it (send it again to stop at once)')
    if self._distributed:
      signal.raise_signal(signal.SIGTERM)  # Tells every process, through the service.

  def reached(self, step: int) -> bool:
    """Whether training stops after ``step`` (every process gives the same answer)."""
    if self._distributed:
      if multihost_utils.reached_preemption_sync_point(step):
        self.received = self.received or signal.SIGTERM
        return True
      return False
    return self.received is not None

  def stopped(self, step: int, directory: str) -> Stopped:
    """The ``Stopped`` to raise once the checkpoint of ``step`` is saved in ``directory``."""
    name = signal.Signals(self.received).name
    return Stopped(f'stopped by {name} at step {step}; checkpoint {step} saved in '
                   f'{directory}; rerun the same command to resume', 128 + self.received)
