"""The core runs where TensorFlow is absent: in a child Python whose ``import tensorflow``
(and TFDS, and the host-side evaluation's cv2, sklearn and tqdm, which accelerator machines
may lack too) raises ImportError, ``scripts/device_check.py --quick`` initialises a tiny
config's model, runs jitted train steps and a forward pass in inference, and writes its
rows; none of those modules is imported."""
import csv
import subprocess
import sys

import helpers

ABSENT = ('tensorflow', 'tensorflow_datasets', 'cv2', 'sklearn', 'tqdm')

CHILD = f'''
import importlib.abc, runpy, sys

class Absent(importlib.abc.MetaPathFinder):
  def find_spec(self, name, path, target=None):
    if name.split('.')[0] in {ABSENT!r}:
      raise ImportError(f'{{name}} is absent in this test')
    return None

sys.meta_path.insert(0, Absent())
sys.argv = ['scripts/device_check.py'] + sys.argv[1:]
try:
  runpy.run_path('scripts/device_check.py', run_name='__main__')
finally:
  print('imported:', sorted({{m.split('.')[0] for m in sys.modules}} & set({ABSENT!r})))
'''


def test_the_benchmark_runs_without_tensorflow(tmp_path):
  out = tmp_path / 'check.csv'
  done = subprocess.run(
      [sys.executable, '-c', CHILD, '--quick', '--models=unet', f'--out={out}',
       '--compilation_cache=', '--budget_s=3000'],
      cwd=helpers.REPO, env=helpers.subprocess_env(1, JAX_PLATFORMS='cpu'),
      capture_output=True, text=True, timeout=1200, check=False)
  assert done.returncode == 0, done.stdout + done.stderr
  assert 'imported: []' in done.stdout
  with open(out, newline='') as f:
    rows = list(csv.DictReader(f))
  assert [(r['dtype'], r['mode'], r['note']) for r in rows] == [
      (dtype, mode, '') for dtype in ('float32', 'bfloat16') for mode in ('train', 'infer')]
