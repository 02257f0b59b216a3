"""The device side of every task needs no host-side library: importing the task registry,
creating each task from a tiny config and tracing its loss and evaluation outputs on the
model's outputs work where TensorFlow, TFDS, OpenCV, scikit-learn, SciPy, MedPy,
pysodmetrics, matplotlib and tqdm cannot be imported (only ``evaluator()``, on the host,
brings them in)."""
import json
import os
import subprocess
import sys

import helpers

HOST_ONLY = ('tensorflow', 'tensorflow_datasets', 'cv2', 'sklearn', 'scipy', 'medpy',
             'py_sod_metrics', 'matplotlib', 'tqdm')
# (config, variant): one of each task, and models with their own loss terms (FLA-Net).
CONFIGS = (('unet', 'tiny'), ('flanet', 'tiny'), ('clman', 'tiny'), ('clman', 'tiny,pretrain'))

# Run in a fresh interpreter where importing HOST_ONLY fails: for each config, the model's
# outputs on an evaluation batch (jax.eval_shape: traced, not compiled) go through the
# task's loss and eval_outputs; prints the tasks made and the HOST_ONLY modules imported.
_PROBE = """
import importlib, importlib.abc, json, sys
host_only, configs = json.loads(sys.argv[1]), json.loads(sys.argv[2])

class Refuse(importlib.abc.MetaPathFinder):
  def find_spec(self, name, path=None, target=None):
    if name.partition('.')[0] in host_only:
      raise ImportError(f'{name} is host-side: the device side must not import it.')

sys.meta_path.insert(0, Refuse())
import jax
import jax.numpy as jnp
from input_pipeline import spec
from usvjax import models
from usvjax import tasks

def batch(config, train):
  fields = tasks.batch_spec(config, train)
  return jax.tree.map(jnp.asarray, spec.example_batch(fields, 2, config.input.max_frames))

made = []
for name, variant in configs:
  config = importlib.import_module(f'configs.{name}').get_config(variant)
  task, model = tasks.create_task(config), models.create_model(config.model)
  rngs = {'params': jax.random.key(0), 'dropout': jax.random.key(1)}
  variables = jax.eval_shape(lambda b: model.init(rngs, b, train=False), batch(config, False))

  def loss(variables, batch):  # As the train step computes it.
    outputs, _ = model.apply(variables, batch, train=True, mutable=['batch_stats'], rngs=rngs)
    return task.loss(outputs, batch)

  def eval_outputs(variables, batch):  # As the evaluation step computes them.
    return task.eval_outputs(model.apply(variables, batch, train=False), batch)
  jax.eval_shape(loss, variables, batch(config, True))
  jax.eval_shape(eval_outputs, variables, batch(config, False))
  made.append(f'{name}:{variant}: {type(task).__name__}')
print(json.dumps({'made': made, 'host_only': sorted(
    {m.partition('.')[0] for m in sys.modules} & set(host_only))}))
"""


def test_tasks_trace_their_loss_without_host_side_libraries():
  result = subprocess.run(
      [sys.executable, '-c', _PROBE, json.dumps(HOST_ONLY), json.dumps(CONFIGS)],
      cwd=helpers.REPO, capture_output=True, text=True, check=False,
      env=helpers.subprocess_env(1, PYTHONPATH=os.pathsep.join(
          [helpers.REPO, os.path.join(helpers.REPO, 'tests')])))
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(result.stdout.strip().splitlines()[-1])
  assert len(report['made']) == len(CONFIGS), report
  assert report['host_only'] == [], report
