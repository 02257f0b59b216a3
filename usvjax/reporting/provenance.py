"""What a run was made of: its resolved config and a fingerprint of its data, in the workdir.

``record(config, workdir, builder)`` (called when a run starts, ``runners.train``) writes

* ``<workdir>/config.py``: the resolved config with every command-line override, as a
  config file (``get_config()``) that every entry point loads with
  ``--config=<workdir>/config.py`` and that ``evaluate``, ``segment_video``,
  ``robustness`` and ``compare`` load by themselves from ``--workdir``;
* ``<workdir>/data.json``: ``data_fingerprint``: the builder (name, config, version), the
  number of examples of each split and, for a local folder, the fingerprint its conversion
  was made from (``input_pipeline.fingerprint``).

A run resumed in the same workdir must have the same config, apart from ``RESUMABLE``
keys (schedule and evaluation settings: a run can be continued for more steps). A run that
has saved no checkpoint yet (``has_checkpoint``: refused by its start-up checks, or stopped
before its first save) has trained nothing: its saved config is replaced, with a log line,
so the corrected command simply runs. A config
given to an evaluation is compared with the saved one the same way (``check_matches``).
A key added to the configs later (``ADDED``) is compared as its old behaviour where a
saved config lacks it, so older runs stay reusable.
"""
from __future__ import annotations

import json
import os
import pprint

import jax
import ml_collections
import tensorflow_datasets as tfds
from absl import logging

from input_pipeline import fingerprint
from usvjax.errors import ConfigError

CONFIG_FILE = 'config.py'
DATA_FILE = 'data.json'
# Keys that may differ between a run and its resumption or evaluation: the schedule and
# how an evaluation scores and reports (not what was trained).
RESUMABLE = ('total_steps', 'log_every', 'eval_every', 'checkpoint_every', 'keep_checkpoints',
             'input.eval_batch_size', 'input.eval_resolution', 'input.overlay_videos',
             'task.threshold', 'task.threshold_rule', 'profile_steps', 'remat',
             'pointwise_matmul', 'task.nsd_tolerance_px', 'task.nsd_tolerance_mm',
             'early_stopping_patience', 'evaluation.tta', 'evaluation.clips',
             'evaluation.calibrate', 'evaluation.weights', 'input.eval_offset')

# Keys added to the configs after runs were saved, each with the value that reproduces the
# runs saved before it: a saved config without the key (at the top level or in a stage's
# config, e.g. ``pretrain.input.train_clips``) is the same run as a config that has this
# value (compare reuses it; evaluation accepts it).
ADDED = {'input.train_clips': 'every_frame', 'task.nsd_tolerance_px': 2.0,
         'task.nsd_tolerance_mm': 1.0, 'input.image_clips': False,
         'input.augment.affine.rotation': 15.0, 'input.augment.affine.shear': 10.0,
         'input.augment.affine.zoom': 0.15, 'input.augment.affine.shift': 0.1,
         'task.consistency_weight': 0.0, 'task.consistency_noise': 0.1,
         'optimizer.ema_decay': 0.0, 'early_stopping_patience': 0, 'evaluation.tta': 'none',
         'evaluation.clips': 1, 'evaluation.calibrate': False, 'evaluation.weights': 'ema',
         'input.eval_offset': 0.5}

_HEADER = '''"""The resolved config of the run in this directory, written when it started.

Load it with --config=<this file> (overrides such as --config.total_steps=... work as usual).
"""
import ml_collections

inf, nan = float('inf'), float('nan')


def get_config():
  return ml_collections.ConfigDict(
'''


def _plain(config: ml_collections.ConfigDict) -> dict:
  return config.copy_and_resolve_references().to_dict()


def config_text(config: ml_collections.ConfigDict) -> str:
  """``config`` as the text of a config file."""
  body = pprint.pformat(_plain(config), indent=1, width=96, sort_dicts=True)
  return _HEADER + '      ' + body.replace('\n', '\n      ') + ')\n'


def setting(config: ml_collections.ConfigDict) -> dict:
  """The result columns that say what data and budget a run had: {'dataset' (builder
  name/config), 'image_size', 'steps'}."""
  return {'dataset': '/'.join(p for p in (config.dataset.name, config.dataset.config) if p),
          'image_size': config.input.image_size, 'steps': config.total_steps}


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The locked config saved in ``workdir``; a clear error if there is none."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(f'{path} does not exist: {workdir!r} is not a run directory '
                            'made by this version (or not one at all); pass --config with '
                            'the config and overrides the run was trained with.')
  namespace: dict = {}
  with open(path, encoding='utf-8') as f:
    exec(compile(f.read(), path, 'exec'), namespace)  # pylint: disable=exec-used
  config = namespace['get_config']()
  config.lock()
  return config


