"""DSANet: AFSA against NumPy evaluations of the released gates and of Eqs. 1-3, the scale
behaviour of AFSA and LGSA, the channel reassembly of Eq. 5, the structure loss by hand,
the auxiliary supervision of Eq. 6, every frame reaching the output, gradients reaching
every parameter, streaming equal to the clip forward pass, and the paper config against
the released model's layout, parameter count and schedule."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import dsanet as dsanet_config
from usvjax import losses
from usvjax import models
from usvjax import tasks
from usvjax.core import optim
from usvjax.models import dsanet

MODES = ['channel', 'pixel']


def _features(seed, shape=(2, 4, 4, 32)):
  """Two frames of non-negative (post-ReLU-like) features."""
  rng = np.random.default_rng(seed)
  return [jnp.asarray(np.maximum(rng.standard_normal(shape), 0.0), jnp.float32)
          for _ in range(2)]


def _similarity_numpy(p, f, mode):
  """Eq. 1 with loops over channels (or positions); p, f [B, N, C]."""
  b, n, c = f.shape
  cos = lambda u, v: u @ v / (np.linalg.norm(u) * np.linalg.norm(v))  # pylint: disable=unnecessary-lambda-assignment
  if mode == 'channel':  # S_i: cosine of channel i's spatial responses.
    return np.stack([[cos(p[k, :, i], f[k, :, i]) for i in range(c)] for k in range(b)])[:, None]
  return np.stack([[cos(p[k, j], f[k, j]) for j in range(n)] for k in range(b)])[:, :, None]


def _afsa_literal_numpy(previous, current, mode):
  """Eqs. 1-3 as printed."""
  b, h, w, c = current.shape
  p, f = previous.reshape(b, h * w, c), current.reshape(b, h * w, c)
  s = _similarity_numpy(p, f, mode)
  f_ref, p_ref = s * f, s * p
  out = p_ref.mean(axis=1, keepdims=True) * f_ref * f_ref.mean(axis=1, keepdims=True)
  return out.reshape(b, h, w, c)


def _afsa_bounded_numpy(previous, current, mode, params):
  """The released temporal_fusion: gates sigmoid(S) and two CBAM channel attentions."""
  b, h, w, c = current.shape
  p, f = previous.reshape(b, h * w, c), current.reshape(b, h * w, c)
  sigmoid = lambda z: 1 / (1 + np.exp(-z))  # pylint: disable=unnecessary-lambda-assignment

  def channel_attention(x, gate):
    w1, w2 = (np.asarray(params[gate][k]['kernel']) for k in ('hidden', 'out'))
    mlp = lambda v: np.maximum(v @ w1, 0) @ w2  # pylint: disable=unnecessary-lambda-assignment
    return sigmoid(mlp(x.mean(axis=1, keepdims=True)) + mlp(x.max(axis=1, keepdims=True)))

  s = sigmoid(_similarity_numpy(p, f, mode))
  y = s * f * channel_attention(s * p, 'previous_gate')
  return (y * channel_attention(y, 'self_gate')).reshape(b, h, w, c)


@pytest.mark.parametrize('mode', MODES)
def test_afsa_matches_the_released_gates_and_the_literal_option_eqs_1_to_3(mode):
  previous, current = _features(0, (2, 3, 5, 32))
  module = dsanet.AFSA(mode)
  variables = module.init(jax.random.key(0), previous, current)
  np.testing.assert_allclose(module.apply(variables, previous, current),
                             _afsa_bounded_numpy(np.asarray(previous), np.asarray(current), mode,
                                                 variables['params']), rtol=1e-4, atol=1e-6)
  literal = dsanet.AFSA(mode, 'literal').apply({}, previous, current)
  np.testing.assert_allclose(literal, _afsa_literal_numpy(np.asarray(previous),
                                                          np.asarray(current), mode),
                             rtol=1e-4, atol=1e-6)
  # Identical frames: S = 1.
  np.testing.assert_allclose(dsanet.similarity(current, current, mode), 1.0, rtol=1e-5)


def _growth_exponent(fn, inputs, factor=1.5):
  """log(|fn(factor x)| / |fn(x)|) / log(factor)."""
  small, large = fn(*inputs), fn(*(factor * x for x in inputs))
  return float(np.log(np.linalg.norm(large) / np.linalg.norm(small)) / np.log(factor))


@pytest.mark.parametrize('mode', MODES)
def test_afsa_is_at_most_linear_in_the_feature_scale(mode):
  """Both branches of Fig. 3 (memory m = AFSA(F_{t-2}, F_{t-1}), target AFSA(m, F_t)).
  Every bounded gate lies in (0, 1), so |output| <= |F_t| at any scale; where the gates
  are flat (small features) the output grows as the features (exponent 1), where the
  literal Eq. 3 grows with their fifth power. (Where a sigmoid gate rises, the local
  exponent of the bounded reading exceeds 1: up to 1.37 at unit scale over 20 random
  inits, 1.07 at 1000; the bound holds there too.)"""
  f2, f1 = _features(1)
  f0 = _features(2)[0]

  def chain(gate=dsanet.AFSA.gate):
    memory, target = dsanet.AFSA(mode, gate), dsanet.AFSA(mode, gate)
    v_m = memory.init(jax.random.key(1), f2, f1)
    v_t = target.init(jax.random.key(2), f2, f1)
    return lambda a, b, c: target.apply(v_t, memory.apply(v_m, a, b), c)

  bounded, literal = chain(), chain('literal')
  assert _growth_exponent(bounded, [0.01 * x for x in (f2, f1, f0)]) <= 1.05
  assert _growth_exponent(literal, [f2, f1, f0]) == pytest.approx(5.0, abs=1e-3)  # Misread.
  for scale in (1e-2, 1.0, 1e2, 1e4):
    out = bounded(scale * f2, scale * f1, scale * f0)
    assert bool(jnp.all(jnp.abs(out) <= scale * f0)), scale


def test_lgsa_is_at_most_linear_in_the_feature_scale():
  """LGSA (self-attention, global pyramid, reassembly, decoders, head) from f_a and the
  local features, eval mode: output growth exponent <= 1.05 for inputs x1.5."""
  rng = np.random.default_rng(3)
  relu_noise = lambda *s: jnp.asarray(np.maximum(rng.standard_normal(s), 0), jnp.float32)  # pylint: disable=unnecessary-lambda-assignment
  local = {s: relu_noise(2, 16 // 2**i, 16 // 2**i, 4 * 2**i)
           for i, s in enumerate(dsanet.SCALES)}
  f_a = relu_noise(2, 16, 16, 8)
  module = dsanet.LGSA(channels=8, attention_layers=2)
  variables = jax.jit(lambda: module.init(jax.random.key(0), f_a, local, train=False))()
  apply = jax.jit(lambda f, *l: module.apply(variables, f, dict(zip(dsanet.SCALES, l)),
                                             train=False))
  inputs = [f_a] + [local[s] for s in dsanet.SCALES]
  for scale in (0.01, 1.0, 100.0):
    assert _growth_exponent(apply, [scale * x for x in inputs]) <= 1.05, scale


def test_channel_reassembly_swaps_halves():
  g = jnp.arange(4.0).reshape(1, 1, 1, 4)           # global channels 0 1 2 3
  l = 10 + jnp.arange(4.0).reshape(1, 1, 1, 4)      # local channels 10 11 12 13
  fus1, fus2 = dsanet.reassemble(g, l)
  assert fus1.ravel().tolist() == [0, 1, 12, 13]    # [g[:C/2], l[C/2:]]
  assert fus2.ravel().tolist() == [2, 3, 10, 11]    # [g[C/2:], l[:C/2]]


def test_structure_loss_by_hand():
  mask = np.zeros((1, 3, 3, 1), np.float32)
  mask[0, 1, 1, 0] = 1.0
  weights = losses.structure_weights(jnp.asarray(mask), kernel=3, strength=5.0)
  # 3x3 mean with zero padding: 1/9 everywhere the window holds the centre, i.e. all 9.
  expected = 1 + 5 * np.abs(1 / 9 - mask)
  np.testing.assert_allclose(weights, expected, rtol=1e-6)
  logits = jnp.zeros_like(mask)  # p = 1/2 everywhere.
  np.testing.assert_allclose(losses.weighted_bce(logits, mask, weights), [np.log(2)], rtol=1e-6)
  w = expected[0, ..., 0]
  inter = 0.5 * w[1, 1]
  union = 0.5 * w.sum() + w[1, 1]
  np.testing.assert_allclose(losses.weighted_iou(logits, mask, weights),
                             [1 - (inter + 1) / (union - inter + 1)], rtol=1e-6)


def test_structure_weights_are_the_zero_padded_window_mean():
  rng = np.random.default_rng(0)
  masks = (rng.random((2, 20, 17, 1)) > 0.6).astype(np.float32)
  kernel, pad = 7, 3
  padded = np.pad(masks, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  mean = np.zeros_like(masks)
  for i in range(20):
    for j in range(17):
      mean[:, i, j] = padded[:, i:i + kernel, j:j + kernel].mean(axis=(1, 2))
  np.testing.assert_allclose(losses.structure_weights(jnp.asarray(masks), kernel, 2.5),
                             1 + 2.5 * np.abs(mean - masks), rtol=1e-6)


def test_auxiliary_losses_supervise_the_two_previous_frames():
  task = tasks.create_task(dsanet_config.get_config('tiny'))
  masks = np.zeros((1, 3, 4, 4, 1), np.float32)
  masks[0, 0, :2] = 1.0  # t-2: top half.
  masks[0, 1, :, :2] = 1.0  # t-1: left half.
  masks[0, 2, 1:3, 1:3] = 1.0  # t: centre.
  as_logits = lambda m: 40.0 * (2 * m - 1)  # pylint: disable=unnecessary-lambda-assignment
  batch = {'masks': jnp.asarray(masks), 'valid': jnp.ones((1, 3), bool),
           'annotated': jnp.ones((1, 3), bool)}
  right = {'logits': as_logits(masks[:, 2]), 'aux_logits': as_logits(masks[:, :2])}
  loss, parts = task.loss(right, batch)
  assert float(loss) < 1e-3 and {'aux0_wbce', 'aux1_wiou', 'soft_dice_loss'} <= set(parts)
  swapped = dict(right, aux_logits=as_logits(masks[:, 1::-1]))  # t-1 and t-2 exchanged.
  assert float(task.loss(swapped, batch)[0]) > 1.0


def _tiny(**overrides):
  """The tiny config with a narrow ResNet-18 encoder (short compilation)."""
  config = dsanet_config.get_config('tiny')
  config.model.update(backbone='resnet18', **overrides)
  return config, models.create_model(config.model)


def _clip(seed, config, batch=2, frames=3):
  s = config.input.image_size
  return jnp.asarray(np.random.default_rng(seed).random((batch, frames, s, s, 1), np.float32))


PLACEMENTS = {'default': (), 'stride8_pixel': (('level', 'stride8'), ('similarity', 'pixel'))}


@functools.cache
def _tiny_model(overrides=()):
  """(config, model, variables, jitted clip forward -> outputs) of a tiny DSANet."""
  config, model = _tiny(**dict(overrides))
  variables = jax.jit(lambda c: model.init(jax.random.key(0), {'frames': c}, train=False))(
      _clip(0, config))
  forward = jax.jit(lambda c: model.apply(variables, {'frames': c}, train=False))
  return config, model, variables, forward


@pytest.mark.parametrize('placement', PLACEMENTS)
def test_every_frame_reaches_the_output_and_their_order_matters(placement):
  """The target's logits depend on all three frames and on their order; the auxiliary
  t-1 head reads the memory branch (t-2 and t-1), the t-2 head frame t-2 only."""
  config, _, _, forward = _tiny_model(PLACEMENTS[placement])
  clip, other = _clip(0, config), _clip(1, config)
  base = forward(clip)

  def changes(c):
    """Largest change of the target's logits, the t-2 head's and the t-1 head's."""
    out = forward(c)
    return [float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in (
        (out['logits'], base['logits']), (out['aux_logits'][:, 0], base['aux_logits'][:, 0]),
        (out['aux_logits'][:, 1], base['aux_logits'][:, 1]))]

  for k, name in enumerate(('t-2', 't-1', 't')):
    target, aux_t2, aux_t1 = changes(clip.at[:, k].set(other[:, k]))
    assert target > 1e-4, f'frame {name} does not reach the output'
    assert (aux_t2 > 1e-4, aux_t1 > 1e-4) == (k == 0, k < 2), (name, aux_t2, aux_t1)
  assert changes(clip[:, [1, 0, 2]])[0] > 1e-4, 't-2 and t-1 swapped: same output'
  assert changes(clip[:, [0, 2, 1]])[0] > 1e-4, 't-1 and t swapped: same output'


