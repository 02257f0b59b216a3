"""JAX's persistent compilation cache, as every command turns it on: a step compiled once (by
an earlier run, fold or seed of the same shapes) is read back instead of compiled again.

The default folder honours JAX's own environment variable, ``JAX_COMPILATION_CACHE_DIR``
(so a cluster's shared cache, or a test session's, is used as JAX users expect), else
``~/.cache/usvjax/xla``; only programs that took at least 0.5 s to compile are written
(``JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS`` where set): the many small ones cost more to
write than they save.
"""
import os

import jax

MIN_COMPILE_SECONDS = 0.5


def default_dir() -> str:
  """``$JAX_COMPILATION_CACHE_DIR`` where set, else ``~/.cache/usvjax/xla``."""
  return (os.environ.get('JAX_COMPILATION_CACHE_DIR')
          or os.path.join(os.path.expanduser('~'), '.cache', 'usvjax', 'xla'))


def turn_on(path: str) -> None:
  """Writes compiled programs to, and reads them from, the folder ``path``."""
  jax.config.update('jax_compilation_cache_dir', path)
  if 'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS' not in os.environ:
    jax.config.update('jax_persistent_cache_min_compile_time_secs', MIN_COMPILE_SECONDS)
