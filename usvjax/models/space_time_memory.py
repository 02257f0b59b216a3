"""STPFNet's space-time memory (the memory read of STM, Oh et al. ICCV 2019, that its
Temporal Fusion Module builds on): the read of Eqs. 1-2 and the memory's slots.

The memory holds N frames' keys and values: slot 0 the first frame, slots 1..N-1 a ring of
every ``memory_every``-th later frame whose head slot always holds the latest one
(``slots``); ``remember`` writes a frame into it and keeps it as the 'previous' frame.
"""
from __future__ import annotations

import math
from typing import Any

import jax.numpy as jnp

from usvjax.models import layers

State = dict[str, Any]


def read(query_key: jnp.ndarray, memory_keys: jnp.ndarray,
                memory_values: jnp.ndarray, memory_valid: jnp.ndarray) -> jnp.ndarray:
  """Eqs. 1-2: the values of N memory frames read at every query position.

  Args:
    query_key: [B, h, w, Ck].
    memory_keys: [B, N, h', w', Ck].
    memory_values: [B, N, h', w', Cv].
    memory_valid: bool [B, N]; invalid slots get zero weight.
  Returns:
    [B, h, w, Cv]: sum over memory positions m of softmax_m(q . k_m / sqrt(Ck)) v_m
    (zeros for a video whose memory is empty).
  """
  b, h, w, ck = query_key.shape
  n, hm, wm = memory_keys.shape[1:4]
  keys = memory_keys.reshape(b, n * hm * wm, ck)
  values = memory_values.reshape(b, n * hm * wm, -1)
  valid = jnp.repeat(memory_valid, hm * wm, axis=1)[:, None, :]  # [B, 1, N h' w'].
  scores = jnp.einsum('bqc,bmc->bqm', query_key.reshape(b, h * w, ck), keys) / math.sqrt(ck)
  weights = layers.masked_softmax(scores, valid, axis=-1)
  return jnp.einsum('bqm,bmc->bqc', weights, values).reshape(b, h, w, -1)


def slots(count: jnp.ndarray, head: jnp.ndarray, memory_size: int, memory_every: int
                 ) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Where frame number ``count`` (0-based, [B]) is written, and the ring head after it.

  Frame 0 goes to slot 0. Later frames go to the ring slot 1 + head; the head moves on only
  after a frame whose number is a multiple of ``memory_every``, so the ring keeps those and
  its head slot always holds the latest frame.
  """
  slot = jnp.where(count == 0, 0, 1 + head)
  kept = (count > 0) & (count % memory_every == 0)
  return slot, jnp.where(kept, (head + 1) % (memory_size - 1), head)


def remember(state: State, key: jnp.ndarray, value: jnp.ndarray, mask: jnp.ndarray,
              memory_every: int) -> State:
  """Writes a frame's key, value and mask into the memory and as the 'previous' frame."""
  memory_size = state['valid'].shape[1]
  slot, head = slots(state['count'], state['head'], memory_size, memory_every)
  chosen = slot[:, None] == jnp.arange(memory_size)[None, :]  # [B, N].
  write = lambda old, new: jnp.where(  # pylint: disable=unnecessary-lambda-assignment
      chosen.reshape(chosen.shape + (1,) * (old.ndim - 2)), new[:, None], old)
  return {'keys': write(state['keys'], key), 'values': write(state['values'], value),
          'valid': state['valid'] | chosen, 'head': head, 'count': state['count'] + 1,
          'previous_key': key, 'previous_mask': mask}
