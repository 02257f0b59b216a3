"""One process of a two-process pre-emption test (tests/test_preemption.py): steps until
``StopSignals`` says stop, process 1 sending itself ``argv[3]`` (a signal's name) at step 5,
and prints the step every process stopped at and the signal it recorded."""
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=wrong-import-position

from usvjax.core import preemption  # pylint: disable=wrong-import-position


def main(process_id: int, port: str, name: str) -> None:
  jax.distributed.initialize(f'127.0.0.1:{port}', 2, process_id)
  with preemption.StopSignals() as signals:
    for step in range(1, 400):
      time.sleep(0.02)  # A training step.
      if process_id == 1 and step == 5:
        os.kill(os.getpid(), signal.Signals[name])
      if signals.reached(step):
        print(f'stopped at step {step} by {signal.Signals(signals.received).name}', flush=True)
        return
  print('never stopped', flush=True)


if __name__ == '__main__':
  main(int(sys.argv[1]), sys.argv[2], sys.argv[3])
