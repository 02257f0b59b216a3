"""The trainer: device-count invariance, exact resume, NaN stop, evaluation, CLI errors."""
import json
import os
import signal
import subprocess
import sys
import time

import cv2
import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

import distributed_worker
import helpers
from input_pipeline import pipeline
from usvjax import models
from usvjax import tasks
from usvjax.core import checkpoint
from usvjax.core import evaluate
from usvjax.core import optim
from usvjax.core import parallel
from usvjax.core import run as run_lib
from usvjax.core import state as state_lib
from usvjax.core import train
from usvjax.core import train_logs
from usvjax.core import train_step
from usvjax.core import workdir as workdir_lib
from usvjax.reporting import provenance
from usvjax.tools import segment

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _assert_trees_close(a, b, rtol=1e-5, atol=1e-6):
  flat_a, flat_b = helpers.flat_local(a), helpers.flat_local(b)
  assert flat_a.keys() == flat_b.keys()
  for key in flat_a:
    np.testing.assert_allclose(flat_a[key], flat_b[key], rtol=rtol, atol=atol, err_msg=key)


def test_one_step_is_the_same_on_1_and_4_devices(data_dir):
  assert jax.device_count() == 4
  # SGD, because Adam's first step is ~lr * sign(g) and turns rounding noise in
  # near-zero gradients into lr-sized differences.
  config = helpers.load_config('unet', data_dir, **{'optimizer.name': 'sgd',
                                                    'optimizer.lr': 0.1})
  builder = pipeline.get_builder(config.dataset)
  local = next(pipeline.train_batches(config, builder, tasks.example_source(config)))
  model, task = models.create_model(config.model), tasks.create_task(config)
  tx = optim.create_optimizer(config)
  results = []
  for devices in (jax.devices()[:1], jax.devices()):
    mesh = parallel.create_mesh(devices)
    batch = parallel.global_batch(local, mesh)
    state = state_lib.init_state(model, tx, batch, config.seed, mesh)
    step = train_step.jit_train_step(train_step.make_train_step(model, task, tx, config.seed), mesh)
    new_state, metrics = step(state, batch)
    results.append((new_state, float(metrics['loss'])))
  (one, loss_one), (four, loss_four) = results
  assert loss_one == pytest.approx(loss_four, rel=1e-5)
  _assert_trees_close(one.params, four.params)
  _assert_trees_close(one.batch_stats, four.batch_stats)  # Global-batch BN statistics.


def test_resumed_run_ends_with_exactly_the_parameters_of_an_uninterrupted_run(
    data_dir, tmp_path, monkeypatch):
  # 6 steps, checkpoints at 3 and 6, one validation (at 6: it changes nothing in training).
  config = helpers.load_config('unet', data_dir, eval_every=6)
  straight, _ = train.train_and_evaluate(run_lib.resolve(config), str(tmp_path / 'straight'))
  saves = []

  def disk_fills_after_one_save(path):  # The disk is full when step 6 is to be saved.
    saves.append(path)
    return 2**40 if len(saves) == 1 else 1000
  monkeypatch.setattr(workdir_lib, 'free_bytes', disk_fills_after_one_save)
  resumed_dir = str(tmp_path / 'resumed')
  with pytest.raises(workdir_lib.WorkdirError, match=(
      rf"^cannot write the checkpoint of step 6 in the run directory '{resumed_dir}' \(the "
      r'disk is full: 0.0 MB free, .* MB needed\). Training stopped; .* rerun the same '
      'command to resume')):
    train.train_and_evaluate(run_lib.resolve(config), resumed_dir)
  assert checkpoint.create_manager(resumed_dir, 2, read_only=True).all_steps() == [3]
  monkeypatch.undo()
  resumed, _ = train.train_and_evaluate(run_lib.resolve(config), resumed_dir)
  assert int(resumed.step) == int(straight.step) == 6
  # Bitwise: same data, same augmentation, same compiled steps (a rerun reproduces a run).
  for tree in ('params', 'batch_stats', 'opt_state'):
    want = helpers.flat_local(getattr(straight, tree))
    got = helpers.flat_local(getattr(resumed, tree))
    assert got.keys() == want.keys()
    for key in want:
      np.testing.assert_array_equal(got[key], want[key], err_msg=f'{tree} {key}')


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(data_dir, tmp_path,
                                                                         monkeypatch):
  config = helpers.load_config('unet', data_dir, checkpoint_every=1)
  make_batches = pipeline.train_batches

  def poisoned(*args, **kwargs):
    for step, batch in enumerate(make_batches(*args, **kwargs), start=1):
      if step == 3:
        batch = dict(batch, frames=np.full_like(batch['frames'], np.nan))
      yield batch
  monkeypatch.setattr(pipeline, 'train_batches', poisoned)
  workdir = str(tmp_path / 'nan')
  with pytest.raises(train.NonFiniteLossError,
                     match='loss is nan at step 3.*last good checkpoint is step 2'):
    train.train_and_evaluate(run_lib.resolve(config), workdir)
  manager = checkpoint.create_manager(workdir, 2, read_only=True)
  assert manager.all_steps() == [1, 2]
  mesh = parallel.create_mesh()
  model = models.create_model(config.model)
  fields = tasks.batch_spec(config, True)
  target = state_lib.init_state(model, optim.create_optimizer(config),
                                state_lib.init_batch(config, fields), config.seed, mesh)
  restored = checkpoint.restore(manager, 2, target)
  assert int(restored.step) == 2
  assert all(np.isfinite(v).all() for v in helpers.flat_local(restored.params).values())


