"""Issue 37's failure catalogue: every case of its "Why" and more, tried as a user would.

  python scripts/failure_catalogue.py [--out=docs/results/failure_catalogue.csv] \
      [--groups=disk,signal,checkpoint,data]

Each case runs ``python -m experiments.train|evaluate ...`` in a subprocess (one at a time)
on the embedded synthetic data (``configs/unet.py:tiny``) or a small folder written here
(``scripts/catalogue_runner.py``: HOME in a fresh temporary directory). It records the
command, exit code, first line printed that is not a progress bar, the number of such lines,
whether errors.log was written, and for the signal cases the signals sent, whether every
checkpoint left restores, and whether the resumed run's final parameters equal
an uninterrupted run's (``tests/test_preemption.py``'s helpers). ``meets`` says whether the
case gives issue 37's one clear line (no traceback) or its documented acceptance. Writes a
CSV and prints a markdown table. A full disk and a read-only workdir use tmpfs mounts (root
with ``mount``), else they are recorded as not tried.
"""
import argparse
import glob
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time

from catalogue_runner import ENV, REPO, ROWS, T, TINY, evaluate, record, run, train, write
import numpy as np
import test_preemption as preempt
from test_builders import make_davis, make_flanet, make_frames_table, write_csv, write_image
from test_checkpoint import _remove, _truncate_data
from test_pixel_formats import TWELVE_BIT, _write


def folder(layout: str, root, **config) -> list[str]:
  """Flags training ``configs/unet.py:tiny`` on the folder ``root`` of ``layout``."""
  name = {'flanet': 'usv_flanet', 'davis': 'usv_davis', 'table': 'usv_frames_table'}[layout]
  name += ''.join(f'/{k}={v}' for k, v in config.items())
  return [f'--config.dataset.name={name}', f'--config.dataset.manual_dir={root}',
          '--config.dataset.config=' + ('480p' if layout == 'davis' else 'default'),
          '--config.total_steps=2', '--config.eval_every=2']


def flanet(name: str, **kwargs) -> pathlib.Path:
  root = T / 'data' / name
  make_flanet(str(root), lengths=(('v1', 4), ('v2', 4), ('v3', 4), ('v4', 4)), lists=(
      ('train', 'v1'), ('train', 'v2'), ('validation', 'v3'), ('test', 'v4')), **kwargs)
  return root


