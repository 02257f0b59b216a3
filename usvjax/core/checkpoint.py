"""Orbax checkpoints: keep the last K plus the best by a validation metric; resume.

Orbax writes every checkpoint into a temporary directory and renames it only when the
write is complete, so a crash or kill during a save leaves the previous checkpoint intact
and loadable; a writable manager (training) removes such leftover ``*.orbax-checkpoint-tmp*``
folders when it opens, with a log line.

A checkpoint damaged after it was written (a data file cut short, its OCDBT manifest or
metadata gone: a full disk, a partial copy) fails to restore; every stored value of the
chosen step is read once before Orbax restores it, so damage is found before a restore
starts. ``restore_newest`` (resume)
and ``restore_chosen`` (evaluation; ``restore_latest_raw``) then warn in one line naming its
step and the failing file, and fall back to the newest intact checkpoint: for 'latest'
newest first, for 'best' the best and then newest first. A resumed run moves the damaged
step to ``<workdir>/damaged_checkpoints/<step>`` (kept for inspection) so that it can save
that step again. A step asked for by number that is damaged, or a run whose checkpoints are
all damaged, is one ``ConfigError`` naming the step and file.
"""
from __future__ import annotations

import glob
import os
import re
import shutil
from collections.abc import Callable
from typing import Any, TypeVar

import jax
import orbax.checkpoint as ocp
import tensorstore as ts
from etils import epath
from orbax.checkpoint import checkpoint_managers as policies

from usvjax.errors import ConfigError
from usvjax.reporting import console

DAMAGED_DIR = 'damaged_checkpoints'
# Files every finished checkpoint step holds (relative to its step folder).
_STEP_FILES = ('_CHECKPOINT_METADATA', os.path.join('default', '_METADATA'),
               os.path.join('default', 'manifest.ocdbt'))
# TensorStore codes of a read that failed on the stored bytes (not on the request).
_READ_FAILURES = ('OUT_OF_RANGE', 'DATA_LOSS', 'NOT_FOUND')
_T = TypeVar('_T')


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
  directory = os.path.abspath(os.path.join(workdir, 'checkpoints'))
  if not read_only:
    remove_temporary(directory)
  options = ocp.CheckpointManagerOptions(
      best_fn=best_fn, best_mode=best_mode, read_only=read_only,
      preservation_policy=None if read_only else policies.AnyPreservationPolicy(keep_policies),
      cleanup_tmp_directories=not read_only, enable_async_checkpointing=False,
      create=not read_only, save_interval_steps=0 if read_only else 1)
  return ocp.CheckpointManager(directory, options=options)


def remove_temporary(directory: str) -> None:
  """Removes the ``*.orbax-checkpoint-tmp*`` folders an interrupted save left in
  ``directory`` (process 0 only), with a log line."""
  if jax.process_index() != 0:
    return
  for path in sorted(glob.glob(os.path.join(glob.escape(directory), '*.orbax-checkpoint-tmp*'))):
    shutil.rmtree(path, ignore_errors=True)
    console.say(f'removed {path}, the unfinished save of an interrupted run')


def save(manager: ocp.CheckpointManager, step: int, state: Any,
         metrics: dict[str, float] | None = None) -> None:
  manager.save(step, args=ocp.args.StandardSave(state), metrics=metrics, force=True)


def restore(manager: ocp.CheckpointManager, step: int, target: Any) -> Any:
  """Restores ``step`` into the structure, shapes and shardings of ``target``."""
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
  return manager.restore(step, args=ocp.args.StandardRestore(abstract))


def restore_variables(manager: ocp.CheckpointManager, step: int, abstract: dict,
                      weights: str = 'ema') -> dict:
  """Restores only the entries of ``abstract`` (``params`` and ``batch_stats`` as
  ``jax.ShapeDtypeStruct`` with shardings) of a saved train state: the optimizer state is
  neither read nor allocated. A state that keeps EMA weights (``ema_params``,
  ``config.optimizer.ema_decay``) gives them as ``params`` (the weights it validated with)
  unless ``weights`` is 'raw': then its trained parameters themselves."""
  saved = ocp.PyTreeCheckpointHandler().metadata(
      epath.Path(manager.directory) / str(step) / 'default').tree
  saved_as = {'params': 'ema_params'} if 'ema_params' in saved and weights == 'ema' else {}
  item = {saved_as.get(k, k): v for k, v in abstract.items()}
  restore_args = ocp.checkpoint_utils.construct_restore_args(item)
  try:
    restored = manager.restore(step, args=ocp.args.PyTreeRestore(
        item=item, restore_args=restore_args, partial_restore=True))
    return {k: restored[saved_as.get(k, k)] for k in abstract}
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
  """The newest intact checkpoint of the run in ``workdir`` as nested dicts of host arrays
  (``params``, ``batch_stats``, ...), without knowing the model that wrote it."""
  with ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, 'checkpoints')),
                             options=ocp.CheckpointManagerOptions(read_only=True)) as manager:
    return restore_chosen(manager, 'latest', lambda step: manager.restore(
        step, args=ocp.args.StandardRestore()))[0]