def test_non_finite_update_is_caught_before_it_is_saved(data_dir, tmp_path):
  config = helpers.load_config('unet', data_dir, checkpoint_every=1, **{
      'optimizer.name': 'sgd', 'optimizer.lr': float('inf')})
  with pytest.raises(train.NonFiniteLossError,
                     match='parameters became non-finite at step 1.*no checkpoint'):
    train.train_and_evaluate(run_lib.resolve(config), str(tmp_path))
  assert checkpoint.create_manager(str(tmp_path), 2, read_only=True).all_steps() == []


@pytest.mark.parametrize('name, rows_key', [('unet', 'scored_frames'), ('cnn_aver', 'num_videos'),
                                            ('stpfnet', 'scored_frames')])
def test_evaluation_report_counts_every_example_once(data_dir, tmp_path, name, rows_key):
  """Every frame (U-Net), every video (CNN_Aver), every frame but the first of each video
  (STPFNet's first-frame protocol) is scored exactly once."""
  # A step-0 checkpoint of initial weights is all the reports need (no training step).
  config = helpers.from_initial_weights(
      helpers.load_config(name, data_dir, **{'input.eval_batch_size': 8}), str(tmp_path / 'init'))
  workdir = str(tmp_path / name)
  train.train_and_evaluate(run_lib.resolve(config), workdir)
  metrics, _, directory = evaluate.evaluate_checkpoint(run_lib.resolve(config), workdir,
                                                       'best', 'test')
  builder = pipeline.get_builder(config.dataset)
  lengths = [len(ex['boxes']) for ex in tfds.as_numpy(builder.as_dataset(split='test'))]
  expected = {'unet': sum(lengths), 'cnn_aver': len(lengths),
              'stpfnet': sum(lengths) - len(lengths)}[name]
  assert expected % 8  # Not a multiple of the batch size.
  assert metrics[rows_key] == expected
  files = set(os.listdir(directory))
  assert {'metrics.json', 'per_video.csv', 'curves.png'} <= files
  if name != 'cnn_aver':
    assert any(f.startswith('overlay_') for f in files)
  else:
    assert {'roc.png', 'pr.png', 'confusion_matrix.png'} <= files
  if name == 'stpfnet':
    _segments_a_folder_of_frames(config, workdir, builder, tmp_path)
  if name == 'unet':
    _segments_a_dicom_loop_like_its_frames(config, workdir, builder, tmp_path)


def _test_video(builder, tmp_path):
  """The first test video and a folder of its frames as PNGs (frame0.png, ...)."""
  video = next(iter(tfds.as_numpy(builder.as_dataset(split='test'))))
  folder = tmp_path / 'frames'
  folder.mkdir()
  for i, frame in enumerate(video['frames']):
    cv2.imwrite(str(folder / f'frame{i}.png'), frame)
  return video, folder


