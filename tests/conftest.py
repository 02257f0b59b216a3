"""Test set-up: 4 virtual CPU devices (so sharding is exercised everywhere), fast XLA
compilation, and tiny data.

JAX's persistent compilation cache lives in a fresh directory per test session, shared by
its pytest-xdist workers: tests re-jit the same programs many times (every evaluation from a
checkpoint, every fold, every command-line test's tiny U-Net), and a compiled program is reused only when its computation is identical, so results do not
change, the suite just compiles less. No cache survives the session. Programs that compile
in under 0.1 s (most of the suite's ~2,000 compilations: slices, small eager operations) are
not written: writing one costs about 10 ms and few are ever read again.
"""
import os
import sys
import tempfile

from helpers import FAST_COMPILE  # pylint: disable=wrong-import-position


def _session_cache() -> str:
  """The session's JAX compilation cache: one folder for all pytest-xdist workers of a run
  (named by its run id; a reader of an entry still being written recompiles), a fresh one
  for a run without workers."""
  run = os.environ.get('PYTEST_XDIST_TESTRUNUID')
  if not run:
    return tempfile.mkdtemp(prefix='usvjax-jax-cache-')
  path = os.path.join(tempfile.gettempdir(), f'usvjax-jax-cache-{run}')
  os.makedirs(path, exist_ok=True)
  return path


os.environ.setdefault('XLA_FLAGS', f'--xla_force_host_platform_device_count=4 {FAST_COMPILE}')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')  # As console.quiet_native sets it.
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR', _session_cache())
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0.1')
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '0')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position

# timm imports torch._dynamo, which loads triton's native library; loaded after TensorFlow's,
# it segfaults the process. Importing it first (before any test module imports TensorFlow)
# makes the suite independent of test order.
try:
  import timm  # pylint: disable=g-import-not-at-top,wrong-import-position,unused-import
except ImportError:
  pass

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='session')
def data_dir(tmp_path_factory) -> str:
  """A TFDS data_dir holding the prepared ``usv_synthetic/tiny`` dataset."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  import input_pipeline.builders  # pylint: disable=g-import-not-at-top,unused-import
  path = str(tmp_path_factory.mktemp('tfds'))
  tfds.builder('usv_synthetic/tiny', data_dir=path).download_and_prepare()
  return path