def test_the_baseline_ablation_segments_frame_t_alone():
  """afsa='none', lgsa=False (Table II's baseline): the target's logits depend on frame t
  only, the t-1 head on frame t-1 only; no AFSA or LGSA parameters exist."""
  config, model, variables, forward = _tiny_model((('afsa', 'none'), ('lgsa', False)))
  assert not {'afsa_memory', 'afsa_target', 'lgsa'} & set(variables['params'])
  clip, other = _clip(0, config), _clip(1, config)
  base = forward(clip)
  for k in range(3):
    out = forward(clip.at[:, k].set(other[:, k]))
    moved = [bool(np.max(np.abs(np.asarray(out[n][:, j]) - np.asarray(base[n][:, j]))) > 1e-4)
             for n, j in (('logits', ...), ('aux_logits', 0), ('aux_logits', 1))]
    assert moved == [k == 2, k == 0, k == 1], (k, moved)


def test_streaming_equals_the_clip_forward_pass():
  config, model, variables, forward = _tiny_model()
  video = _clip(2, config, frames=4)
  clip_of = lambda t: video[:, [max(t - k, 0) for k in (2, 1, 0)]]  # pylint: disable=unnecessary-lambda-assignment
  start = jax.jit(lambda f: model.apply(variables, f, method='start'))
  step = jax.jit(lambda state, f: model.apply(variables, state, f, method='step'))
  state, logits = start(video[:, 0])
  for t in range(video.shape[1]):
    if t:
      state, logits = step(state, video[:, t])
    np.testing.assert_allclose(logits, forward(clip_of(t))['logits'], rtol=1e-4, atol=1e-5,
                               err_msg=f'frame {t}')


