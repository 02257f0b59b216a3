"""Exported models give the run's own outputs: the jax.export programs of a clip segmenter
(U-Net), a streaming segmenter (FLA-Net: clip forward pass and start/step) and a video
classifier (CNN_Aver) equal the in-process model to 1e-5, at batch sizes and frame counts
other than the traced ones; the loader runs in a fresh process where flax, TensorFlow and
usvjax's model code cannot be imported; the SavedModel reloads with tf.saved_model.load and
matches; export.json says what a user needs."""
import json
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

import helpers
from test_train import _run
from usvjax import export
from usvjax import runners
from usvjax.core import streaming
from usvjax.export import functions
from usvjax.export import writer

TRAINED = {'unet': {}, 'flanet': {'model.backbone': 'resnet18'}, 'cnn_aver': {}}


@pytest.fixture(scope='module')
def runs(data_dir, tmp_path_factory) -> dict:
  """{name: (config, workdir)} of runs of each model of ``TRAINED``: a step-0 checkpoint of
  initial weights (no training step to compile), all an export needs."""
  out = {}
  for name, overrides in TRAINED.items():
    root = tmp_path_factory.mktemp(name)
    config = helpers.from_initial_weights(helpers.load_config(name, data_dir, **overrides),
                                          str(root / 'init'))
    workdir = str(root / 'run')
    runners.train(config, workdir)
    out[name] = config, workdir
  return out


@pytest.fixture(scope='module')
def unet_export(runs, tmp_path_factory) -> str:
  """The U-Net run exported by the command (for cpu and cuda, with the SavedModel)."""
  output = str(tmp_path_factory.mktemp('unet_export'))
  process = _run(['-m', 'experiments.export', f'--workdir={runs["unet"][1]}',
                  '--checkpoint=latest', f'--output={output}', '--compilation_cache='])
  text, _ = process.communicate(timeout=300)
  assert process.returncode == 0, text
  assert "exported {'predict': ['b', 3, 32, 32, 1]} for cpu,cuda" in text
  return output


def _restored(runs, name):
  config, workdir = runs[name]
  run = functions.resolve(config)
  return run, run.restore(workdir, 'latest').variables, workdir


def _export(runs, name, directory) -> tuple:
  run, variables, workdir = _restored(runs, name)
  metadata = writer.export_run(functions.prepare(run, workdir, 'latest'), str(directory),
                               platforms=('cpu',), saved_model=False)
  return run, variables, export.load(str(directory)), metadata


def _frames(shape, seed=0) -> np.ndarray:
  return np.random.default_rng(seed).random(shape, dtype=np.float32)


def test_clip_and_streaming_segmenters_match_in_process(runs, tmp_path):
  for name in ('unet', 'flanet'):
    run, variables, loaded, metadata = _export(runs, name, tmp_path / name)
    length = run.config.input.clip_length
    clip = _frames((3, length, 32, 32, 1))  # A batch size the export was not traced with.
    expected = jax.nn.sigmoid(run.model.apply(variables, {'frames': clip}, train=False)['logits'])
    np.testing.assert_allclose(loaded(clip), expected, atol=1e-5, rtol=0)
    assert metadata['functions']['predict']['inputs'][0]['shape'] == ['b', length, 32, 32, 1]
    assert sorted(metadata['functions']) == (['predict', 'start', 'step'] if name == 'flanet'
                                             else ['predict'])
  stream = streaming.make_stream(run.model, variables, length, capabilities=run.capabilities)
  assert isinstance(stream, streaming.StateStream)
  video = _frames((4, 2, 32, 32, 1), seed=1)  # 4 frames of 2 videos.
  mask = np.zeros((2, 32, 32, 1), np.float32)
  state, probs = loaded.start(video[0], mask)
  np.testing.assert_allclose(probs, stream.start(video[0], mask), atol=1e-5, rtol=0)
  for t in range(1, 4):
    state, probs = loaded.step(state, video[t])
    np.testing.assert_allclose(probs, stream.step(video[t]), atol=1e-5, rtol=0,
                               err_msg=f'frame {t}')
  layout = metadata['state']
  assert len(state) == len(layout) > 0
  assert [list(s.shape) for s in state] == [[2, *d['shape'][1:]] for d in layout]
  assert all(d['shape'][0] == 'b' for d in layout)


