"""Data parallelism: one mesh axis ``'data'``, replicated parameters, global batches.

Every process builds its local batch; :func:`global_batch` turns the local batches of all
processes into one global ``jax.Array`` sharded over the ``'data'`` axis. Under ``jax.jit``
with these shardings, reductions over the batch (the loss mean, BatchNorm statistics) are
over the global batch, so 1 device and N devices compute the same step.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import importlib.metadata
import os
import sys
import time
from collections.abc import Mapping, Sequence

import jax
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from usvjax.errors import ConfigError
from usvjax.reporting import console

DEFAULT_HEARTBEAT_TIMEOUT_SECONDS = 10


def initialize(coordinator_address: str = '', num_processes: int = 1, process_id: int = 0,
               heartbeat_timeout_seconds: int = DEFAULT_HEARTBEAT_TIMEOUT_SECONDS,
               workdir: str = '', log: str = '') -> None:
  """Starts multi-process JAX when asked (flags or a cluster environment), else nothing.

  With ``coordinator_address`` set, the three values are passed explicitly; with
  ``USVJAX_DISTRIBUTED=auto`` (or on SLURM), ``jax.distributed.initialize()`` detects them.
  On CPU the cross-process collectives use gloo.

  A peer that sends no heartbeat for ``heartbeat_timeout_seconds``, or a coordinator that
  stops answering, ends every surviving process: on the jax and jaxlib releases of
  :data:`PEER_EXIT_WRITTEN_FOR` it prints :func:`peer_lost_message` (with ``workdir`` as the
  place to resume from, and ``log``, the command's log file that holds the runtime's own
  messages, if any) and exits with status 1 via ``os._exit``, without the shutdown
  barrier that would wait for the dead process and then abort with a native stack; on other
  releases JAX aborts it. Checkpoints on disk are complete (saves are atomic), so restarting
  all processes resumes the run.
  """
  explicit = bool(coordinator_address)
  auto = os.environ.get('USVJAX_DISTRIBUTED') == 'auto' or 'SLURM_NTASKS' in os.environ
  if not (explicit or auto):
    return
  if jax.config.jax_platforms in (None, '', 'cpu'):
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  args = (coordinator_address, num_processes, process_id) if explicit else ()
  with _on_a_lost_peer(heartbeat_timeout_seconds, workdir, log):
    jax.distributed.initialize(*args, heartbeat_timeout_seconds=heartbeat_timeout_seconds)
  sys.excepthook = functools.partial(_await_peer_verdict, 2 * heartbeat_timeout_seconds + 5)
  logging.info('process %d of %d, %d local / %d global devices', jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())


# The releases whose distributed-runtime internals _exit_when_a_peer_is_lost reaches into,
# checked there by tests/test_dead_peer.py. On any other release the hook is left out, and
# tests/test_public_apis.py fails until the hook is checked again (or removed, once a public
# jax.distributed.initialize takes a callback for a lost peer).
PEER_EXIT_WRITTEN_FOR = {'jax': '0.10.2', 'jaxlib': '0.10.2'}


def peer_exit_hook_applies() -> bool:
  """Whether the installed jax and jaxlib are the releases :data:`PEER_EXIT_WRITTEN_FOR`."""
  return all(importlib.metadata.version(name) == version
             for name, version in PEER_EXIT_WRITTEN_FOR.items())


def _on_a_lost_peer(heartbeat_timeout_seconds: int, workdir: str,
                    log: str = '') -> contextlib.AbstractContextManager:
  """The context ``jax.distributed.initialize`` runs in: :func:`_exit_when_a_peer_is_lost`
  on the releases it was written for; elsewhere nothing, so a lost peer ends this process
  through JAX's own abort (a native stack) and a warning says so now."""
  if peer_exit_hook_applies():
    return _exit_when_a_peer_is_lost(heartbeat_timeout_seconds, workdir, log)
  installed = {name: importlib.metadata.version(name) for name in PEER_EXIT_WRITTEN_FOR}
  logging.warning('a lost peer will end this process with JAX\'s own abort: the one-line '
                  'exit (parallel._exit_when_a_peer_is_lost) is written for %s, not %s',
                  PEER_EXIT_WRITTEN_FOR, installed)
  return contextlib.nullcontext()


