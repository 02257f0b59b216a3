"""One process of the multi-process tests: trains the tiny U-Net, saves its final params.

  python tests/distributed_worker.py PROCESS_ID NUM_PROCESSES PORT WORKDIR DATA_DIR OUT.npz \
      [TOTAL_STEPS CHECKPOINT_EVERY HEARTBEAT_TIMEOUT_SECONDS]
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# SGD (an exact comparison, see test_one_step_is_the_same_on_1_and_4_devices) at a constant
# rate: the compiled steps do not depend on total_steps, so the multi-process tests (4 steps
# here, 1000 in test_dead_peer) compile them once per session (the session's compilation
# cache, see tests/conftest.py).
MULTI_PROCESS_OPTIMIZER = {'optimizer.name': 'sgd', 'optimizer.lr': 0.1,
                           'schedule.name': 'constant'}


def main(process_id, num_processes, port, workdir, data_dir, out, total_steps='4',
         checkpoint_every='4', heartbeat_timeout_seconds='10'):
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import helpers  # pylint: disable=g-import-not-at-top
  from usvjax.core import parallel  # pylint: disable=g-import-not-at-top
  from usvjax.core import run as run_lib  # pylint: disable=g-import-not-at-top
  from usvjax.core import train  # pylint: disable=g-import-not-at-top
  parallel.initialize(f'127.0.0.1:{port}', int(num_processes), int(process_id),
                      int(heartbeat_timeout_seconds), workdir)
  assert jax.process_count() == int(num_processes) and jax.device_count() == 4
  config = helpers.load_config(
      'unet', data_dir, total_steps=int(total_steps), eval_every=int(total_steps),
      checkpoint_every=int(checkpoint_every), **MULTI_PROCESS_OPTIMIZER)
  state, metrics = train.train_and_evaluate(run_lib.resolve(config), workdir)
  np.savez(out, scored_frames=metrics['scored_frames'], **helpers.flat_local(state.params))


if __name__ == '__main__':
  main(*sys.argv[1:])
