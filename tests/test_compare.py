"""compare: one table for several methods; a rerun after an interruption trains only what
is left."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import helpers
from input_pipeline import pipeline
from usvjax.core import train
from usvjax.reporting import provenance
from usvjax.reporting import tables
from usvjax.studies import compare
from usvjax.studies import compare_report
from usvjax.studies import robustness


def test_rerun_trains_only_the_unfinished_runs(data_dir, tmp_path, monkeypatch):
  shared = compare.parse_overrides([f'dataset.data_dir={data_dir}', 'total_steps=3',
                                    'eval_every=3', 'checkpoint_every=3'])
  first = compare.parse_method('unet=configs/unet.py:tiny')
  second = compare.parse_method('unet_narrow=configs/unet.py:tiny;model.width=4')
  workdir = str(tmp_path)
  finished = tmp_path / 'unet' / 'seed0'  # "Killed" after the first method had finished.
  finished.mkdir(parents=True)
  (finished / 'result.json').write_text(
      '{"lesion_dice": 0.5, "pooled_dice": 0.4, "mean_dice": 0.5, "mean_iou": 0.4, '
      '"mean_recall": 0.5, "max_f_mean_pr": 0.5, "mean_mae": 0.1, "mean_s_measure": 0.6, '
      '"mean_e_measure": 0.7, "train_seconds": 1.0, "eval_frames_per_second": 9.0}')
  first_config = compare.method_config(first, shared, 0, workdir)  # Its run's record.
  provenance.record(first_config, str(finished), pipeline.get_builder(first_config.dataset))
  trained = []
  real_train = train.train_and_evaluate
  monkeypatch.setattr(train, 'train_and_evaluate',
                      lambda config, run_dir: trained.append(run_dir) or real_train(config, run_dir))
  results = compare.run([first, second], shared, [0], workdir)
  assert trained == [os.path.join(workdir, 'unet_narrow', 'seed0')]
  assert set(results) == {'unet', 'unet_narrow'}
  table = open(os.path.join(workdir, 'results.md')).read()
  assert '| unet | 0.500 | 0.400 |' in table and '| unet_narrow |' in table
  lines = open(os.path.join(workdir, 'results.csv')).read().strip().splitlines()
  assert len(lines) == 3
  assert lines[0].startswith('dataset,image_size,steps,method,variant,seed,task,lesion_dice,')
  assert lines[2].startswith('usv_synthetic/tiny,32,3,unet_narrow,configs/unet.py:tiny;'
                             'model.width=4,0,segmentation,')
  assert os.path.exists(os.path.join(workdir, 'curves.png'))


def test_bad_method_and_override_are_named():
  with pytest.raises(ValueError, match='NAME=configs'):
    compare.parse_method('configs/unet.py:tiny')
  method = compare.parse_method('u=configs/unet.py:tiny;model.widht=4')
  with pytest.raises(ValueError, match='model.widht'):
    compare.method_config(method, {}, 0, '/tmp')


def test_curves_hold_every_seed_at_the_steps_all_of_them_logged(tmp_path):
  logs = {'a/seed0': [(100, 0.2), (200, 0.4)], 'a/seed1': [(100, 0.4), (200, 0.6), (300, 0.9)],
          'b/seed0/lstm': [(50, 0.7)]}  # A two-stage run: its LSTM stage's log.
  for run, points in logs.items():
    (tmp_path / run).mkdir(parents=True)
    lines = [{'step': step, 'train/loss': 1.0} for step, _ in points]
    lines += [{'step': step, 'val/auc': value} for step, value in points]
    (tmp_path / run / 'metrics.jsonl').write_text(''.join(json.dumps(l) + '\n' for l in lines))
  results = {'a': [{'seed': 0, 'task': 'classification', 'log_dir': 'a/seed0'},
                    {'seed': 1, 'task': 'classification', 'log_dir': 'a/seed1'}],
             'b': [{'seed': 0, 'task': 'classification', 'log_dir': 'b/seed0/lstm'}]}
  curves = compare_report.validation_curves(results, str(tmp_path))
  steps, values = curves['a']
  assert steps == [100, 200]
  np.testing.assert_array_equal(values, [[0.2, 0.4], [0.4, 0.6]])
  steps, values = curves['b']
  assert steps == [50]
  np.testing.assert_array_equal(values, [[0.7]])


def test_tables_leave_undefined_values_out_and_say_how_many_runs_are_left():
  assert tables.mean_std([0.1, 0.3]) == '0.200 ± 0.141'
  assert tables.mean_std([0.1, float('nan'), 0.3]) == '0.200 ± 0.141 (2 of 3 runs)'
  assert tables.mean_std([float('nan')] * 3) == 'n/a'  # empty_fp_rate without empty frames.


def test_the_robustness_table_reports_lesion_frame_overlaps():
  clean = {'mean_mae': 0.1, 'lesion_iou': 0.4, 'lesion_dice': 0.5, 'pooled_dice': 0.6,
           'mean_dice': 0.9}
  noisy = dict(clean, lesion_dice=0.25)
  table = robustness.markdown_table({'clean': clean, 'L=20': noisy})
  assert '| condition | MAE | lesion IoU | lesion Dice | pooled Dice |' in table
  assert '0.2500 (-0.2500)' in table and '0.9' not in table


def test_the_command_prints_the_tables_it_wrote(tmp_path):
  """experiments.compare's own lines after the runs (compare.run stubbed: it writes the
  tables where compare_report.tables_name says)."""
  program = (
      'import sys\n'
      'from absl import app\n'
      'from experiments import compare as command\n'
      'from usvjax.studies import compare, compare_report\n'
      'def run(methods, shared, seeds, workdir, *rest):\n'
      '  open(f"{workdir}/{compare_report.tables_name(rest[-1])}.md", "w").write("TABLE\\n")\n'
      '  return {"m": [{}]}\n'
      'compare.run = run\n'
      'app.run(command.main, flags_parser=command.common.parse_flags)\n')
  process = subprocess.run(
      [sys.executable, '-c', program, f'--workdir={tmp_path}', '--method=m=configs/unet.py:demo',
       '--reference=m'], cwd=helpers.REPO, capture_output=True, text=True, check=False)
  assert process.returncode == 0, process.stderr[-2000:]
  assert 'TABLE' in process.stdout
  assert f'results in {tmp_path}/results_vs_m.md' in process.stdout