def peer_lost_message(process_id: int, num_processes: int, heartbeat_timeout_seconds: int,
                      workdir: str, log: str = '') -> str:
  """The line process ``process_id`` prints when a peer is lost (naming ``log``, where the
  runtime's own error messages went, if given).

  The runtime does not tell Python which peer it lost; with two processes it is the other one.
  """
  if num_processes == 2:
    lost = f'process {1 - process_id} of 2'
  else:
    lost = f'a peer of process {process_id} (of {num_processes})'
  where = f' in {workdir}' if workdir else ''
  return (f'error: {lost} was lost (no heartbeat for {heartbeat_timeout_seconds} s or its '
          f'connection closed); the run can be resumed from the last checkpoint{where} by '
          'restarting all processes' + (f' (the runtime\'s messages: {log})' if log else ''))


# The C++ terminate handler installed by _exit_when_a_peer_is_lost (kept alive here).
_terminate_handler = None


@contextlib.contextmanager
def _exit_when_a_peer_is_lost(heartbeat_timeout_seconds: int, workdir: str, log: str):
  """Makes a lost peer print :func:`peer_lost_message` and ``os._exit(1)``, while
  ``jax.distributed.initialize`` runs inside. Private jax and jaxlib APIs: only on the
  releases :data:`PEER_EXIT_WRITTEN_FOR` (see :func:`_on_a_lost_peer`).

  The runtime detects the loss itself (a peer silent for ``heartbeat_timeout_seconds``, the
  public argument, or the coordinator's connection closed) and reports it to its client's
  ``missed_heartbeat_callback``, on a runtime thread; the default callback aborts with a
  native stack. No public API replaces that default in jax 0.10: ``jax.distributed.initialize``
  takes no callback, and Python cannot intercept the abort (signal handlers, ``faulthandler``
  and ``atexit`` do not run before an abort raised on a native thread). Nor can a watchdog of
  public means exit first: when the coordinator dies, its clients abort within milliseconds,
  as their error-polling call fails (``jax_enable_recoverability`` keeps a worker's loss from
  spreading, but not the coordinator's), and ``multihost_utils.live_devices`` is a barrier.

  So the client factory is wrapped to pass a Python callback. jaxlib 0.10 cannot hand the
  callback its ``absl::Status`` argument: the cast throws on the runtime's thread, which ends
  in ``std::terminate``. So the same exit is also installed as the C++ terminate handler (of
  the shared libstdc++ that jaxlib links).
  """
  global _terminate_handler
  from jax._src import distributed  # pylint: disable=g-import-not-at-top
  state = distributed.global_state

  def exit_lost(*unused_status) -> None:
    print('\n' + peer_lost_message(state.process_id, state.num_processes,  # After a bar.
                                   heartbeat_timeout_seconds, workdir, log),
          file=console.terminal(), flush=True)
    os._exit(1)  # pylint: disable=protected-access

  _terminate_handler = ctypes.CFUNCTYPE(None)(exit_lost)
  libstdcxx = ctypes.CDLL(ctypes.util.find_library('stdc++'))
  libstdcxx._ZSt13set_terminatePFvvE(_terminate_handler)  # std::set_terminate
  runtime = distributed._jax  # pylint: disable=protected-access
  make_client = runtime.get_distributed_runtime_client
  runtime.get_distributed_runtime_client = functools.partial(
      make_client, missed_heartbeat_callback=exit_lost)
  try:
    yield
  finally:
    runtime.get_distributed_runtime_client = make_client


def _await_peer_verdict(seconds: float, kind: type[BaseException], error: BaseException,
                        tb) -> None:
  """``sys.excepthook`` of a multi-process run: an uncaught runtime error waits ``seconds``
  before it is printed.

  When a peer dies, this process's next collective fails at once (gloo: "Connection reset by
  peer"), before the coordinator has declared the peer lost. Waiting lets that verdict end the
  process with the one clear line of :func:`peer_lost_message` instead of a traceback; an
  error of any other cause is printed after the wait as usual.
  """
  if isinstance(error, jax.errors.JaxRuntimeError):
    time.sleep(seconds)
  sys.__excepthook__(kind, error, tb)


def create_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A 1-D mesh over ``devices`` (default: all devices of all processes)."""
  devices = jax.devices() if devices is None else list(devices)
  return Mesh(np.asarray(devices), ('data',))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def data_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P('data'))


def global_batch(local: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Assembles the processes' local batches into global arrays sharded on ``'data'``.

  The local batch size must be divisible by the number of local devices, and every
  process's local arrays must have the same shapes (the input pipeline aligns time axes
  of variable length across processes: ``pipeline.align_across_processes``).
  """
  sharding = data_sharded(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in local.items()}


def check_batch_size(batch_size: int, mesh: Mesh, what: str = 'batch size') -> None:
  if batch_size % mesh.size:
    raise ConfigError(f'{what} {batch_size} must be divisible by the number of devices '
                      f'{mesh.size} (data parallelism splits it evenly).')
