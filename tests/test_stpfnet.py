"""STPFNet: the memory read against Eqs. 1-2 in NumPy (with padded memory slots), the
bounded memory, MSFF against Eqs. 6-9, the SFM prior on the path the forward pass takes,
STM's read output, gradients to every parameter, BatchNorm statistics of frames and prior
images kept apart, and the paper-size shapes. Streaming: tests/test_streaming.py."""
import flax.linen as nn
from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import stpfnet as stpfnet_config
from usvjax import models
from usvjax.errors import ConfigError
from usvjax.models import space_time_memory
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
  ours = np.asarray(space_time_memory.read(*(jnp.asarray(x, jnp.float32) for x in
                                         (query, keys, values)), jnp.asarray(valid)))
  np.testing.assert_allclose(ours[:1], _read_numpy(query[:1], keys[:1], values[:1]),
                             rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(ours[1:], _read_numpy(query[1:], keys[1:, :2], values[1:, :2]),
                             rtol=1e-4, atol=1e-5)
  # Whatever the padded slot holds, the result is the same.
  keys[1, 2], values[1, 2] = 1e3, -1e3
  again = space_time_memory.read(*(jnp.asarray(x, jnp.float32) for x in (query, keys, values)),
                              jnp.asarray(valid))
  np.testing.assert_allclose(again, ours, rtol=1e-6)


def test_memory_keeps_the_first_the_previous_and_every_kth_frame():
  """memory_size 4, memory_every 3: which frames each new frame reads."""
  count, head = jnp.zeros(1, jnp.int32), jnp.zeros(1, jnp.int32)
  slots = [None] * 4
  read_by = {}
  for frame in range(12):
    read_by[frame] = sorted(f for f in slots if f is not None)
    slot, head = space_time_memory.slots(count, head, 4, 3)
    slots[int(slot[0])] = frame
    count = count + 1
  assert read_by[1] == [0]
  assert read_by[2] == [0, 1]
  assert read_by[4] == [0, 3]             # Frame 3 is kept; frame 2 was only 'previous'.
  assert read_by[7] == [0, 3, 6]
  assert read_by[10] == [0, 3, 6, 9]      # The previous frame, 9, is a kept one.
  assert read_by[11] == [0, 6, 9, 10]     # Four slots: 3 made way.


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


def _tiny_model(**overrides):
  config = stpfnet_config.get_config('tiny')
  config.model.update(overrides)
  return models.create_model(config.model)


def _clip(t=3, s=32, seed=0):
  """Two videos of t frames [2, t, s, s, 1], a different box mask in each."""
  rng = np.random.default_rng(seed)
  masks = np.zeros((2, t, s, s, 1), np.float32)
  masks[0, :, 4:16, 6:20] = 1.0
  masks[1, :, 12:28, 10:24] = 1.0
  return {'frames': jnp.asarray(rng.random((2, t, s, s, 1)), jnp.float32),
          'masks': jnp.asarray(masks), 'valid': jnp.ones((2, t), bool)}


@pytest.fixture(scope='module')
def tiny():
  """(model, variables, batch): the tiny config on 2 clips of 3 frames, 32x32."""
  model, batch = _tiny_model(), _clip()
  variables = jax.jit(lambda: model.init(jax.random.key(0), batch, train=False))()
  return model, variables, batch


@pytest.fixture(scope='module')
def probe(tiny):
  """The eval-mode clip forward pass of ``tiny``, with what its modules got and gave:
  {'outputs', 'sfm': [(frame, prior, query_key, previous_key, z) per predicted frame],
  'msff': [(y, z, w, X)], 'query_value': [V^C], 'decoder': [read at its input],
  'memory': [(K^P, V^P) per memorised frame]}."""
  model, variables, batch = tiny

  def run(variables, batch):
    seen = {'sfm': [], 'msff': [], 'query_value': [], 'decoder': [], 'memory': []}

    def record(next_fun, args, kwargs, context):
      out = next_fun(*args, **kwargs)
      name, method = context.module.name, context.method_name
      if method == 'spatial_fusion_read':
        seen['sfm'].append(tuple(args[:4]) + (out,))
      elif (name, method) == ('msff', '__call__'):
        seen['msff'].append(tuple(args) + (out,))
      elif (name, method) == ('query_value_head', '__call__'):
        seen['query_value'].append(out)
      elif (name, method) == ('decoder', '__call__'):
        seen['decoder'].append(args[0]['stride32'])
      elif (name, method) == ('memory_network', '__call__'):
        seen['memory'].append(out)
      return out
    with nn.intercept_methods(record):
      outputs = model.apply(variables, batch, train=False)
    return dict(seen, outputs=outputs)
  return jax.jit(run)(variables, batch)


def test_spatial_prior_of_ones_is_no_prior_and_of_zeros_is_a_black_frame(tiny):
  model, variables, batch = tiny
  frame = batch['frames'][:, 1]
  key = jax.random.normal(jax.random.key(1), (2, 2, 2, 2))
  previous_key = jax.random.normal(jax.random.key(2), (2, 2, 2, 2))
  unmasked = _tiny_model(mask_prior=False)
  read = {m: jax.jit(lambda f, p, m=m: m.apply(variables, f, p, key, previous_key,
                                                method='spatial_fusion_read'))
          for m in (model, unmasked)}
  ones, zeros = jnp.ones(frame.shape[:3] + (1,)), jnp.zeros(frame.shape[:3] + (1,))
  np.testing.assert_allclose(read[model](frame, ones), read[unmasked](frame, zeros), rtol=1e-6)
  np.testing.assert_allclose(read[model](frame, zeros),
                             read[unmasked](jnp.zeros_like(frame), ones), rtol=1e-6)
  assert not np.allclose(read[model](frame, zeros), read[model](frame, ones))


def test_the_forward_pass_fuses_the_spatial_prior_read_of_the_previous_prediction(tiny, probe):
  """The SFM tested above is the one the forward pass runs: for frame 2 it multiplies frame 2
  by frame 1's given mask, for frame 3 by frame 2's prediction, reads with the previous
  frame's key (the memory key it was written with), and its z is what MSFF fuses."""
  _, _, batch = tiny
  sfm, msff, outputs = probe['sfm'], probe['msff'], probe['outputs']
  assert len(sfm) == len(msff) == 2
  previous_masks = [batch['masks'][:, 0], jax.nn.sigmoid(outputs['aux_logits'][:, 0])]
  for t, ((frame, prior, key, previous_key, z), (_, fused_z, _, _)) in enumerate(zip(sfm, msff)):
    np.testing.assert_array_equal(frame, batch['frames'][:, t + 1])
    np.testing.assert_allclose(prior, previous_masks[t], rtol=1e-6)
    np.testing.assert_array_equal(fused_z, z)
    np.testing.assert_array_equal(previous_key, probe['memory'][t][0])
    assert key.shape == (2, 2, 2, 2)  # The read at stride 16 of 32x32 frames: 2x2.


def test_the_read_is_the_fused_read_and_the_query_frames_own_value(probe):
  """STM's read output: [X, V^C], the fused memory read and the query's value."""
  assert len(probe['decoder']) == len(probe['msff']) == len(probe['query_value']) == 2
  for decoder_input, msff, value in zip(probe['decoder'], probe['msff'], probe['query_value']):
    np.testing.assert_array_equal(decoder_input, jnp.concatenate([msff[-1], value], axis=-1))
    assert not np.allclose(value, 0)


def test_the_training_loss_reaches_every_parameter(tiny):
  """BCE of frames 2 and 3 (Eq. 12) through the training forward pass: a gradient for every
  parameter array, the encoder's (shared by frames and prior images) and every one of STM's
  memory encoder (its mask and background convolutions, trunk and heads) included."""
  model, variables, batch = tiny

  def bce(logits, target):
    return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, target))

  @jax.jit
  def gradients(params):
    def loss(p):
      outputs, _ = model.apply({'params': p, 'batch_stats': variables['batch_stats']}, batch,
                               train=True, mutable=['batch_stats'])
      return bce(outputs['logits'], batch['masks'][:, 2]) + bce(outputs['aux_logits'][:, 0],
                                                                  batch['masks'][:, 1])
    return jax.grad(loss)(params)

  flat = traverse_util.flatten_dict(gradients(variables['params']), sep='/')
  dead = [name for name, g in flat.items() if not np.any(np.asarray(g))]
  assert not dead, dead
  assert len(flat) > 100
  memory = [name for name in flat if name.startswith('memory_network/')]
  assert {f'memory_network/{n}/kernel' for n in ('conv1_m', 'conv1_o', 'key_head', 'value_head',
                                                 'trunk/conv1')} <= set(memory)
  assert any('/trunk/layer3_' in name for name in memory)


