"""Helpers shared by tests."""
import importlib
import importlib.util
import os

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# XLA flags of every test process (tests/conftest.py and the tests' subprocesses). Test
# programs are tiny and each is compiled once or twice, so compiling is most of a test's
# time: without LLVM's optimisation passes, and with XLA:CPU's elemental emitters instead of
# its MLIR fusion emitters, a training step compiles in about half the time (measured on
# CLMAN's tiny step: 7 s -> 3.2 s of CPU). Same arithmetic, slower code.
FAST_COMPILE = '--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false'


def subprocess_env(devices: int, **env: str) -> dict[str, str]:
  """The environment of a test's Python subprocess: ``devices`` virtual CPU devices,
  ``FAST_COMPILE``, no TensorFlow info logs, the session's JAX compilation cache (set by
  tests/conftest.py, inherited) and ``env``."""
  return dict(os.environ, XLA_FLAGS=f'--xla_force_host_platform_device_count={devices} '
              f'{FAST_COMPILE}', TF_CPP_MIN_LOG_LEVEL='2', **env)


def load_config(name: str, data_dir: str, **overrides):
  """``configs/<name>.py:tiny`` pointed at ``data_dir``, with dotted-key overrides."""
  config = importlib.import_module(f'configs.{name}').get_config('tiny')
  config.dataset.data_dir = data_dir
  for key, value in overrides.items():
    node = config
    *parents, leaf = key.split('.')
    for parent in parents:
      node = node[parent]
    node[leaf] = value
  return config


def initial_state(config, seed: int):
  """The train state ``config``'s run would start from with ``seed``."""
  # pylint: disable=g-import-not-at-top
  from usvjax import models, tasks
  from usvjax.core import optim
  from usvjax.core import parallel
  from usvjax.core import state as state_lib
  return state_lib.init_state(
      models.create_model(config.model), optim.create_optimizer(config),
      state_lib.init_batch(config, tasks.batch_spec(config, True)), seed,
      parallel.create_mesh())


def save_whole_model(state, path: str) -> str:
  """``state``'s variables as a converted whole-model weights file (as a released model's
  weights become), for ``config.init.checkpoint`` with ``init.target=''``."""
  import jax  # pylint: disable=g-import-not-at-top
  from usvjax.models.backbones import convert  # pylint: disable=g-import-not-at-top
  return convert.save_converted({'params': jax.device_get(state.params),
                                 'batch_stats': jax.device_get(state.batch_stats)}, path)


def load_script(name: str):
  """The module of ``scripts/<name>.py`` (the scripts are not a package)."""
  spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, 'scripts',
                                                                   f'{name}.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def from_initial_weights(config, path: str):
  """``config`` as a run of no training steps whose step-0 checkpoint holds the initial
  weights (saved under ``path``): all an evaluation, export or prediction test needs,
  without a training step to compile."""
  weights = save_whole_model(initial_state(config, 0), path)
  config = config.copy_and_resolve_references()
  config.total_steps, config.init.checkpoint, config.init.target = 0, weights, ''
  return config


def flat_local(tree) -> dict:
  """{'a/b/c': numpy array} of a pytree of replicated arrays, from this process's copy."""
  import jax  # pylint: disable=g-import-not-at-top
  return {'/'.join(str(getattr(k, 'key', k)) for k in path): np.asarray(v.addressable_data(0))
          for path, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def write_dicom(path: str, frames: np.ndarray, photometric: str,
                syntax: str = '', encapsulated=None, bits: int = 8,
                **tags) -> str:
  """A multi-frame ultrasound DICOM file of ``frames`` ([T, H, W] or [T, H, W, 3]) with
  ``bits`` per sample, uncompressed, or with the given ``encapsulated`` fragments under a
  compressed ``syntax``."""
  from pydicom import uid as uids  # pylint: disable=g-import-not-at-top
  from pydicom.dataset import Dataset, FileMetaDataset  # pylint: disable=g-import-not-at-top
  from pydicom.encaps import encapsulate  # pylint: disable=g-import-not-at-top
  syntax = syntax or uids.ExplicitVRLittleEndian
  ds = Dataset()
  ds.file_meta = FileMetaDataset()
  ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = uids.UltrasoundMultiFrameImageStorage
  ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = uids.generate_uid()
  if encapsulated is None:
    ds.set_pixel_data(frames, photometric, bits)
  else:
    ds.NumberOfFrames, ds.Rows, ds.Columns = frames.shape[:3]
    ds.SamplesPerPixel = 3 if frames.ndim == 4 else 1
    ds.PhotometricInterpretation, ds.PlanarConfiguration = photometric, 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = encapsulate(encapsulated)
    ds['PixelData'].VR = 'OB'
  ds.file_meta.TransferSyntaxUID = syntax
  for keyword, value in tags.items():
    setattr(ds, keyword, value)
  ds.save_as(path, enforce_file_format=True)
  return path
