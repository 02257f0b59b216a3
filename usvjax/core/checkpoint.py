"""Orbax checkpoints: keep the last K plus the best by a validation metric; resume.

Orbax writes every checkpoint into a temporary directory and renames it only when the
write is complete, so a crash or kill during a save leaves the previous checkpoint intact
and loadable (a leftover temporary directory is ignored on restore).
"""
from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

from usvjax.errors import ConfigError


def create_manager(workdir: str, keep: int, best_metric: str = '', best_mode: str = 'max',
                   read_only: bool = False) -> ocp.CheckpointManager:
  """A manager for ``<workdir>/checkpoints``.

  Args:
    workdir: the run directory.
    keep: how many of the latest checkpoints to keep.
    best_metric: validation metric that ranks checkpoints ('' = no best tracking); the
      best one is kept in addition to the latest ``keep``.
    best_mode: 'max' or 'min' for ``best_metric``.
    read_only: open for evaluation only.
  """
  keep_policies: list[Any] = [policies.LatestN(n=keep)]
  best_fn = None
  if best_metric:
    best_fn = lambda metrics: metrics[best_metric]  # pylint: disable=unnecessary-lambda-assignment
    keep_policies.append(policies.BestN(get_metric_fn=best_fn, reverse=best_mode == 'min', n=1,
                                        keep_checkpoints_without_metrics=False))
  options = ocp.CheckpointManagerOptions(
      best_fn=best_fn, best_mode=best_mode, read_only=read_only,
      preservation_policy=None if read_only else policies.AnyPreservationPolicy(keep_policies),
      cleanup_tmp_directories=not read_only, enable_async_checkpointing=False,
      create=not read_only, save_interval_steps=0 if read_only else 1)
  return ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, 'checkpoints')),
                               options=options)


def save(manager: ocp.CheckpointManager, step: int, state: Any,
         metrics: dict[str, float] | None = None) -> None:
  manager.save(step, args=ocp.args.StandardSave(state), metrics=metrics, force=True)


def restore(manager: ocp.CheckpointManager, step: int, target: Any) -> Any:
  """Restores ``step`` into the structure, shapes and shardings of ``target``."""
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
  return manager.restore(step, args=ocp.args.StandardRestore(abstract))


def restore_variables(manager: ocp.CheckpointManager, step: int, abstract: dict) -> dict:
  """Restores only the entries of ``abstract`` (``params`` and ``batch_stats`` as
  ``jax.ShapeDtypeStruct`` with shardings) of a saved train state: the optimizer state is
  neither read nor allocated."""
  restore_args = ocp.checkpoint_utils.construct_restore_args(abstract)
  try:
    return manager.restore(step, args=ocp.args.PyTreeRestore(
        item=abstract, restore_args=restore_args, partial_restore=True))
  except (ValueError, KeyError, TypeError) as e:
    differences = _differences(abstract, _saved_variables(manager.directory, step))
    if not differences:
      raise
    raise ConfigError(
        f'checkpoint step {step} in {manager.directory} does not fit the model of this config '
        f'({len(differences)} variables differ, e.g. {differences[:4]}): evaluate with the '
        'config (and overrides, e.g. --config.model.*) the run was trained with.') from e


def _saved_variables(directory: str, step: int) -> dict:
  """{'params', 'batch_stats'} of a saved train state as host arrays (no target needed)."""
  with ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(
      read_only=True)) as manager:
    raw = manager.restore(step, args=ocp.args.StandardRestore())
  return {k: raw.get(k) or {} for k in ('params', 'batch_stats')}


def _differences(expected: dict, saved: dict) -> list[str]:
  """'path: shape here vs saved' for every variable whose presence or shape differs."""
  def shapes(tree):
    return {'/'.join(str(getattr(k, 'key', k)) for k in path): tuple(leaf.shape)
            for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}
  ours, theirs = shapes(expected), shapes(saved)
  return [f'{k}: {ours.get(k, "absent")} here, {theirs.get(k, "absent")} saved'
          for k in sorted(set(ours) | set(theirs)) if ours.get(k) != theirs.get(k)]


def restore_latest_raw(workdir: str) -> dict:
  """The latest checkpoint of the run in ``workdir`` as nested dicts of host arrays
  (``params``, ``batch_stats``, ...), without knowing the model that wrote it."""
  with ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, 'checkpoints')),
                             options=ocp.CheckpointManagerOptions(read_only=True)) as manager:
    step = resolve_step(manager, 'latest')
    return manager.restore(step, args=ocp.args.StandardRestore())


def resolve_step(manager: ocp.CheckpointManager, which: str) -> int:
  """'latest', 'best' or a step number -> an existing step; a clear error otherwise."""
  steps = manager.all_steps()
  if not steps:
    raise FileNotFoundError(f'no checkpoint in {manager.directory}: train first, or pass '
                            'the workdir of a finished run.')
  if which == 'latest':
    return manager.latest_step()
  if which == 'best':
    best = manager.best_step()
    return manager.latest_step() if best is None else best
  if not which.isdigit() or int(which) not in steps:
    raise ConfigError(f'checkpoint {which!r} not found in {manager.directory}; available: '
                      f"{sorted(steps)}, 'latest' or 'best'.")
  return int(which)