def test_without_tfm_nothing_reads_the_memory_and_the_loss_trains_every_parameter():
  """``no_tfm``: no y (no MSFF weights for it), no memory values (no head), the SFM read
  still fused; every parameter that exists gets a gradient; without SFM too it is refused."""
  model, batch = _tiny_model(temporal_read=False), _clip()
  variables = jax.jit(lambda: model.init(jax.random.key(0), batch, train=False))()
  params = variables['params']
  assert 'memory_value_head' not in params and 'y_fc1' not in params['msff']
  assert 'value_head' not in params['memory_network'] and 'key_head' in params['memory_network']
  assert 'z_fc1' in params['msff'] and 'prior_value_head' in params

  def loss(p):
    outputs, _ = model.apply({'params': p, 'batch_stats': variables['batch_stats']}, batch,
                             train=True, mutable=['batch_stats'])
    return jnp.mean(optax.sigmoid_binary_cross_entropy(outputs['logits'], batch['masks'][:, 2]))
  flat = traverse_util.flatten_dict(jax.jit(jax.grad(loss))(params), sep='/')
  dead = [name for name, g in flat.items() if not np.any(np.asarray(g))]
  assert not dead, dead
  with pytest.raises(ConfigError, match='temporal_read=False and spatial_fusion=False'):
    _tiny_model(temporal_read=False, spatial_fusion=False).init(
        jax.random.key(0), batch, train=False)


