"""Flags and error handling shared by the entry points."""
from __future__ import annotations

import os
import re
import sys

from typing import NamedTuple

from absl import flags
import ml_collections
from ml_collections import config_flags

from configs.common import VariantError
from input_pipeline.builders.common import DatasetError
from usvjax.core import compile_cache
from usvjax.core import parallel
from usvjax.core.preemption import Stopped
from usvjax.core.train import NonFiniteLossError
from usvjax.errors import ConfigError
from usvjax.reporting import console
from usvjax.reporting import provenance

COORDINATOR = flags.DEFINE_string(
    'coordinator_address', '', 'host:port of process 0 for multi-process runs '
    '(or set USVJAX_DISTRIBUTED=auto / run under SLURM to detect it).')
NUM_PROCESSES = flags.DEFINE_integer('num_processes', 1, 'Number of processes.')
PROCESS_ID = flags.DEFINE_integer('process_id', 0, 'Index of this process.')
COMPILATION_CACHE = flags.DEFINE_string(
    'compilation_cache', compile_cache.default_dir(),
    "JAX's persistent compilation cache (default: $JAX_COMPILATION_CACHE_DIR, else "
    '~/.cache/usvjax/xla): a step compiled once (by an earlier fold, seed or run of the same '
    "shapes) is read back instead of compiled again. '' turns it off.")
HEARTBEAT_TIMEOUT = flags.DEFINE_integer(
    'heartbeat_timeout_seconds', parallel.DEFAULT_HEARTBEAT_TIMEOUT_SECONDS,
    'A process of a multi-process run that sends no heartbeat for this long is lost: the '
    'others print which one and exit with status 1 (resume by restarting all processes).')

ALLOW_CONFIG_CHANGES = flags.DEFINE_bool(
    'allow_config_changes', False, "Evaluate with a --config that differs from the run's "
    'own (<workdir>/config.py), e.g. on other data, on purpose.')


def run_config(given: ml_collections.ConfigDict | None,
               workdir: str) -> ml_collections.ConfigDict:
  """The config to evaluate the run in ``workdir`` with: its saved one without
  ``--config``; else the given one, which must match the saved one (keys that may differ:
  ``provenance.RESUMABLE``) unless --allow_config_changes."""
  if given is None:
    return provenance.load_config(workdir)
  if not ALLOW_CONFIG_CHANGES.value:
    provenance.check_matches(given, workdir, 'given with --config')
  return given


class RunFlags(NamedTuple):
  """Flags of the entry points that read a trained run's checkpoint."""
  config: flags.FlagHolder
  workdir: flags.FlagHolder
  checkpoint: flags.FlagHolder
  split: flags.FlagHolder
  output_dir: flags.FlagHolder


def define_run_flags(output_help: str) -> RunFlags:
  """Defines --config (default: the run's own), --workdir (required), --checkpoint, --split
  and --output_dir."""
  run_flags = RunFlags(
      config_flags.DEFINE_config_file(
          'config', None, "Config of the run (default: the run's own, <workdir>/config.py).",
          lock_config=True),
      flags.DEFINE_string('workdir', None, 'The run directory.'),
      flags.DEFINE_string('checkpoint', 'best', "'best', 'latest' or a step."),
      flags.DEFINE_string('split', '', 'Split (default: config.dataset.test_split).'),
      flags.DEFINE_string('output_dir', '', output_help))
  flags.mark_flags_as_required(['workdir'])
  return run_flags


# Errors whose message already says what is wrong and what to do: one line, no traceback.
# An OSError names its file and cause (a missing file, a full disk, a read-only
# filesystem); the workdir's own are ``WorkdirError``s that also say what to do. Anything
# else (a plain ValueError included) is a bug and keeps its traceback. ``Stopped`` is a
# run stopped by a signal after saving (exit status 128 + the signal).
USER_ERRORS = (DatasetError, NonFiniteLossError, OSError, ConfigError, VariantError, Stopped)


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing, with a one-line error for a bad config override (unknown key,
  wrong type) or a --config file that does not exist, instead of a traceback. Pass as
  ``app.run(main, flags_parser=parse_flags)``."""
  try:
    rest = flags.FLAGS(argv)
  except (AttributeError, KeyError, TypeError, ValueError, flags.Error) as e:
    text = str(e).replace('\\n', '\n').replace("\\'", "'")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    # The last line, without the exception's class name ml_collections puts before it.
    message = re.sub(r'^[\w.]+(Error|Exception): ', '', lines[-1].strip('\'"'))
    if isinstance(e, (AttributeError, KeyError)):  # An override of a key the config lacks?
      message = _unknown_key(argv, lines[0].strip('\'"'), ' '.join(lines[1:]).strip("'"),
                             message)
    print(f'error: bad flag or config override: {message}', file=sys.stderr)
    sys.exit(2)
  if 'config' in flags.FLAGS and flags.FLAGS['config'].present:
    given = config_flags.get_config_filename(flags.FLAGS['config'])
    path = given.split(':')[0]
    if not os.path.isfile(path):
      print(f'error: --config={given}: there is no config file {path!r} (in {os.getcwd()}). '
            'Pass a file of configs/ with its variant (e.g. --config=configs/unet.py:demo) or '
            "a run's <workdir>/config.py.", file=sys.stderr)
      sys.exit(2)
  return rest


def _unknown_key(argv: list[str], key: str, hint: str, message: str) -> str:
  """'--config.a.key=1: the config has no key 'key' ...' for the override naming ``key``
  (``message`` where no override names it: the error came from elsewhere)."""
  given = [arg for arg in argv if re.match(rf'--\w+(\.\w+)*\.{re.escape(key)}\b', arg)]
  if not given:
    return message
  return (f'{given[0]}: the config has no key {key!r}. {hint + " " if hint else ""}Check '
          'the spelling against the config file (configs/common.py holds the keys every '
          'config shares).')


def start_processes(workdir: str = '', creates_workdir: bool = False) -> None:
  """Sends the libraries' messages to the command's log (``usvjax.reporting.console``;
  ``--verbosity=N`` keeps them on the terminal), turns on the persistent compilation cache
  (--compilation_cache) and starts multi-process JAX.

  ``workdir`` (default: the --workdir flag) holds the log, ``<workdir>/errors.log``; a
  command that ``creates_workdir`` (a trainer) creates it for the log if it can."""
  if not workdir and 'workdir' in flags.FLAGS:
    workdir = flags.FLAGS['workdir'].value or ''
  if not flags.FLAGS['verbosity'].present:
    console.set_up(workdir, creates_workdir, PROCESS_ID.value or _cluster_process_id())
  if COMPILATION_CACHE.value:
    compile_cache.turn_on(COMPILATION_CACHE.value)
  parallel.initialize(COORDINATOR.value, NUM_PROCESSES.value, PROCESS_ID.value,
                      HEARTBEAT_TIMEOUT.value, workdir, console.log_path())


def _cluster_process_id() -> int:
  """This process's index under SLURM (0 elsewhere), before JAX is started."""
  return int(os.environ.get('SLURM_PROCID', '0'))


def fail(error: Exception) -> None:
  """Prints ``error`` as one clear line (naming the log that holds its traceback) and exits
  with status 1 (a ``Stopped`` run: 128 + its signal's number)."""
  if isinstance(error, Stopped):
    print(str(error), file=sys.stderr)
    sys.exit(error.exit_code)
  print(console.fail_line(error), file=sys.stderr)
  sys.exit(1)
