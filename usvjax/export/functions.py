"""The inference functions of a restored run, as flat functions of arrays (the form
``usvjax.export.artifact`` describes), and the ``export.json`` that goes with them.

A run is resolved and restored the way ``segment_video`` and ``classify_video`` do it
(``usvjax.tools.segment.resolve``, ``usvjax.tools.classify.resolve``, ``Run.restore``; a
classifier's threshold chosen on validation data by ``evaluate.calibrate``); its variables
are baked into the functions as constants, so an artifact needs no checkpoint. A
classifier's temperature stored by ``evaluate --calibrate`` for the exported checkpoint
(``evaluate.stored_calibration``) is baked in too: ``predict`` returns softmax(logits / T),
and ``export.json`` gives ``temperature`` (1.0 without calibration).
"""
from __future__ import annotations

import os
import subprocess
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from usvjax import tasks
from usvjax.core import evaluate
from usvjax.errors import ConfigError
from usvjax.export import artifact
from usvjax.reporting import provenance
from usvjax.tools import classify
from usvjax.tools import segment

NORMALISATION = ('uint8 RGB / 255, bilinear resize to image_size x image_size, RGB -> grey '
                 '(ITU-R 601 luma, tf.image.rgb_to_grayscale) where channels is 1, clipped '
                 'to [0, 1] (input_pipeline.preprocess.frames_to_model)')


class Prepared(NamedTuple):
  functions: dict[str, artifact.Flat]  # {name: flat function}, jittable and exportable.
  metadata: dict  # export.json without 'functions', 'state' and the export's own keys.
  inputs: dict[str, list[tuple[str, tuple, str]]]  # {name: [(input, shape, dtype)]}; the
  # shapes hold 'b' (batch) and 't' (frames of a classified video) where they vary.


def _git_commit() -> str:
  done = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=os.path.dirname(__file__),
                        capture_output=True, text=True, check=False)
  return done.stdout.strip() if done.returncode == 0 else ''


def resolve(config: ml_collections.ConfigDict):
  """The run that exports or predicts for ``config`` (one local device, no data)."""
  if tasks.definition(config.input.task).pooled:
    return classify.resolve(config)
  return segment.resolve(config)


def _segmentation(run, variables: dict) -> tuple[dict, dict]:
  model, caps, c = run.model, run.capabilities, run.config.input
  frame = ('b', c.image_size, c.image_size, c.channels)
  sigmoid = jax.nn.sigmoid
  functions, inputs = {}, {}
  if not caps.needs_first_mask:  # A clip forward pass that needs no masks.
    functions['predict'] = lambda frames: (sigmoid(model.apply(
        variables, {'frames': frames}, train=False)['logits']),)
    inputs['predict'] = [('frames', (frame[0], c.clip_length, *frame[1:]), 'float32')]
  if caps.streaming:
    def start(frame, mask):
      state, logits = model.apply(variables, frame, mask, method='start')
      return (mask if logits is None else sigmoid(logits), *jax.tree.leaves(state))

    def step(frame, *leaves):
      state = jax.tree.unflatten(_state_tree(model, variables, frame), leaves)
      state, logits = model.apply(variables, state, frame, method='step')
      return (sigmoid(logits), *jax.tree.leaves(state))
    functions.update(start=start, step=step)
    inputs['start'] = [('frame', frame, 'float32'), ('mask', (*frame[:-1], 1), 'float32')]
    inputs['step'] = [('frame', frame, 'float32')]  # The state follows (``state_specs``).
  return functions, inputs


def _state_tree(model, variables: dict, frame) -> jax.tree_util.PyTreeDef:
  """The tree structure of the model's streaming state for frames like ``frame``."""
  state, _ = jax.eval_shape(lambda f: model.apply(
      variables, f, jnp.zeros((*f.shape[:-1], 1), f.dtype), method='start'), frame)
  return jax.tree.structure(state)


def state_specs(functions: dict, frame: jax.ShapeDtypeStruct) -> list[jax.ShapeDtypeStruct]:
  """The flat state's shapes and dtypes for a batch of frames like ``frame`` (its batch
  dimension may be symbolic)."""
  mask = jax.ShapeDtypeStruct((*frame.shape[:-1], 1), frame.dtype)
  return list(jax.eval_shape(functions['start'], frame, mask)[1:])


def _classification(run, variables: dict, temperature: float) -> tuple[dict, dict]:
  model, c = run.model, run.config.input
  fields = run.fields(train=False)
  if 'frames' not in fields:
    raise ConfigError(f'export needs a classifier of frames; the run of {run.config.model.name}'
                      f' reads {sorted(fields)}: export its frame model instead.')
  def predict(frames, valid):
    batch = {'frames': frames, 'valid': valid}
    logits = model.apply(variables, batch, train=False)['logits']
    return (jax.nn.softmax(logits / temperature, axis=-1),)
  frames = ('b', 't', c.image_size, c.image_size, c.channels)
  return {'predict': predict}, {'predict': [('frames', frames, 'float32'),
                                            ('valid', ('b', 't'), 'bool')]}


def prepare(run, workdir: str, which: str) -> Prepared:
  """Restores checkpoint ``which`` of ``workdir`` for ``run`` (from ``resolve``) and returns
  its inference functions, their inputs and the metadata of ``export.json``."""
  config = run.config
  variables, step = run.restore(workdir, which)
  pooled = run.definition.pooled
  temperature = evaluate.stored_calibration(run, workdir, variables, step) if pooled else 1.0
  variables = jax.tree.map(np.asarray, jax.device_get(variables))
  functions, inputs = (_classification(run, variables, temperature) if pooled
                       else _segmentation(run, variables))
  c, caps = config.input, run.capabilities
  preprocessing = {'image_size': c.image_size, 'channels': c.channels, 'range': [0.0, 1.0],
                   'normalisation': NORMALISATION}
  if pooled:
    preprocessing.update(max_frames=c.max_frames, sampling=c.sampling, frames=(
        'the centre frame of each of n equal segments of the video, n = min(frames, '
        "max_frames) (max_frames with sampling='exact')"))
  else:
    preprocessing.update(clip_length=c.clip_length, frames='target frame last; before '
                         'the video starts, its first frame repeated')
  recorded = provenance.recorded_data(workdir) or {}
  metadata = {
      'task': config.input.task, 'classifies_videos': pooled, 'model': config.model.name,
      'preprocessing': preprocessing,
      'threshold': float(run.task.threshold if pooled else config.task.threshold),
      'temperature': temperature,
      'class_names': (classify._class_names(workdir, config.model.num_classes)  # pylint: disable=protected-access
                      if pooled else ['lesion']),
      'capabilities': {'streaming': caps.streaming, 'needs_first_mask': caps.needs_first_mask},
      'provenance': {'workdir': os.path.abspath(workdir), 'checkpoint': which, 'step': step,
                     'git_commit': _git_commit(), 'data': recorded,
                     'config': config.copy_and_resolve_references().to_dict()}}
  return Prepared(functions, metadata, inputs)


def in_process(prepared: Prepared) -> artifact.Artifact:
  """The prepared functions, jitted, behind the interface of a loaded export (with the
inputs of its metadata's ``functions``: every 'b' and 't' any size)."""
  described = {name: {'inputs': [{'name': n, 'shape': list(shape), 'dtype': dtype}
                                 for n, shape, dtype in inputs]}
               for name, inputs in prepared.inputs.items()}
  return artifact.Artifact({k: jax.jit(f) for k, f in prepared.functions.items()},
                           dict(prepared.metadata, functions=described))
