"""The project's code uses public JAX, jaxlib and Flax APIs only, so that a new release
breaks it loudly or not at all.

One exception, documented in ``parallel._exit_when_a_peer_is_lost``: the one-line exit of a
multi-process run that lost a peer, which no public API gives. It is applied only on the
releases ``parallel.PEER_EXIT_WRITTEN_FOR``, and the last tests here fail while the
installed or pinned releases differ from those.
"""
import ast
import contextlib
import importlib.metadata
import pathlib
import pkgutil
import re

import flax.linen

from usvjax.core import parallel

REPO = pathlib.Path(__file__).resolve().parent.parent
SCANNED = ('usvjax', 'input_pipeline', 'experiments', 'scripts', 'configs')
PRIVATE = {
    'a private module of jax or jaxlib (_src, _jax)': re.compile(r'\b_(?:src|jax)\b'),
    'a private attribute of jax, jaxlib or flax': re.compile(
        r'\b(?:jax|jaxlib|flax)(?:\.\w+)*\._[A-Za-z0-9]'),
    'a private name imported from jax, jaxlib or flax': re.compile(
        r'\bfrom\s+(?:jax|jaxlib|flax)[\w.]*\s+import\s+(?:\(\s*)?_[A-Za-z0-9]'),
    "a module inside flax.linen (use flax.linen's own names)": re.compile(
        r'\bflax\.linen\.(?:%s)\b' % '|'.join(
            m.name for m in pkgutil.iter_modules(flax.linen.__path__)
            if m.name != 'initializers')),
    'a mangled C++ symbol': re.compile(r'\b_Z[A-Z]\w*\d'),
}
# (file, function) whose private uses are allowed -> the one function that may call it, after
# checking parallel.peer_exit_hook_applies().
VERSION_GATED = {('usvjax/core/parallel.py', '_exit_when_a_peer_is_lost'): '_on_a_lost_peer'}


def _sources():
  for top in SCANNED:
    for path in sorted((REPO / top).rglob('*.py')):
      yield path.relative_to(REPO).as_posix(), path.read_text()


def _functions(source: str):
  return [node for node in ast.walk(ast.parse(source)) if isinstance(node, ast.FunctionDef)]


def _gated_lines(relative: str, source: str) -> set[int]:
  names = {name for file, name in VERSION_GATED if file == relative}
  return {line for node in _functions(source) if node.name in names
          for line in range(node.lineno, node.end_lineno + 1)}


def test_no_private_jax_jaxlib_or_flax_api_is_used():
  found = []
  for relative, source in _sources():
    gated = _gated_lines(relative, source)
    for number, line in enumerate(source.splitlines(), 1):
      for what, pattern in PRIVATE.items():
        if number not in gated and pattern.search(line):
          found.append(f'{relative}:{number}: {what}: {line.strip()}')
  assert not found, ('private APIs (use public ones, or gate the use on the pinned releases '
                     'as parallel.py does and add it to VERSION_GATED):\n' + '\n'.join(found))


def test_the_version_gated_functions_are_called_only_behind_the_gate():
  callers = {name: set() for _, name in VERSION_GATED}
  for relative, source in _sources():
    for function in _functions(source):
      used = {n.id for n in ast.walk(function) if isinstance(n, ast.Name)} | {
          n.attr for n in ast.walk(function) if isinstance(n, ast.Attribute)}
      for name in callers.keys() & used:
        callers[name].add((relative, function.name))
  for (file, name), gate in VERSION_GATED.items():
    assert _gated_lines(file, (REPO / file).read_text()), f'{file} defines no {name}'
    assert callers[name] == {(file, gate)}, f'{name} is called from {callers[name]}, not {gate}'


def test_the_scan_sees_each_kind_of_private_use():
  samples = ['from jax._src import distributed', 'from jaxlib import _jax', 'runtime._jax',
             'from flax.linen.linear import canonicalize_padding',
             'lib._ZSt13set_terminatePFvvE(handler)', 'client = jax.distributed._state']
  for sample in samples:
    assert any(p.search(sample) for p in PRIVATE.values()), sample
  for public in ['import flax.linen as nn', 'flax.linen.initializers.zeros', 'flax.linen.Module',
                 'from jax.experimental import multihost_utils', '_zeros = 0',
                 'jax.__version__', 'to_jax(x)']:
    assert not any(p.search(public) for p in PRIVATE.values()), public


def test_other_releases_get_jaxs_own_exit_and_no_private_api(monkeypatch):
  monkeypatch.setattr(parallel, 'PEER_EXIT_WRITTEN_FOR', {'jax': '0.0.1', 'jaxlib': '0.0.1'})
  assert not parallel.peer_exit_hook_applies()
  assert isinstance(parallel._on_a_lost_peer(5, ''), contextlib.nullcontext)


def test_the_installed_releases_are_those_the_peer_exit_was_written_for():
  installed = {name: importlib.metadata.version(name) for name in parallel.PEER_EXIT_WRITTEN_FOR}
  assert parallel.peer_exit_hook_applies(), (
      f'parallel._exit_when_a_peer_is_lost uses private jax/jaxlib APIs written for '
      f'{parallel.PEER_EXIT_WRITTEN_FOR}, but {installed} is installed: it is off. Run '
      'tests/test_dead_peer.py on these releases, then update PEER_EXIT_WRITTEN_FOR (or remove '
      'the hook if jax.distributed.initialize now takes a callback for a lost peer).')


def test_the_pinned_releases_are_those_the_peer_exit_was_written_for():
  pins = dict(re.findall(r'^(jax|jaxlib)==(\S+)', (REPO / 'requirements.txt').read_text(),
                         re.MULTILINE))
  assert pins == parallel.PEER_EXIT_WRITTEN_FOR, (
      f'requirements.txt pins {pins}; parallel._exit_when_a_peer_is_lost was written for '
      f'{parallel.PEER_EXIT_WRITTEN_FOR}: check it on the new pins with '
      'tests/test_dead_peer.py and update PEER_EXIT_WRITTEN_FOR.')
