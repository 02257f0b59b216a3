"""Data parallelism: one mesh axis ``'data'``, replicated parameters, global batches.

Every process builds its local batch; :func:`global_batch` turns the local batches of all
processes into one global ``jax.Array`` sharded over the ``'data'`` axis. Under ``jax.jit``
with these shardings, reductions over the batch (the loss mean, BatchNorm statistics) are
over the global batch, so 1 device and N devices compute the same step.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import jax
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

def initialize(coordinator_address: str = '', num_processes: int = 1,
               process_id: int = 0) -> None:
  """Starts multi-process JAX when asked (flags or a cluster environment), else nothing.

  With ``coordinator_address`` set, the three values are passed explicitly; with
  ``USVJAX_DISTRIBUTED=auto`` (or on SLURM), ``jax.distributed.initialize()`` detects them.
  On CPU the cross-process collectives use gloo.
  """
  explicit = bool(coordinator_address)
  auto = os.environ.get('USVJAX_DISTRIBUTED') == 'auto' or 'SLURM_NTASKS' in os.environ
  if not (explicit or auto):
    return
  if jax.config.jax_platforms in (None, '', 'cpu'):
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  if explicit:
    jax.distributed.initialize(coordinator_address, num_processes, process_id)
  else:
    jax.distributed.initialize()
  logging.info('process %d of %d, %d local / %d global devices', jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())


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
    raise ValueError(f'{what} {batch_size} must be divisible by the number of devices '
                     f'{mesh.size} (data parallelism splits it evenly).')
