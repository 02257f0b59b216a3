"""The commands' compilation cache: JAX's own variable names its folder where set, and JAX's
own threshold variable is left to rule what is written."""
import os

import jax

from usvjax.core import compile_cache


def test_the_folder_is_jaxs_variable_where_set_else_the_users_cache(monkeypatch, tmp_path):
  monkeypatch.setenv('JAX_COMPILATION_CACHE_DIR', str(tmp_path))
  assert compile_cache.default_dir() == str(tmp_path)
  monkeypatch.delenv('JAX_COMPILATION_CACHE_DIR')
  assert compile_cache.default_dir() == os.path.join(os.path.expanduser('~'), '.cache',
                                                     'usvjax', 'xla')


def test_turning_on_keeps_a_threshold_given_by_the_environment(monkeypatch, tmp_path):
  saved = (jax.config.jax_compilation_cache_dir,
           jax.config.jax_persistent_cache_min_compile_time_secs)
  try:
    monkeypatch.setenv('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0.25')
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.25)
    compile_cache.turn_on(str(tmp_path))
    assert jax.config.jax_compilation_cache_dir == str(tmp_path)
    assert jax.config.jax_persistent_cache_min_compile_time_secs == 0.25
    monkeypatch.delenv('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS')
    compile_cache.turn_on(str(tmp_path))
    assert (jax.config.jax_persistent_cache_min_compile_time_secs
            == compile_cache.MIN_COMPILE_SECONDS)
  finally:
    jax.config.update('jax_compilation_cache_dir', saved[0])
    jax.config.update('jax_persistent_cache_min_compile_time_secs', saved[1])