def _segments_a_folder_of_frames(config, workdir, builder, tmp_path):
  """segment_video (experiments/segment_video.py) on a test video written as PNG frames."""
  video, folder = _test_video(builder, tmp_path)
  # A grey first mask (0/128): --first_mask means lesion > 0, whatever the value.
  given = np.zeros(video['masks'][0].shape, np.uint8)
  given[10:30, 20:40] = 128
  cv2.imwrite(str(tmp_path / 'mask0.png'), given)
  output = tmp_path / 'segmented'
  result = segment.segment_video(segment.resolve(config), workdir, 'best', str(folder),
                                 str(tmp_path / 'mask0.png'), str(output))
  assert result.num_frames == len(video['frames']) and result.frames_per_second > 0
  names = [f'frame{i}.png' for i in range(len(video['frames']))]
  assert sorted(os.listdir(output / 'masks')) == sorted(names)  # Named after the frames.
  first = cv2.imread(str(output / 'masks' / 'frame0.png'), cv2.IMREAD_GRAYSCALE)
  np.testing.assert_array_equal(first > 0, given[..., 0] > 0)  # Given, not predicted.
  assert (output / 'overlay.mp4').stat().st_size > 0
  assert (output / 'latency.csv').read_text().count('\n') == len(video['frames']) + 1
  later = tmp_path / 'from_frame_2'  # Propagation from a later traced frame (--first_frame).
  result = segment.segment_video(segment.resolve(config), workdir, 'best', str(folder),
                                 str(tmp_path / 'mask0.png'), str(later), first_frame=2)
  assert sorted(os.listdir(later / 'masks')) == sorted(names[2:])
  third = cv2.imread(str(later / 'masks' / 'frame2.png'), cv2.IMREAD_GRAYSCALE)
  np.testing.assert_array_equal(third > 0, given[..., 0] > 0)


def _segments_a_dicom_loop_like_its_frames(config, workdir, builder, tmp_path):
  """segment_video on a DICOM cine loop gives the masks of the same frames as PNGs."""
  video, folder = _test_video(builder, tmp_path)
  dicom = helpers.write_dicom(str(tmp_path / 'loop.dcm'), video['frames'][..., 0], 'MONOCHROME2')
  for path, output in ((str(folder), 'from_png'), (dicom, 'from_dicom')):
    segment.segment_video(segment.resolve(config), workdir, 'best', path, '',
                          str(tmp_path / output))
  for i in range(len(video['frames'])):
    np.testing.assert_array_equal(
        cv2.imread(str(tmp_path / 'from_dicom' / 'masks' / f'{i:05d}.png')),
        cv2.imread(str(tmp_path / 'from_png' / 'masks' / f'frame{i}.png')), err_msg=str(i))


def _run(args, timeout=300, **popen):
  return subprocess.Popen([sys.executable, *args], cwd=REPO, env=helpers.subprocess_env(1),
                          text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **popen)


@pytest.mark.parametrize('extra, message', [
    (['--config.optimizer.lrr=1e-3'], 'lrr'),
    (['--config.dataset.name=usv_frames_table', '--config.dataset.config=default',
      '--config.dataset.manual_dir=/no/such/folder'], '/no/such/folder'),
    (['--config=configs/unet.py:nosuch'],  # The last --config counts.
     "error: bad flag or config override: unknown config variant 'nosuch'; choose from"),
])
def test_cli_errors_name_the_problem(data_dir, tmp_path, extra, message):
  process = _run(['-m', 'experiments.train', '--config=configs/unet.py:tiny',
                  f'--workdir={tmp_path}', f'--config.dataset.data_dir={data_dir}', *extra])
  output, _ = process.communicate(timeout=300)
  assert process.returncode != 0
  assert message in output
  assert 'Traceback' not in output


def test_user_errors_are_one_line_and_bugs_keep_their_traceback():
  from experiments import common  # pylint: disable=g-import-not-at-top
  from usvjax import runners  # pylint: disable=g-import-not-at-top
  from usvjax.errors import ConfigError  # pylint: disable=g-import-not-at-top
  assert not issubclass(ValueError, common.USER_ERRORS)  # A bug's ValueError.
  assert not issubclass(KeyError, common.USER_ERRORS)
  assert issubclass(ConfigError, common.USER_ERRORS) and issubclass(ConfigError, ValueError)
  with pytest.raises(ConfigError, match="config.runner='twice'"):  # A settings error.
    runners.get(helpers.load_config('unet', '', runner='twice'))