def _flat(tree: dict, prefix: str = '') -> dict:
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(_flat(value, f'{prefix}{key}.'))
    else:
      out[f'{prefix}{key}'] = list(value) if isinstance(value, tuple) else value
  return out


def differences(config: ml_collections.ConfigDict, saved: ml_collections.ConfigDict,
                ignore: tuple[str, ...] = ()) -> list[str]:
  """'key: value here vs saved' for every key (dotted) whose value differs (a key of
  ``ADDED`` that one side lacks counts as its value there)."""
  ours, theirs = _flat(_plain(config)), _flat(_plain(saved))

  def value(flat: dict, key: str):
    if key in flat:
      return flat[key]
    return next((v for k, v in ADDED.items() if key == k or key.endswith('.' + k)), 'absent')

  return [f'{k}: {ours.get(k, "absent")!r} here, {theirs.get(k, "absent")!r} saved'
          for k in sorted(set(ours) | set(theirs))
          if k not in ignore and value(ours, k) != value(theirs, k)]


def _differing(config: ml_collections.ConfigDict, workdir: str, what: str) -> str:
  """'' if ``config`` is the config saved in ``workdir`` (or none is), else the start of
  the error that lists the differing keys."""
  if not os.path.exists(os.path.join(workdir, CONFIG_FILE)):
    return ''
  differing = differences(config, load_config(workdir), RESUMABLE)
  if not differing:
    return ''
  listed = '\n'.join(f'  - {d}' for d in differing)
  return (f'the config {what} differs from the one the run in {workdir} was trained with '
          f'({os.path.join(workdir, CONFIG_FILE)}):\n{listed}\n')


def check_matches(config: ml_collections.ConfigDict, workdir: str, what: str) -> None:
  """Raises ``ConfigError`` naming the differing keys if ``config`` is not the config saved
  in ``workdir`` (``RESUMABLE`` keys aside). ``what`` says what the config is for."""
  differing = _differing(config, workdir, what)
  if differing:
    raise ConfigError(differing + "Leave out --config to use the run's own, pass the same "
                      'overrides again, or (evaluating on other data on purpose) add '
                      '--allow_config_changes.')


def has_checkpoint(workdir: str) -> bool:
  """Whether the run in ``workdir`` (or a stage of it, in a sub-directory) has saved a
  checkpoint (a finished step directory in a ``checkpoints`` folder)."""
  for folder, subfolders, _ in os.walk(workdir):
    if os.path.basename(folder) == 'checkpoints':
      if any(s.isdigit() for s in subfolders):
        return True
      subfolders.clear()  # Not into the steps' own files.
  return False


def data_fingerprint(builder: tfds.core.DatasetBuilder) -> dict:
  """{'builder', 'splits', 'source'[, 'classes']} of a prepared dataset (``source``: the
  folder fingerprint its conversion was made from, or None for generated data;
  ``classes``: the label names of a classification dataset)."""
  out = {'builder': builder.info.full_name,
         'splits': {name: split.num_examples for name, split in builder.info.splits.items()},
         'source': fingerprint.stored(builder.data_dir)}
  if 'label' in builder.info.features:
    out['classes'] = list(builder.info.features['label'].names)
  return out


def record(config: ml_collections.ConfigDict, workdir: str,
           builder: tfds.core.DatasetBuilder) -> None:
  """Writes ``config.py`` and ``data.json`` into ``workdir`` (process 0). A resumed run
  must have the saved config; one without a checkpoint replaces it (the caller has made
  sure that no running trainer holds the workdir: ``usvjax.runners.train``)."""
  differing = _differing(config, workdir, 'of this training')
  if differing and has_checkpoint(workdir):
    raise ConfigError(differing + 'Resume with the same config and overrides (keys that may '
                      f'change: {", ".join(RESUMABLE)}), or pass another --workdir to start '
                      'a new run.')
  if differing:
    logging.warning('replacing the config saved in %s: the run there saved no checkpoint',
                    workdir)
  if jax.process_index() != 0:
    return
  os.makedirs(workdir, exist_ok=True)
  for name, text in ((CONFIG_FILE, config_text(config)),
                     (DATA_FILE, json.dumps(data_fingerprint(builder), indent=2) + '\n')):
    fingerprint.write_atomically(os.path.join(workdir, name), text)


def same_data(a: dict | None, b: dict | None) -> bool:
  """Whether two ``data_fingerprint`` records describe the same data: the same builder,
  splits and classes, converted from the same files (``fingerprint.same_source``: by
  content, wherever the folder lies)."""
  if a is None or b is None:
    return a is b
  def rest(record):
    return {k: v for k, v in record.items() if k != 'source'}
  return rest(a) == rest(b) and fingerprint.same_source(a.get('source'), b.get('source'))


def recorded_data(workdir: str) -> dict | None:
  """The ``data.json`` of the run in ``workdir``, if any."""
  return fingerprint.read_json(os.path.join(workdir, DATA_FILE))
