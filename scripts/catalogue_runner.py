"""How scripts/failure_catalogue.py runs a case and records what it printed: subprocesses
with HOME in a fresh temporary directory ``T`` and TensorFlow's log level unset, as a user's
shell has it; one row per case in ``ROWS``, written as CSV and printed as a markdown table."""
import csv
import os
import pathlib
import re
import shlex
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [REPO, os.path.join(REPO, 'tests')]

import helpers  # pylint: disable=wrong-import-position
from test_console import LIBRARY_NOISE  # pylint: disable=wrong-import-position

COLUMNS = ('case', 'command', 'exit_code', 'first_line', 'error_line', 'terminal_lines',
           'traceback', 'errors_log', 'signals', 'checkpoints_intact', 'params_equal',
           'meets', 'note')
_PROGRESS = re.compile(r'\d+%\||\d+/\d+ \[|it/s\]|s/it\]|step/s\]|s/step\]')
_KEY = re.compile(r'^(error|stopped by|warning|removed|W\d{4}|.*moved to|.*damaged)', re.I)
T = pathlib.Path(tempfile.mkdtemp(prefix='failure_catalogue_'))
ENV = {k: v for k, v in helpers.subprocess_env(1, HOME=str(T / 'home')).items()
       if k != 'TF_CPP_MIN_LOG_LEVEL'}
TINY = '--config=configs/unet.py:tiny'
ROWS = []


def _lines(text: str) -> list[str]:
  """The lines a terminal ends up showing, progress bars (redrawn with \\r) left out."""
  lines = [line.split('\r')[-1].strip() for line in text.split('\n')]
  return [line for line in lines if line and not _PROGRESS.search(line)]


def _key_line(lines: list[str]) -> str:
  """The first error, warning, stop or removal line; a list's header with its first item."""
  index = next((i for i, line in enumerate(lines) if _KEY.match(line)), None)
  if index is None:
    return ''
  return ' '.join(lines[index:index + 2]) if lines[index].endswith(':') else lines[index]


def _shown(command) -> str:
  text = shlex.join(['python', *command[1:]] if command[0] == sys.executable else command)
  return text.replace(str(T), '$T')


def record(case, command, code, output, workdir=None, ok=True, **extra) -> dict:
  lines = _lines(output)
  log = os.path.join(workdir, 'errors.log') if workdir else ''
  written = os.path.isfile(log) and os.path.getsize(log) > 0
  errors = [line for line in lines if line.lower().startswith('error')]
  one_line = code != 0 and len(errors) <= 1 and 'Traceback' not in output
  noise = [text for text in LIBRARY_NOISE if text not in ('WARNING', 'Traceback')
           and text in output]  # The libraries' messages issue 37 sends to the log.
  extra['note'] = '; '.join([*([f'library messages on the terminal: {noise}'] if noise
                                else []), *([extra['note']] if extra.get('note') else [])])
  row = dict(case=case, command=_shown(command), exit_code=code,
             first_line=(lines or [''])[0][:300],
             error_line=_key_line(lines)[:300],
             terminal_lines=len(lines), traceback='Traceback' in output,
             errors_log=f'yes ({sum(1 for _ in open(log, errors="replace"))} lines)'
             if written else 'no', meets=bool(ok) and not noise and (code == 0 or one_line), **extra)
  row['meets'] = 'yes' if row['meets'] else 'NO'
  ROWS.append(row)
  print(f"[{len(ROWS)}] {case}: exit {code}, {row['error_line'] or row['first_line']}",
        flush=True)
  return row


def run(case, args, workdir=None, want='', code=None, env=None, script=('-m',), note=''):
  """Runs ``python <script> <args>``; ``want``: a regex the output must hold, ``code``:
  the exit code it must end with, or 'fail' for any but 0 (either failing -> meets NO)."""
  command = [sys.executable, *script, *[str(a) for a in args]]
  process = subprocess.run(command, cwd=REPO, env={**ENV, **(env or {})}, text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=900,
                           check=False)
  ok = (not want or re.search(want, process.stdout, re.M)) and (
      process.returncode != 0 if code == 'fail' else code in (None, process.returncode))
  record(case, command, process.returncode, process.stdout, workdir and str(workdir), ok,
         note=note)
  return process.stdout


def train(case, workdir, *extra, **kwargs):
  return run(case, ['experiments.train', TINY, f'--workdir={workdir}', *extra], workdir,
             **kwargs)


def evaluate(case, workdir, *extra, **kwargs):
  return run(case, ['experiments.evaluate', f'--workdir={workdir}', *extra], workdir, **kwargs)


def write(path: str) -> None:
  """``ROWS`` as CSV in ``path``; the main columns printed as a markdown table."""
  with open(path, 'w', newline='', encoding='utf-8') as f:
    writer = csv.DictWriter(f, COLUMNS)
    writer.writeheader()
    writer.writerows({k: row.get(k, '') for k in COLUMNS} for row in ROWS)
  print('| case | exit | first line | error/stop line | lines | errors.log | meets |')
  print('|---|---|---|---|---|---|---|')
  for row in ROWS:
    cells = [row.get(k, '') for k in ('case', 'exit_code', 'first_line', 'error_line',
                                      'terminal_lines', 'errors_log', 'meets')]
    print('| ' + ' | '.join(str(c).replace('|', '\\|') for c in cells) + ' |')
  print(f'{len(ROWS)} cases; files in {T}')