def test_killed_run_resumes_from_its_last_checkpoint(data_dir, tmp_path):
  # A constant learning rate: the rerun (a shorter total_steps) compiles the same step, so
  # it reads it from the compilation cache the killed run wrote.
  args = ['-m', 'experiments.train', '--config=configs/unet.py:tiny', f'--workdir={tmp_path}',
          f'--config.dataset.data_dir={data_dir}', f'--compilation_cache={tmp_path}/xla',
          '--config.schedule.name=constant',
          '--config.total_steps=400', '--config.checkpoint_every=5', '--config.eval_every=1000']
  process = _run(args)
  checkpoints = tmp_path / 'checkpoints'
  deadline = time.time() + 240
  while time.time() < deadline and not any(p.name.isdigit() for p in checkpoints.glob('*')):
    time.sleep(0.2)
  process.send_signal(signal.SIGKILL)
  process.wait()
  saved = sorted(int(p.name) for p in checkpoints.glob('*') if p.name.isdigit())
  assert saved, 'no checkpoint was written before the kill'
  args[-3] = f'--config.total_steps={saved[-1] + 5}'
  rerun = _run(args)
  output, _ = rerun.communicate(timeout=300)
  assert rerun.returncode == 0, output
  assert f'resumed from step {saved[-1]}' in output
  assert any('train_step' in p.name for p in (tmp_path / 'xla').iterdir())  # Cached compile.
  manager = checkpoint.create_manager(str(tmp_path), 2, read_only=True)
  assert manager.latest_step() == saved[-1] + 5
  with open(tmp_path / 'metrics.jsonl') as f:
    records = [json.loads(line) for line in f]
  logged = [r['step'] for r in records if 'train/loss' in r]
  assert logged == sorted(set(logged)) and logged[-1] == saved[-1] + 5  # Each step once.
  _evaluating_the_workdir_alone_reproduces_the_validation_metric(tmp_path, records[-1])


def _evaluating_the_workdir_alone_reproduces_the_validation_metric(workdir, last: dict):
  """``evaluate --workdir`` (no --config) uses the run's saved config, overrides included."""
  saved = provenance.load_config(str(workdir))
  assert saved.total_steps == last['step'] and saved.checkpoint_every == 5
  process = _run(['-m', 'experiments.evaluate', f'--workdir={workdir}', '--split=validation',
                  '--checkpoint=latest', f'--output_dir={workdir}/report'])
  output, _ = process.communicate(timeout=300)
  assert process.returncode == 0, output
  metrics = json.loads((workdir / 'report' / 'metrics.json').read_text())
  assert metrics['mean_dice'] == pytest.approx(last['val/mean_dice'], abs=1e-6)
  data = json.loads((workdir / provenance.DATA_FILE).read_text())
  assert metrics['dataset'] == data and data['builder'].startswith('usv_synthetic/tiny/')


def test_two_processes_train_like_one_process_with_four_devices(data_dir, tmp_path):
  port = 20000 + os.getpid() % 20000
  env = helpers.subprocess_env(2, JAX_PLATFORMS='cpu')
  workers = [subprocess.Popen(
      [sys.executable, 'tests/distributed_worker.py', str(i), '2', str(port),
       str(tmp_path / 'multi'), data_dir, str(tmp_path / f'p{i}.npz')],
      cwd=REPO, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for i in range(2)]
  outputs = [w.communicate(timeout=400)[0] for w in workers]
  for worker, output in zip(workers, outputs):
    assert worker.returncode == 0, output[-3000:]
  config = helpers.load_config('unet', data_dir, total_steps=4, eval_every=4,
                               checkpoint_every=4, **distributed_worker.MULTI_PROCESS_OPTIMIZER)
  reference, metrics = train.train_and_evaluate(run_lib.resolve(config), str(tmp_path / 'single'))
  expected = helpers.flat_local(reference.params)
  p0, p1 = (np.load(tmp_path / f'p{i}.npz') for i in range(2))
  assert int(p0['scored_frames']) == int(p1['scored_frames']) == metrics['scored_frames']
  for key, value in expected.items():
    np.testing.assert_array_equal(p0[key], p1[key], err_msg=key)
    np.testing.assert_allclose(p0[key], value, rtol=1e-5, atol=1e-6, err_msg=key)


def test_resumed_log_drops_the_steps_it_will_write_again(tmp_path):
  lines = [json.dumps({'step': s, 'train/loss': 1.0 / s}) + '\n' for s in range(1, 7)]
  (tmp_path / 'metrics.jsonl').write_text(''.join(lines) + '{"step": 7, "train/lo')  # Killed.
  writer = train_logs.Writer(str(tmp_path), start_step=4)
  writer.write(5, {'train/loss': 0.5})
  writer.close()
  steps = [json.loads(line)['step'] for line in open(tmp_path / 'metrics.jsonl')]
  assert steps == [1, 2, 3, 4, 5]