def intact(workdir) -> str:
  """'k of n restore (steps ...)': every checkpoint of the run restored in full."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  with ocp.CheckpointManager(os.path.join(workdir, 'checkpoints'), options=(
      ocp.CheckpointManagerOptions(read_only=True))) as manager:
    steps, good = manager.all_steps(), []
    for step in steps:
      try:
        manager.restore(step, args=ocp.args.StandardRestore())
        good.append(step)
      except Exception:  # pylint: disable=broad-except
        pass
  return f'{len(good)} of {len(steps)} restore (steps {steps})'


def _train_process(workdir, total_steps: int, every: int) -> subprocess.Popen:
  extra = ['--config.schedule.name=constant', f'--config.total_steps={total_steps}',
           '--config.log_every=1', f'--config.checkpoint_every={every}',
           '--config.eval_every=1000']
  return subprocess.Popen([sys.executable, '-m', 'experiments.train', TINY,
                           f'--workdir={workdir}', *extra], cwd=REPO, env=ENV, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def signal_case(case, names, every=1000, during_save=False):
  """Trains, sends ``names`` (signals) after 2 logged steps (``during_save``: once a
  checkpoint's temporary folder exists), resumes to 3 steps past the stop and compares the
  final parameters with an uninterrupted run of as many steps (constant learning rate)."""
  stopped = T / 'runs' / case
  process = _train_process(stopped, 400, every)
  preempt._wait_for_logged_steps(stopped, 2, process)  # pylint: disable=protected-access
  caught = False
  while during_save and process.poll() is None and not caught:
    caught = bool(glob.glob(str(stopped / 'checkpoints' / '*orbax-checkpoint-tmp*')))
    time.sleep(0 if caught else 0.002)
  for i, name in enumerate(names):
    process.send_signal(signal.Signals[name])
    time.sleep(0.05 if i + 1 < len(names) else 0)
  output = process.communicate(timeout=600)[0]
  match = re.search(r'stopped by SIG\w+ at step (\d+)', output)
  step = int(match.group(1)) if match else 0
  note = 'signal sent while a checkpoint was being written; ' if caught else ''
  ckpts = intact(stopped) if (stopped / 'checkpoints').exists() else 'none'
  step = step or int(re.search(r'steps \[(?:.*, )?(\d+)\]', ckpts).group(1))
  rerun = _train_process(stopped, step + 3, every)
  resumed = rerun.communicate(timeout=600)[0]
  straight = _train_process(T / 'runs' / f'{case}_straight', step + 3, 1000)
  straight.communicate(timeout=600)
  want, got = (preempt._final_parameters(d)  # pylint: disable=protected-access
               for d in (T / 'runs' / f'{case}_straight', stopped))
  equal = want.keys() == got.keys() and all(np.array_equal(want[k], got[k]) for k in want)
  note += f'stopped at step {step}; ' + ('rerun resumed' if f'resumed from step {step}' in
                                         resumed else 'rerun did not say it resumed')
  expected = 128 + signal.Signals[names[0]] if len(names) == 1 else -signal.Signals[names[0]]
  record(case, process.args, process.returncode, output, str(stopped),
         process.returncode == expected and equal and ckpts != 'none',
         signals=' '.join(names), checkpoints_intact=ckpts, params_equal=equal, note=note)


def mounted(path, options: str) -> bool:
  path.mkdir(parents=True, exist_ok=True)
  if os.geteuid() != 0:
    return False
  return subprocess.run(['mount', '-t', 'tmpfs', '-o', options, 'tmpfs', str(path)],
                        check=False, capture_output=True).returncode == 0


def fill(path) -> None:
  """Writes ``path``/filler until the disk is full."""
  with open(path / 'filler', 'wb') as f:
    try:
      while True:
        f.write(b'\0' * 65536)
        f.flush()
    except OSError:
      pass


def not_tried(case, why):
  ROWS.append(dict(case=case, command='', exit_code='', first_line=f'not tried: {why}',
                   meets='not tried'))


def disk_cases():
  """A real full disk (a tmpfs filled before and during training), the tests' simulated one
  (tests/full_disk.py) and a fresh read-only workdir (a read-only tmpfs)."""
  disk = T / 'disk'
  if not mounted(disk, 'size=8m'):
    not_tried('full disk (tmpfs)', 'needs root and mount')
  else:
    try:
      process = _train_process(disk / 'run', 400, 4)
      preempt._wait_for_logged_steps(disk / 'run', 2, process)  # pylint: disable=protected-access
      fill(disk)
      output = process.communicate(timeout=600)[0]
      record('full disk during training (tmpfs filled at step 2)', process.args,
             process.returncode, output, str(disk / 'run'))
      train('full disk at start (tmpfs already full)', disk / 'run2', code='fail')
    finally:
      subprocess.run(['umount', str(disk)], check=False)
  train('full disk during the first save (tests/full_disk.py)', T / 'runs' / 'full',
        '--config.total_steps=2', '--config.checkpoint_every=1',
        script=('tests/full_disk.py',), code='fail', want='disk is full')
  readonly = T / 'readonly'
  if mounted(readonly, 'ro,size=1m'):
    try:
      train('fresh read-only workdir (read-only tmpfs)', readonly, code='fail', want='read-only')
    finally:
      subprocess.run(['umount', str(readonly)], check=False)
  elif os.geteuid() != 0:
    readonly.chmod(0o555)
    train('fresh read-only workdir (chmod 555)', readonly, code='fail')
  else:
    not_tried('fresh read-only workdir', 'root ignores chmod and mount failed')


def signal_cases():
  signal_case('SIGTERM during training', ['SIGTERM'])
  signal_case('SIGINT during a checkpoint save', ['SIGINT'], every=1, during_save=True)
  signal_case('two SIGTERMs 50 ms apart', ['SIGTERM', 'SIGTERM'], every=1)


def checkpoint_cases():
  base = T / 'runs' / 'base'
  train('baseline: tiny run, checkpoints 3 and 6', base, code=0)
  for damage in ('truncated data file', 'missing OCDBT manifest'):
    run_dir = T / 'runs' / damage.split()[1]
    shutil.copytree(base, run_dir)
    directory = str(run_dir / 'checkpoints')
    _truncate_data(directory, 6) if damage.startswith('trunc') else _remove(
        directory, 6, 'manifest.ocdbt')
    if damage.startswith('trunc'):
      evaluate(f'{damage}: evaluate --checkpoint=6 (asked for)', run_dir, '--checkpoint=6',
               code='fail', want=r'^error: .*step 6')
    evaluate(f'{damage}: evaluate --checkpoint=latest', run_dir, '--checkpoint=latest',
             code=0, want=r'^warning: checkpoint step 6 .* is damaged .*trying step 3')
    train(f'{damage}: resume', run_dir, code=0, want='moved to')
  leftover = T / 'runs' / 'leftover'
  shutil.copytree(base, leftover)
  os.makedirs(leftover / 'checkpoints' / '7.orbax-checkpoint-tmp-1234' / 'default')
  train('leftover *.orbax-checkpoint-tmp folder, then resume', leftover,
        '--config.total_steps=7', code=0, want='removed .*orbax-checkpoint-tmp')
  evaluate('evaluate --checkpoint=999 (no such step)', base, '--checkpoint=999', code='fail')
  evaluate('evaluate --split=nope', base, '--split=nope', code='fail')
  evaluate('evaluate an empty directory', T / 'empty', code='fail')
  (T / 'no_ckpt').mkdir()
  shutil.copy(base / 'config.py', T / 'no_ckpt')
  evaluate('evaluate a run with a config but no checkpoint', T / 'no_ckpt', code='fail')
  blocker = T / 'a_file'
  blocker.write_text('')
  train('workdir path that is a file', blocker, code='fail', want='is a file')
  run('missing --config file', ['experiments.train', '--config=configs/nope.py:tiny',
                                f'--workdir={T / "runs" / "nope"}'], code='fail')
  train('unknown config key', T / 'runs' / 'key', '--config.nope=1', code='fail')
  run('config variant that does not exist', ['experiments.train', '--config=configs/unet.py:huge',
                                             f'--workdir={T / "runs" / "huge"}'], code='fail')
  train('unknown model name', T / 'runs' / 'model', '--config.model.name=nope', code='fail')
  train('NaN loss (lr=inf)', T / 'runs' / 'nan', '--config.optimizer.lr=inf', code='fail')
  train('batch size 3 on 2 devices', T / 'runs' / 'devices', '--config.input.batch_size=3',
        env={'XLA_FLAGS': ENV['XLA_FLAGS'].replace('count=1', 'count=2')}, code='fail')
  refused = T / 'runs' / 'refused'
  train('start-up check refuses eval_split=val', refused, '--config.dataset.eval_split=val',
        code='fail')
  train('... the corrected rerun in the same workdir', refused, code=0)


def data_cases():
  root = flanet('sixteen_bit')
  for path in glob.glob(str(root / 'img_list' / '*' / '*.png')):
    write_image(path, TWELVE_BIT)
  run_dir = T / 'runs' / 'sixteen'
  train('16-bit grey PNG frames (values 32-1840)', run_dir, *folder('flanet', root), code=0)
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  version = glob.glob(str(T / 'home/tensorflow_datasets/sixteen_bit-*/usv_flanet/default/*'))
  frames = [ex['frames'] for ex in tfds.as_numpy(
      tfds.builder_from_directory(version[0]).as_dataset(split='train'))]
  ROWS[-1]['note'] = (f'stored frames average {np.mean(np.concatenate(frames)):.0f} of 255 '
                      f'(the 12-bit values average {TWELVE_BIT.mean() * 255 / 4095:.0f})')
  incomplete = os.path.join(os.path.dirname(version[0]), 'incomplete.K1LLED_1.4.0')
  os.makedirs(os.path.join(incomplete, 'half'))
  train('leftover TFDS incomplete.* folder', T / 'runs' / 'incomplete',
        *folder('flanet', root), code=0, want='removed .*incomplete')
  evaluate('evaluate --export: mask names', run_dir, '--export', code=0)
  names = sorted(os.path.basename(p) for p in glob.glob(str(
      run_dir / '*' / 'predicted_masks' / '*' / '*.png')))
  ROWS[-1]['note'] = f'exported {names[:4]} for source frames 0.png..3.png'
  ROWS[-1]['meets'] = 'yes' if names and names[0] == '0.png' and ROWS[-1][
      'exit_code'] == 0 else 'NO'
  external = T / 'data' / 'external'
  make_flanet(str(external), lengths=(('e1', 3), ('e2', 3)), lists=(('test', 'e1'),
                                                                    ('test', 'e2')))
  evaluate('evaluate on a test-only dataset', run_dir, f'--config={run_dir}/config.py',
           f'--config.dataset.manual_dir={external}', '--allow_config_changes',
           '--split=test', code=0)
  nan = flanet('nan_tiff')
  values = np.full((16, 16), 0.5, np.float32)
  values[0, :3] = np.nan
  os.remove(nan / 'img_list' / 'v1' / '0.png')
  _write(str(nan / 'img_list' / 'v1' / '0.tif'), values)
  train('float TIFF frame with NaN', T / 'runs' / 'nan_tiff', *folder('flanet', nan), code='fail',
        want='NaN')
  hospitals = {name: flanet(f'{name}/cvc') for name in ('hospital_a', 'hospital_b')}
  for hospital in ('hospital_a', 'hospital_b', 'hospital_a'):
    out = train(f'two folders of one layout, default data_dir: {hospital}',
                T / 'runs' / f'two_{hospital}_{len(ROWS)}',
                *folder('flanet', hospitals[hospital]), code=0)
    copies = glob.glob(str(T / 'home/tensorflow_datasets/cvc-*'))
    ROWS[-1]['note'] = (f'{len(copies)} converted copies; ' +
                        ('converted' if 'changed since' in out else 'no "changed since"'))
  davis = T / 'data' / 'davis'
  make_davis(str(davis), lists=(('train', 'a'), ('val', 'b'), ('test', 'c')))
  train('DAVIS layout with val.txt', T / 'runs' / 'davis', *folder('davis', davis), code=0,
        want=r'step 2 val \(validation\)')
  broken = {
      'corrupt PNG frame': lambda r: (r / 'img_list/v1/1.png').write_bytes(b'not a png'),
      'mask of the wrong size': lambda r: write_image(
          str(r / 'mask_list/v1/1.png'), np.zeros((8, 8), np.uint8)),
      'empty video folder in a split list': lambda r: [
          os.remove(p) for p in glob.glob(str(r / '*_list' / 'v2' / '*'))],
      'non-binary mask without mask_threshold': lambda r: write_image(
          str(r / 'mask_list/v1/1.png'), np.arange(256, dtype=np.uint8).reshape(16, 16)),
      'a mask missing, without sparse_masks': lambda r: os.remove(r / 'mask_list/v1/2.png'),
  }
  for case, damage in broken.items():
    root = flanet(case.replace(' ', '_').replace(',', ''))
    damage(root)
    train(case, T / 'runs' / root.name, *folder('flanet', root), code='fail')
  sparse_root = T / 'data' / 'a_mask_missing_without_sparse_masks'
  train('... the same with sparse_masks=True', T / 'runs' / 'sparse_ok',
        *folder('flanet', sparse_root, sparse_masks=True), code=0)
  table = T / 'data' / 'table_column'
  make_frames_table(str(table))
  write_csv(str(table / 'sequences.csv'), [['frame', 'seq']] + [[n, 0] for n in range(1, 10)])
  train('frames table CSV with a missing column', T / 'runs' / 'table',
        *folder('table', table), code='fail')


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--out', default=os.path.join(REPO, 'docs/results/failure_catalogue.csv'))
  parser.add_argument('--groups', default='disk,signal,checkpoint,data')
  args = parser.parse_args()
  try:
    for group in args.groups.split(','):
      globals()[f'{group}_cases']()
  finally:
    write(args.out)

if __name__ == '__main__':
  main()