def restore_newest(manager: ocp.CheckpointManager, target: Any) -> tuple[Any, int]:
  """Resuming: the newest intact checkpoint restored into ``target``'s structure, shapes
  and shardings, and its step; ``(target, 0)`` when there is none. Newer damaged ones are
  warned about and moved aside (module docstring)."""
  if not manager.all_steps():
    return target, 0
  return restore_chosen(manager, 'latest', lambda step: restore(manager, step, target),
                        move_damaged=True)


def restore_chosen(manager: ocp.CheckpointManager, which: str, read: Callable[[int], _T],
                   move_damaged: bool = False) -> tuple[_T, int]:
  """``read(step)`` of checkpoint ``which`` ('latest', 'best' or a step number) and the step
  read. A damaged 'latest' or 'best' falls back to the newest intact checkpoint with a
  one-line warning (and with ``move_damaged``, a writable manager's, is moved aside); a
  damaged step asked for by number is a ``ConfigError``."""
  first = resolve_step(manager, which)
  candidates = [first] if which not in ('latest', 'best') else [first] + sorted(
      (s for s in manager.all_steps() if s != first), reverse=True)
  damaged = []
  for step in candidates:
    try:
      _read_files(os.path.join(manager.directory, str(step)))
      return read(step), step
    except Exception as e:  # pylint: disable=broad-except  (only damage is handled)
      what = damage(manager.directory, step, e)
      if what is None:
        raise
      damaged.append(f'step {step}: {what}')
      if len(candidates) == 1:
        raise ConfigError(f'checkpoint step {step} in {manager.directory} is damaged ({what}): '
                          f'evaluate another step ({sorted(manager.all_steps())}), '
                          "'latest' or 'best'.") from e
      moved = _move_aside(manager, step) if move_damaged else ''
      following = candidates[candidates.index(step) + 1:]
      if following:
        console.say(f'warning: checkpoint step {step} in {manager.directory} is damaged '
                    f'({what}){moved}; trying step {following[0]}, the newest one left')
  raise ConfigError(f'every checkpoint in {manager.directory} is damaged ({"; ".join(damaged)}):'
                    f' move {manager.directory} away to train from scratch, or restore the '
                    'checkpoints from a copy.')


def damage(directory: str, step: int, error: Exception) -> str | None:
  """What is damaged in checkpoint ``step`` of ``directory`` (the failing file and how) if
  ``error``, raised restoring it, comes from its stored files; None for any other error
  (a model that does not fit the checkpoint, a bug)."""
  step_dir = os.path.join(directory, str(step))
  for name in _STEP_FILES:
    if not os.path.exists(os.path.join(step_dir, name)):
      return f'{os.path.join(step_dir, name)} is missing'
  text = str(error)
  if not any(text.startswith(code) for code in _READ_FAILURES):
    return None
  files = [m for m in re.finditer(r'local file "([^"]+)"(: )?', text)
           if not m.group(1).endswith('/') and m.group(1).startswith(step_dir)]
  if not files:
    return None
  detail = text[files[-1].end():].split(' [tensorstore_spec', 1)[0].strip().rstrip('.')
  return f'{files[-1].group(1)} cannot be read: {detail or text.split(":", 1)[0]}'


def _read_files(step_dir: str) -> None:
  """Reads every stored value of a checkpoint step once, raising what a restore would (a
  missing file, TensorStore's read error naming the file), before Orbax's restore: a
  restore that fails halfway leaves callbacks that print tracebacks at exit."""
  for name in _STEP_FILES:
    path = os.path.join(step_dir, name)
    if not os.path.exists(path):
      raise FileNotFoundError(f'{path} is missing')
  store = ts.KvStore.open({'driver': 'ocdbt',
                           'base': 'file://' + os.path.join(step_dir, 'default')}).result()
  for key in store.list().result():
    store.read(key).result()


def _move_aside(manager: ocp.CheckpointManager, step: int) -> str:
  """Moves damaged ``step`` to ``<workdir>/damaged_checkpoints/<step>`` (process 0), so a
  resumed run can save that step again; returns what the warning says about it."""
  target = os.path.join(os.path.dirname(manager.directory), DAMAGED_DIR, str(step))
  if jax.process_index() == 0:
    suffix = 1
    while os.path.exists(target):
      suffix += 1
      target = os.path.join(os.path.dirname(manager.directory), DAMAGED_DIR, f'{step}-{suffix}')
    os.makedirs(os.path.dirname(target), exist_ok=True)
    shutil.move(os.path.join(manager.directory, str(step)), target)
  manager.reload()
  return f', moved to {target}'


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
