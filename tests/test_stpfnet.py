"""STPFNet: the memory read against Eqs. 1-2 in NumPy (with padded memory slots), the
spatial prior of the SFM, MSFF against Eqs. 6-9, the bounded memory, and streaming."""
import jax
import jax.numpy as jnp
import numpy as np

from configs import stpfnet as stpfnet_config
from usvjax import models
from usvjax import streaming
from usvjax.models import stpfnet


def _read_numpy(query, keys, values):
  """Eqs. 1-2 written out: softmax over every memory position, then the weighted values."""
  b, h, w, ck = query.shape
  q = query.reshape(b, h * w, ck)
  k = keys.reshape(b, -1, ck)
  v = values.reshape(b, k.shape[1], -1)
  out = np.zeros((b, h * w, v.shape[-1]))
  for n in range(b):
    for i in range(h * w):
      s = np.array([q[n, i] @ k[n, m] / np.sqrt(ck) for m in range(k.shape[1])])
      p = np.exp(s - s.max()) / np.exp(s - s.max()).sum()
      out[n, i] = p @ v[n]
  return out.reshape(b, h, w, -1)


def test_memory_read_matches_equations_1_and_2_and_ignores_padded_slots():
  rng = np.random.default_rng(0)
  query = rng.standard_normal((2, 2, 3, 4))
  keys, values = rng.standard_normal((2, 3, 2, 2, 4)), rng.standard_normal((2, 3, 2, 2, 5))
  valid = np.array([[True, True, True], [True, True, False]])  # Video 2: two frames.
  ours = np.asarray(stpfnet.memory_read(*(jnp.asarray(x, jnp.float32) for x in
                                         (query, keys, values)), jnp.asarray(valid)))
  np.testing.assert_allclose(ours[:1], _read_numpy(query[:1], keys[:1], values[:1]),
                             rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(ours[1:], _read_numpy(query[1:], keys[1:, :2], values[1:, :2]),
                             rtol=1e-4, atol=1e-5)
  # Whatever the padded slot holds, the result is the same.
  keys[1, 2], values[1, 2] = 1e3, -1e3
  again = stpfnet.memory_read(*(jnp.asarray(x, jnp.float32) for x in (query, keys, values)),
                              jnp.asarray(valid))
  np.testing.assert_allclose(again, ours, rtol=1e-6)


def test_memory_keeps_the_first_the_previous_and_every_kth_frame():
  """memory_size 4, memory_every 3: which frames each new frame reads."""
  count, head = jnp.zeros(1, jnp.int32), jnp.zeros(1, jnp.int32)
  slots = [None] * 4
  read_by = {}
  for frame in range(12):
    read_by[frame] = sorted(f for f in slots if f is not None)
    slot, head = stpfnet.memory_slots(count, head, 4, 3)
    slots[int(slot[0])] = frame
    count = count + 1
  assert read_by[1] == [0]
  assert read_by[2] == [0, 1]
  assert read_by[4] == [0, 3]             # Frame 3 is kept; frame 2 was only 'previous'.
  assert read_by[7] == [0, 3, 6]
  assert read_by[10] == [0, 3, 6, 9]      # The previous frame, 9, is a kept one.
  assert read_by[11] == [0, 6, 9, 10]     # Four slots: 3 made way.


def _tiny_model(**overrides):
  config = stpfnet_config.get_config('tiny')
  config.model.update(overrides)
  return models.create_model(config.model), config


def _clip(t=4, s=64, seed=0):
  rng = np.random.default_rng(seed)
  masks = np.zeros((2, t, s, s, 1), np.float32)
  masks[:, :, 10:30, 12:40] = 1.0
  return {'frames': jnp.asarray(rng.random((2, t, s, s, 1)), jnp.float32),
          'masks': jnp.asarray(masks), 'valid': jnp.ones((2, t), bool)}


def test_spatial_prior_of_ones_is_no_prior_and_of_zeros_is_a_black_frame():
  model, _ = _tiny_model()
  batch = _clip(t=2)
  variables = jax.jit(lambda: model.init(jax.random.key(0), batch, train=False))()
  frame = batch['frames'][:, 1]
  key = jax.random.normal(jax.random.key(1), (2, 2, 2, 4))
  previous_key = jax.random.normal(jax.random.key(2), (2, 2, 2, 4))

  unmasked, _ = _tiny_model(mask_prior=False)
  read = {m: jax.jit(lambda f, p, m=m: m.apply(variables, f, p, key, previous_key,
                                                method='spatial_fusion_read'))
          for m in (model, unmasked)}
  ones, zeros = jnp.ones(frame.shape[:3] + (1,)), jnp.zeros(frame.shape[:3] + (1,))
  np.testing.assert_allclose(read[model](frame, ones), read[unmasked](frame, zeros), rtol=1e-6)
  np.testing.assert_allclose(read[model](frame, zeros),
                             read[unmasked](jnp.zeros_like(frame), ones), rtol=1e-6)
  assert not np.allclose(read[model](frame, zeros), read[model](frame, ones))


def test_msff_matches_equations_6_to_9():
  rng = np.random.default_rng(0)
  y, z = rng.standard_normal((2, 1, 2, 3, 8)).astype(np.float32)
  w = rng.standard_normal((1, 2, 3, 2)).astype(np.float32)
  msff = stpfnet.MSFF(reduction=2)
  params = msff.init(jax.random.key(0), y, z, w)['params']

  def weights(x, name):  # Phi(avg(x) (+) max(x)): two linear layers, ReLU between, sigmoid.
    d = np.concatenate([x.mean(axis=(1, 2)), x.max(axis=(1, 2))], axis=-1)
    fc1, fc2 = params[f'{name}_fc1'], params[f'{name}_fc2']
    hidden = np.maximum(d @ np.asarray(fc1['kernel']) + np.asarray(fc1['bias']), 0)
    return 1 / (1 + np.exp(-(hidden @ np.asarray(fc2['kernel']) + np.asarray(fc2['bias']))))

  lift = params['lift_w']
  lifted_w = (weights(w, 'w')[:, None, None] * w) @ np.asarray(lift['kernel'])[0, 0]
  expected = (weights(y, 'y')[:, None, None] * y + weights(z, 'z')[:, None, None] * z
              + lifted_w + np.asarray(lift['bias']))
  np.testing.assert_allclose(msff.apply({'params': params}, y, z, w), expected, rtol=1e-5,
                             atol=1e-6)


def test_streaming_gives_the_outputs_of_the_clip_forward_pass():
  """Frames 2..T of a clip: ``__call__`` (training's unrolled loop) and the jitted stream
  (evaluation and segment_video) agree, on a memory that has to drop frames."""
  config = stpfnet_config.get_config('tiny')
  config.model.update(memory_size=2, memory_every=2)
  model = models.create_model(config.model)
  batch = _clip(t=5)
  variables = jax.jit(lambda: model.init(jax.random.key(0), batch, train=False))()
  clip = jax.jit(lambda v: model.apply(v, batch, train=False))(variables)
  stream = streaming.make_stream(model, variables, config.input.clip_length)
  assert isinstance(stream, streaming.StateStream)
  np.testing.assert_array_equal(stream.start(batch['frames'][:, 0], batch['masks'][:, 0]),
                                batch['masks'][:, 0])
  streamed = [stream.step(batch['frames'][:, t]) for t in range(1, 5)]
  expected = list(jnp.moveaxis(clip['aux_logits'], 1, 0)) + [clip['logits']]
  for got, logits in zip(streamed, expected):
    np.testing.assert_allclose(got, jax.nn.sigmoid(logits), rtol=1e-4, atol=1e-5)


def test_full_size_model_is_resnet50_with_memory_heads():
  config = stpfnet_config.get_config('paper')
  model = models.create_model(config.model)
  batch = {'frames': jnp.zeros((1, 3, 352, 352, 3)), 'masks': jnp.zeros((1, 3, 352, 352, 1))}
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), batch, train=False))
  params = shapes['params']
  count = lambda tree: sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))  # pylint: disable=unnecessary-lambda-assignment
  assert count(params['encoder']) == 23_508_032  # torchvision ResNet-50 without its fc.
  assert params['key_head']['kernel'].shape == (3, 3, 2048, 256)           # C/8
  assert params['memory_value_head']['kernel'].shape == (3, 3, 2049, 1024)  # [r, mask] -> C/2
  assert params['prior_value_head']['kernel'].shape == (3, 3, 2048, 1024)
  assert params['w_head']['kernel'].shape == (1, 1, 2048, 256)
  out = jax.eval_shape(lambda v: model.apply(v, batch, train=False), shapes)
  assert out['logits'].shape == (1, 352, 352, 1)
  assert out['aux_logits'].shape == (1, 1, 352, 352, 1)
  print(f'paper: {count(params):,} parameters')  # Reported in the notes.
