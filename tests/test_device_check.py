"""scripts/device_check.py --quick on two of its models: one CSV row per model, dtype and
mode with every column (values checked for presence and form, never for speed), and its
refusals of unknown models and modes."""
import csv
import subprocess
import sys

import helpers

COLUMNS = ['model', 'config', 'dtype', 'mode', 'batch', 'accumulate_steps', 'image_size',
           'frames', 'step_ms', 'frames_per_s', 'gflops_per_step', 'utilisation',
           'bf16_rel_err', 'deterministic', 'jax_version', 'device', 'compile_s',
           'peak_tflops', 'memory_gb', 'note']


def _check(*args: str) -> subprocess.CompletedProcess:
  """scripts/device_check.py with ``args`` in a Python subprocess on one CPU device."""
  return subprocess.run([sys.executable, 'scripts/device_check.py', *args], cwd=helpers.REPO,
                        env=helpers.subprocess_env(1, JAX_PLATFORMS='cpu'), capture_output=True,
                        text=True, timeout=1800, check=False)


def test_quick_check_writes_a_row_per_model_dtype_and_mode(tmp_path):
  """U-Net in every mode it has (training, inference), STPFNet in the two that need no
  training step (inference, streaming from a first mask): every kind of row, two models'
  compilations (STPFNet's the cheapest of the streaming segmenters')."""
  rows = {}
  for models, modes in (('unet', 'train,infer,stream'), ('stpfnet', 'infer,stream')):
    out = tmp_path / f'{models}.csv'
    done = _check('--quick', f'--models={models}', f'--modes={modes}', f'--out={out}',
                  '--compilation_cache=', '--budget_s=3000')
    assert done.returncode == 0, done.stdout + done.stderr
    assert 'deterministic' in done.stdout  # The table's header.
    with open(out, newline='') as f:
      reader = csv.DictReader(f)
      rows[models] = list(reader)
    assert reader.fieldnames == COLUMNS
  assert [(r['dtype'], r['mode']) for r in rows['unet']] == [
      (dtype, mode) for dtype in ('float32', 'bfloat16') for mode in ('train', 'infer')]
  assert [(r['dtype'], r['mode']) for r in rows['stpfnet']] == [
      (dtype, mode) for dtype in ('float32', 'bfloat16') for mode in ('infer', 'stream')]
  for r in rows['unet'] + rows['stpfnet']:
    assert r['note'] == '', r
    assert r['config'] == f'configs/{r["model"]}.py:tiny'
    assert float(r['step_ms']) > 0 and float(r['frames_per_s']) > 0
    assert float(r['gflops_per_step']) > 0 and int(r['accumulate_steps']) == 1
    assert r['utilisation'] == ''  # No peak for a CPU.
    assert (r['bf16_rel_err'] == '') == (r['dtype'] == 'float32')
    assert (r['deterministic'] == 'bit-equal') == (r['mode'] == 'train')  # CPU: bit-equal.
    assert r['device'] and r['jax_version']
    clip = {'unet': '3', 'stpfnet': '3'}[r['model']]  # Stream: one frame per step.
    assert r['frames'] == ('1' if r['mode'] == 'stream' else clip), r
  bf16 = [float(r['bf16_rel_err']) for r in rows['unet'] + rows['stpfnet']
          if r['dtype'] == 'bfloat16']
  assert all(0 < e < 0.1 for e in bf16), bf16


def test_an_unknown_model_is_refused_with_the_choices():
  done = _check('--models=resnet')
  assert done.returncode == 2
  assert "unknown ['resnet']" in done.stderr and 'flanet' in done.stderr
  done = _check('--modes=infer,serve')
  assert done.returncode == 2 and "choose from ['train', 'infer', 'stream']" in done.stderr