def test_frames_and_prior_images_have_separate_batchnorm_statistics(tiny):
  """In training, the frames' BatchNorm statistics are of frames only: changing the masks
  (so the prior images P_m * C_f) leaves the encoder's running statistics unchanged and
  changes the prior encoder's, so inference normalises each as training did."""
  model, variables, batch = tiny
  update = jax.jit(lambda masks: model.apply(variables, dict(batch, masks=masks), train=True,
                                             mutable=['batch_stats'])[1]['batch_stats'])
  boxes, everything = update(batch['masks']), update(jnp.ones_like(batch['masks']))
  same = jax.tree.map(np.array_equal, boxes['encoder'], everything['encoder'])
  assert all(jax.tree.leaves(same))
  assert not all(jax.tree.leaves(jax.tree.map(np.allclose, boxes['prior_encoder'],
                                              everything['prior_encoder'])))
  # The frames' statistics did move (they are not frozen).
  moved = jax.tree.map(np.allclose, boxes['encoder'], variables['batch_stats']['encoder'])
  assert not all(jax.tree.leaves(moved))


def _paper_shapes(**overrides):
  config = stpfnet_config.get_config('paper')
  config.model.update(overrides)
  model = models.create_model(config.model)
  batch = {'frames': jnp.zeros((1, 3, 352, 352, 3)), 'masks': jnp.zeros((1, 3, 352, 352, 1))}
  return model, batch, jax.eval_shape(lambda: model.init(jax.random.key(0), batch, train=False))


def _count(tree) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def test_full_size_model_reads_res4_as_stm():
  """The paper config: ResNet-50 query encoder, keys 128 and values 512 from res4 (C = 1024,
  stride 16), the decoder fed [X, V^C] (1024 channels) beside res3's 512; w from layer4
  ("+4"); STM's memory encoder: a ResNet-50 to res4 (torchvision's without layer4 and fc)
  with 7x7 mask and background convolutions and key and value heads of its own."""
  model, batch, shapes = _paper_shapes()
  params = shapes['params']
  assert _count(params['encoder']) == 23_508_032  # torchvision ResNet-50 without its fc.
  assert params['key_head']['kernel'].shape == (3, 3, 1024, 128)
  assert params['query_value_head']['kernel'].shape == (3, 3, 1024, 512)
  assert params['prior_value_head']['kernel'].shape == (3, 3, 1024, 512)
  assert params['w_head']['kernel'].shape == (1, 1, 2048, 128)
  assert params['decoder']['block0_conv0']['Conv_0']['kernel'].shape[2] == 1024 + 512
  memory = params['memory_network']
  assert _count(memory['trunk']) == 8_543_296 and 'layer4_0' not in memory['trunk']
  assert memory['conv1_m']['kernel'].shape == memory['conv1_o']['kernel'].shape == (7, 7, 1, 64)
  assert memory['key_head']['kernel'].shape == (3, 3, 1024, 128)
  assert memory['value_head']['kernel'].shape == (3, 3, 1024, 512)
  assert 'memory_value_head' not in params
  assert 'prior_encoder' not in params and 'prior_encoder' in shapes['batch_stats']
  out = jax.eval_shape(lambda v: model.apply(v, batch, train=False), shapes)
  assert out['logits'].shape == (1, 352, 352, 1)
  assert out['aux_logits'].shape == (1, 1, 352, 352, 1)
  assert _count(params) == 54_020_745  # docs/segmentation.md; 44,296,009 when 'shared'.


def test_full_size_shared_memory_is_the_form_before_issue_41():
  """``memory_encoder='shared'``: no memory encoder; the mask joins r at the memory value
  head (1024 + 1 input channels); the memory key is the query's."""
  _, _, shapes = _paper_shapes(memory_encoder='shared')
  params = shapes['params']
  assert 'memory_network' not in params
  assert params['memory_value_head']['kernel'].shape == (3, 3, 1025, 512)  # [r, mask]
  assert _count(params) == 44_296_009
