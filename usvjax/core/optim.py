"""Optimizers and learning-rate schedules from the config (optax).

``config.optimizer``: ``name`` in {adam, adamw, sgd, lars}, ``lr`` (peak), ``weight_decay``,
``momentum`` (sgd/lars), ``clip_norm`` and ``clip_value`` (0 disables each; clipping
happens before the optimizer). ``config.schedule``: ``name`` in {constant, step, cosine},
``warmup_steps`` (linear from 0), ``step_boundaries`` and ``step_factor`` (step decay:
multiply by the factor at every boundary). Plain ``adam``/``sgd`` add weight decay to the
gradient (L2, as PyTorch's ``weight_decay``); ``adamw`` decouples it. ``lars`` (You et
al., CLMAN's pretraining) decays and trust-ratio-scales only the weights: biases and
normalisation parameters (Flax leaves named ``bias`` and ``scale``: BatchNorm, GroupNorm,
LayerNorm) get neither, as SimCLR excludes them, and take plain momentum steps.
"""
from __future__ import annotations

import jax
import ml_collections
import optax

from usvjax.errors import ConfigError

_NOT_ADAPTED = ('bias', 'scale')  # Biases and normalisation parameters (LARS).


def learning_rate_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
  lr, sched, total = config.optimizer.lr, config.schedule, config.total_steps
  warmup = sched.warmup_steps
  if sched.name == 'constant':
    main = optax.constant_schedule(lr)
  elif sched.name == 'step':
    main = optax.piecewise_constant_schedule(
        lr, {int(b) - warmup: sched.step_factor for b in sched.step_boundaries})
  elif sched.name == 'cosine':
    main = optax.cosine_decay_schedule(lr, max(1, total - warmup))
  else:
    raise ConfigError(f'config.schedule.name={sched.name!r}: use constant, step or cosine.')
  if warmup <= 0:
    return main
  return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), main], [warmup])


def lars_mask(params: optax.Params) -> optax.Params:
  """True for the leaves LARS decays and adapts: all but biases and normalisation params."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: not path or getattr(path[-1], 'key', None) not in _NOT_ADAPTED, params)


def create_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """The full gradient transformation: clipping, then the optimizer with its schedule."""
  opt = config.optimizer
  lr = learning_rate_schedule(config)
  if opt.name == 'adam':
    core = optax.chain(optax.add_decayed_weights(opt.weight_decay), optax.adam(lr))
  elif opt.name == 'adamw':
    core = optax.adamw(lr, weight_decay=opt.weight_decay)
  elif opt.name == 'sgd':
    core = optax.chain(optax.add_decayed_weights(opt.weight_decay),
                       optax.sgd(lr, momentum=opt.momentum or None))
  elif opt.name == 'lars':
    core = optax.lars(lr, weight_decay=opt.weight_decay, momentum=opt.momentum,
                      weight_decay_mask=lars_mask, trust_ratio_mask=lars_mask)
  else:
    raise ConfigError(f'config.optimizer.name={opt.name!r}: use adam, adamw, sgd or lars.')
  clipping = []
  if opt.clip_value > 0:
    clipping.append(optax.clip(opt.clip_value))
  if opt.clip_norm > 0:
    clipping.append(optax.clip_by_global_norm(opt.clip_norm))
  return optax.chain(*clipping, core)
