"""Writing a run's export: ``<name>.jaxexport`` (``jax.export``, StableHLO) per inference
function, ``saved_model/`` (TF SavedModel by ``jax2tf.convert``, native serialization) and
``export.json`` (``usvjax.export.artifact`` describes the functions).

The batch size is symbolic (``b``) where the model allows it, and so is a classified
video's number of frames (``t``); a model that does not allow it is exported with the
next fixed shape (frames ``t = max_frames``, then batch 1), and ``export.json``'s
``shapes_note`` says why.
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence

import jax
import numpy as np

from usvjax.export import artifact
from usvjax.export import functions as functions_lib

# The shape modes tried in order: {symbol: whether it is symbolic (else its fixed size)}.
MODES = ({'b': True, 't': True}, {'b': True, 't': False}, {'b': False, 't': False})


def _specs(prepared: functions_lib.Prepared, mode: dict[str, bool], fixed: dict[str, int]
           ) -> dict[str, list[jax.ShapeDtypeStruct]]:
  """{function: input specs} with the symbols of ``mode`` symbolic, the others fixed."""
  symbols = dict(zip(('b', 't'), jax.export.symbolic_shape('b, t')))

  def dim(d):
    return (symbols[d] if mode[d] else fixed[d]) if isinstance(d, str) else d
  specs = {name: [jax.ShapeDtypeStruct(tuple(dim(d) for d in shape), np.dtype(dtype))
                  for _, shape, dtype in inputs]
           for name, inputs in prepared.inputs.items()}
  if 'step' in specs:
    specs['step'] += functions_lib.state_specs(prepared.functions, specs['step'][0])
  return specs


def _shape(spec) -> list:
  return [d if isinstance(d, int) else str(d) for d in spec.shape]


def _described(spec, name: str = '') -> dict:
  return dict(({'name': name} if name else {}), shape=_shape(spec), dtype=str(spec.dtype))


def export_functions(prepared: functions_lib.Prepared, platforms: Sequence[str]
                     ) -> tuple[dict[str, jax.export.Exported], dict, str]:
  """The exported functions, with the first shape mode of ``MODES`` the model allows;
  (exported, {function: input specs}, note on the modes that failed)."""
  fixed = {'b': 1, 't': prepared.metadata['preprocessing'].get('max_frames', 1)}
  notes, tried = [], set()
  for mode in MODES:
    try:
      specs = _specs(prepared, mode, fixed)
      if str(specs) in tried:  # A mode that fixes a symbol these functions do not have.
        continue
      tried.add(str(specs))
      exported = {name: jax.export.export(jax.jit(prepared.functions[name]),
                                          platforms=tuple(platforms))(*specs[name])
                  for name in specs}
    except Exception as e:  # pylint: disable=broad-except
      # The model does not allow the mode's symbolic shapes (jax raises many kinds).
      notes.append(f'{mode}: {type(e).__name__}: {str(e).splitlines()[0][:300]}')
      continue
    return exported, specs, '; '.join(notes)
  raise ValueError(f'the model exports with none of the shape modes: {"; ".join(notes)}')


def _named(converted):
  """``converted``, returning {'probabilities': ..., 'state_<i>': ...} (signature outputs)."""
  def named(*args):
    return {('probabilities' if i == 0 else f'state_{i - 1}'): out
            for i, out in enumerate(converted(*args))}
  return named


def _saved_model(prepared: functions_lib.Prepared, specs: dict, platforms: Sequence[str],
                 directory: str) -> None:
  """``directory``: a SavedModel with one tf.function per exported function (its outputs
  ``probabilities`` and ``state_<i>``), ``predict`` (else ``start``) as serving_default."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from jax.experimental import jax2tf  # pylint: disable=g-import-not-at-top
  module = tf.Module()
  for name, inputs in specs.items():
    converted = jax2tf.convert(
        prepared.functions[name], with_gradient=False,
        native_serialization_platforms=tuple(platforms),
        polymorphic_shapes=[f'({", ".join(map(str, _shape(s)))})' for s in inputs])
    signature = [tf.TensorSpec([d if isinstance(d, int) else None for d in _shape(s)],
                               tf.as_dtype(s.dtype), name=f'input_{i}')
                 for i, s in enumerate(inputs)]
    setattr(module, name, tf.function(_named(converted), input_signature=signature,
                                      autograph=False))
  serving = getattr(module, 'predict' if 'predict' in specs else 'start')
  tf.saved_model.save(module, directory,
                      signatures={'serving_default': serving.get_concrete_function()})


def export_run(prepared: functions_lib.Prepared, output: str,
               platforms: Sequence[str] = ('cpu', 'cuda'), saved_model: bool = True) -> dict:
  """Writes the export of ``prepared`` (``functions.prepare``) into ``output`` and returns
  its ``export.json`` contents."""
  exported, specs, note = export_functions(prepared, platforms)
  os.makedirs(output, exist_ok=True)
  described = {}
  for name, program in exported.items():
    with open(os.path.join(output, f'{name}{artifact.SUFFIX}'), 'wb') as f:
      f.write(program.serialize())
    names = [n for n, _, _ in prepared.inputs[name]]
    names += [f'state_{i}' for i in range(len(specs[name]) - len(names))]
    described[name] = {
        'file': f'{name}{artifact.SUFFIX}',
        'inputs': [_described(s, n) for n, s in zip(names, specs[name])],
        'outputs': [_described(s) for s in program.out_avals]}
  metadata = dict(prepared.metadata, functions=described, platforms=list(platforms),
                  shapes_note=note, jax_version=jax.__version__)
  if 'step' in specs:
    metadata['state'] = described['step']['inputs'][1:]
  if saved_model:
    _saved_model(prepared, specs, platforms, os.path.join(output, 'saved_model'))
    metadata['saved_model'] = 'saved_model'
  with open(os.path.join(output, artifact.METADATA_FILE), 'w', encoding='utf-8') as f:
    json.dump(metadata, f, indent=2)
  return metadata