def test_gradients_reach_every_parameter_from_the_loss():
  config, model, variables, _ = _tiny_model()
  task = tasks.create_task(config)
  s = config.input.image_size
  masks = np.zeros((2, 3, s, s, 1), np.float32)
  masks[:, :, 8:20, 10:22] = 1.0
  batch = {'frames': _clip(0, config), 'masks': jnp.asarray(masks),
           'valid': jnp.ones((2, 3), bool), 'annotated': jnp.ones((2, 3), bool)}

  @jax.jit
  def gradients(params, batch):
    def loss_fn(p):
      outputs, _ = model.apply({'params': p, 'batch_stats': variables['batch_stats']}, batch,
                               train=True, mutable=['batch_stats'])
      return task.loss(outputs, batch)[0]
    return jax.grad(loss_fn)(params)

  flat = jax.tree_util.tree_flatten_with_path(gradients(variables['params'], batch))[0]
  dead = [jax.tree_util.keystr(path) for path, g in flat if not np.abs(np.asarray(g)).max() > 0]
  assert not dead, dead


def _released_parameters_outside_the_encoder(widths=(256, 512, 1024, 2048), emb=256,
                                             attention_layers=12):
  """netV4.my_model's parameter count without its backbone, from its layout: five U-Net
  decoders (integrate_curr/t1/t2, decoder.ifmf1/2), four CBAM channel attentions (two per
  temporal_fusion), the self-attention layers (q, k, v with biases), the stage
  construction, the decoder head and the two auxiliary 1x1 convs."""
  conv = lambda i, o, k=3, bias=True: i * o * k * k + (o if bias else 0)  # pylint: disable=unnecessary-lambda-assignment
  # BasicConv2d: conv without bias, BN; DoubleConv: twice conv with bias, BN.
  basic = lambda i, o: conv(i, o, bias=False) + 2 * o  # pylint: disable=unnecessary-lambda-assignment
  double = lambda i, o: conv(i, o) + 2 * o + conv(o, o) + 2 * o  # pylint: disable=unnecessary-lambda-assignment
  c1, c2, c3, c4 = widths
  unet = (conv(c4, c3, 2) + double(c4, c3) + conv(c3, c2, 2) + double(c3, c2)
          + conv(c2, c1, 2) + double(c2, emb))
  stages = basic(emb, emb) + basic(emb, c1) + sum(basic(a, a) + basic(a, b)
                                                  for a, b in zip(widths, widths[1:]))
  return (5 * unet + 4 * 2 * emb * (emb // 16) + attention_layers * 3 * (emb * emb + emb)
          + stages + basic(2 * emb, emb // 2) + conv(emb // 2, 1, 1) + 2 * conv(emb, 1, 1))


def test_paper_config_follows_the_released_model():
  config = dsanet_config.get_config('paper')
  assert (config.model.level, config.model.channels, config.model.attention_layers) == (
      'stride4', 256, 12)
  model = models.create_model(config.model)
  batch = {'frames': jnp.zeros((1, 3, 352, 352, 3))}
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), batch, train=False))
  params = shapes['params']
  count = lambda tree: sum(int(np.prod(v.shape)) for v in jax.tree.leaves(tree))  # pylint: disable=unnecessary-lambda-assignment
  assert count(params['encoder']) == 23_650_120
  # The released count less the conv biases in front of BatchNorm (two per U-Net decoder
  # step, five decoders) and the k biases: neither can change the output.
  unused = 5 * 2 * (1024 + 512 + 256) + 12 * 256
  assert count(params) - count(params['encoder']) == (
      _released_parameters_outside_the_encoder() - unused)
  # AFSA and the self-attention work at stride 4 (88x88 at 352 px) on 256 channels.
  assert params['afsa_memory']['previous_gate']['hidden']['kernel'].shape == (256, 16)
  assert params['lgsa']['self_attention11']['query']['kernel'].shape == (256, 256)
  captured = jax.eval_shape(lambda v: model.apply(
      v, batch, train=False, capture_intermediates=lambda m, _: isinstance(m, dsanet.AFSA))[1],
                            shapes)
  assert {x.shape for x in jax.tree.leaves(captured)} == {(1, 88, 88, 256)}


def test_paper_schedule_is_the_released_one():
  """Linear warm-up over one epoch (15 // 8 epochs; 4,000 steps), cosine decay, Adam with
  L2 weight decay 5e-4, gradients clipped to [-0.5, 0.5]."""
  config = dsanet_config.get_config('paper')
  schedule = optim.learning_rate_schedule(config)
  assert float(schedule(0)) == 0.0
  assert float(schedule(2000)) == pytest.approx(5e-5)
  assert float(schedule(4000)) == pytest.approx(1e-4)
  assert float(schedule(32000)) == pytest.approx(5e-5, rel=1e-4)
  assert float(schedule(60000)) == pytest.approx(0.0, abs=1e-9)
  assert (config.optimizer.name, config.optimizer.weight_decay) == ('adam', 5e-4)
  assert (config.optimizer.clip_value, config.optimizer.clip_norm) == (0.5, 0.0)
