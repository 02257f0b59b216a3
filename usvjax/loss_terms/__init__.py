"""Loss terms owned by a method: each module here belongs to one model.

A method's module has ``create(task_config, batch_size) -> list[LossTerm]`` and is named
next to its model in ``usvjax.models.MODELS``; the shared tasks only add up what they are
given. A term's weights are keys of ``config.task`` that the method's config declares
(``c.task.update(aux_weight=1.0)``); the shared config schema holds only what every method
of a task reads.
"""
from __future__ import annotations

import jax.numpy as jnp
import ml_collections

from usvjax.errors import ConfigError


def weight(task_config: ml_collections.ConfigDict, key: str, method: str) -> float:
  """``task_config[key]``, or an error naming the key the method's config must declare."""
  if key not in task_config:
    raise ConfigError(f'the {method} loss terms read config.task.{key}, which this config does '
                      f'not have: declare it in the method config (c.task.update({key}=...)).')
  return task_config[key]


def require(outputs: dict, name: str, what_to_do: str) -> jnp.ndarray:
  """``outputs[name]``, or an error saying which output is missing and how to fix it."""
  if name not in outputs:
    raise ConfigError(f'the model gives no {name!r} (outputs: {sorted(outputs)}): '
                      f'{what_to_do}')
  return outputs[name]