def test_a_video_classifier_matches_in_process_for_any_frame_count(runs, tmp_path):
  run, variables, loaded, metadata = _export(runs, 'cnn_aver', tmp_path / 'cnn_aver')
  frames = _frames((2, 5, 32, 32, 1))
  valid = np.array([[True] * 5, [True] * 3 + [False] * 2])
  for t in (5, 3):  # The number of frames is symbolic, like the batch size.
    batch = {'frames': frames[:, :t], 'valid': valid[:, :t]}
    expected = jax.nn.softmax(run.model.apply(variables, batch, train=False)['logits'])
    np.testing.assert_allclose(loaded(batch['frames'], batch['valid']), expected, atol=1e-5,
                               rtol=0)
  assert metadata['functions']['predict']['inputs'][1] == {
      'name': 'valid', 'shape': ['b', 't'], 'dtype': 'bool'}
  assert metadata['class_names'] == ['benign', 'malignant']
  assert metadata['classifies_videos'] and metadata['preprocessing']['max_frames'] == 8


LOADER = '''
import importlib.abc, json, sys
import numpy as np

class Absent(importlib.abc.MetaPathFinder):
  def find_spec(self, name, path=None, target=None):
    if name.split('.')[0] in ('flax', 'tensorflow', 'optax', 'orbax', 'ml_collections') \\
        or name.startswith(('usvjax.models', 'usvjax.core', 'usvjax.tools')):
      raise ImportError(f'{name} is absent in this test')

sys.meta_path.insert(0, Absent())
from usvjax import export
model = export.load(sys.argv[1])
np.save(sys.argv[3], model(np.load(sys.argv[2])))
print('imported:', sorted(m for m in sys.modules if m.split('.')[0] in ('flax', 'tensorflow')
                          or m.startswith('usvjax.models')))
'''


def test_the_loader_needs_only_jax_and_the_saved_model_matches(runs, unet_export, tmp_path):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  run, variables, _ = _restored(runs, 'unet')
  clip = _frames((2, 3, 32, 32, 1), seed=2)
  expected = np.asarray(jax.nn.sigmoid(
      run.model.apply(variables, {'frames': clip}, train=False)['logits']))
  np.save(tmp_path / 'clip.npy', clip)
  done = subprocess.run([sys.executable, '-c', LOADER, unet_export, str(tmp_path / 'clip.npy'),
                         str(tmp_path / 'out.npy')], cwd=helpers.REPO,
                        env=helpers.subprocess_env(1, JAX_PLATFORMS='cpu'), capture_output=True,
                        text=True, timeout=300, check=False)
  assert done.returncode == 0, done.stdout + done.stderr
  assert 'imported: []' in done.stdout
  np.testing.assert_allclose(np.load(tmp_path / 'out.npy'), expected, atol=1e-5, rtol=0)
  saved = tf.saved_model.load(f'{unet_export}/saved_model')
  served = saved.signatures['serving_default'](input_0=tf.constant(clip))
  np.testing.assert_allclose(served['probabilities'].numpy(), expected, atol=1e-5, rtol=0)
  np.testing.assert_allclose(saved.predict(clip[:1])['probabilities'].numpy(), expected[:1],
                             atol=1e-5, rtol=0)
  metadata = json.loads(pathlib.Path(unet_export, 'export.json').read_text())
  assert metadata['platforms'] == ['cpu', 'cuda'] and metadata['shapes_note'] == ''
  assert metadata['preprocessing']['image_size'] == 32
  assert metadata['preprocessing']['clip_length'] == 3
  assert metadata['preprocessing']['range'] == [0.0, 1.0]
  assert metadata['threshold'] == run.config.task.threshold
  assert metadata['provenance']['step'] == 0  # The step-0 checkpoint.
  assert metadata['provenance']['config']['model']['name'] == run.config.model.name
  assert metadata['saved_model'] == 'saved_model'


def test_a_model_without_a_symbolic_batch_is_exported_with_batch_1_and_a_note():
  def fixed_batch(frames):  # int() of a symbolic dimension fails.
    return (frames * int(frames.shape[0]),)
  prepared = functions.Prepared({'predict': fixed_batch}, {'preprocessing': {}},
                                {'predict': [('frames', ('b', 3), 'float32')]})
  exported, specs, note = writer.export_functions(prepared, ('cpu',))
  assert specs['predict'][0].shape == (1, 3)
  assert "{'b': True, 't': True}" in note and 'b' in note
  np.testing.assert_array_equal(exported['predict'].call(np.ones((1, 3), np.float32))[0],
                                np.ones((1, 3)))
