"""STPFNet's memory encoder in STM's form (``usvjax/models/stpfnet_memory.py``): parity of
the encoder, its key and value heads and the memory read with a PyTorch module built as STM's
``Encoder_M`` / ``KV_M_r4`` / ``Memory`` (weights mapped from it), the mask at the first
layer, STM's initialisation of the mask convolutions, memory and query keys from heads of
their own, and the memory written by the memory encoder of each frame with its mask.
Gradients to every parameter: tests/test_stpfnet.py; streaming: tests/test_streaming.py."""
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import stpfnet as stpfnet_config
from usvjax import models
from usvjax.models import space_time_memory
from usvjax.models import stpfnet_memory
from usvjax.models.backbones import convert
from usvjax.models.backbones import resnet


def _first_layer_and_entry(encoder, variables, image, mask):
  """(the trunk's stem output 'stride2' after bn1 and ReLU, key, value), eval mode."""
  (key, value), state = encoder.apply(
      variables, image, mask, train=False, mutable=['intermediates'],
      capture_intermediates=lambda module, method: module.name == 'trunk')
  return state['intermediates']['trunk']['__call__'][0]['stride2'], key, value


def _torch_reference(torch, torchvision):
  """STM's memory side, written from its description (DESIGN.md), on a ResNet-18 trunk:
  conv1(f) + conv1_m(m) + conv1_o(o) before bn1, res2..res4, 3x3 key and value convs."""

  class MemoryEncoder(torch.nn.Module):
    def __init__(self):
      super().__init__()
      self.trunk = torchvision.models.resnet18(weights=None)
      self.conv1_m = torch.nn.Conv2d(1, 64, 7, stride=2, padding=3, bias=False)
      self.conv1_o = torch.nn.Conv2d(1, 64, 7, stride=2, padding=3, bias=False)
      self.key_head = torch.nn.Conv2d(256, 32, 3, padding=1)
      self.value_head = torch.nn.Conv2d(256, 128, 3, padding=1)

    def forward(self, f, m, o):
      t = self.trunk
      stem = t.relu(t.bn1(t.conv1(f) + self.conv1_m(m) + self.conv1_o(o)))
      r4 = t.layer3(t.layer2(t.layer1(t.maxpool(stem))))
      return stem, self.key_head(r4), self.value_head(r4)

  torch.manual_seed(0)
  module = MemoryEncoder()
  generator = torch.Generator().manual_seed(1)
  ranges = {'weight': (0.5, 1.5), 'bias': (-0.2, 0.2), 'running_mean': (-0.2, 0.2),
            'running_var': (0.5, 1.5)}  # Non-trivial norm parameters and statistics.
  norms = [m for m in module.modules() if isinstance(m, torch.nn.BatchNorm2d)]
  with torch.no_grad():
    for norm in norms:
      for name, (low, high) in ranges.items():
        getattr(norm, name).uniform_(low, high, generator=generator)
  return module.eval()


def _torch_read(torch, query, keys, values):
  """STM's Memory: softmax over all T*h*w memory positions of k_m . q / sqrt(D), then the
  weighted sum of values. query [B, D, h, w]; keys [B, D, T, h, w]; values [B, Dv, T, h, w]."""
  b, d, h, w = query.shape
  scores = torch.einsum('bdm,bdq->bmq', keys.reshape(b, d, -1), query.reshape(b, d, -1))
  weights = torch.softmax(scores / math.sqrt(d), dim=1)
  read = torch.einsum('bvm,bmq->bvq', values.reshape(b, values.shape[1], -1), weights)
  return read.reshape(b, -1, h, w)


def _nhwc(tensor) -> np.ndarray:
  return tensor.detach().numpy().transpose(0, 2, 3, 1)


def test_memory_encoder_and_read_match_stms_pytorch_modules():
  """Weights mapped from the PyTorch reference: the first layer (frame, mask and background
  summed before bn1), the memory key and value at res4, and the read of two memory frames per
  video by a query key agree with PyTorch's in eval mode."""
  torch = pytest.importorskip('torch')
  torchvision = pytest.importorskip('torchvision')
  reference = _torch_reference(torch, torchvision)
  rng = np.random.default_rng(0)
  frames = rng.random((4, 64, 64, 3), dtype=np.float32)  # 2 videos x 2 memory frames.
  masks = np.zeros((4, 64, 64, 1), np.float32)
  masks[:, 10:40, 16:50] = 1.0
  masks[1::2] = rng.random((2, 64, 64, 1), dtype=np.float32)  # Soft, as predicted masks.
  image = np.asarray(resnet.imagenet_normalize(frames))
  encoder = stpfnet_memory.MemoryEncoder('resnet18', 1.0, 'stride16', 32, 128)
  shapes = jax.eval_shape(lambda: encoder.init(jax.random.key(0), image, masks, train=False))

  def path_of(key, ndim):  # The heads' conv biases; everything else as a trunk's names.
    head = key.split('.')[0]
    return ('params', head, 'bias') if head.endswith('_head') and key.endswith('.bias') else (
        convert.flax_path(key, ndim))
  variables, report = convert.convert(
      {k: v.numpy() for k, v in reference.state_dict().items()}, shapes, path_of)
  assert not report.missing and not report.mismatched, report.summary()
  assert all(k.startswith(('trunk.fc.', 'trunk.layer4.')) or k.endswith('num_batches_tracked')
             for k in report.unused)  # STM's memory encoder ends at res4.

  stem, key, value = jax.jit(lambda v: _first_layer_and_entry(encoder, v, image, masks))(
      variables)
  chw = lambda x: torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))  # pylint: disable=unnecessary-lambda-assignment
  with torch.no_grad():
    t_stem, t_key, t_value = reference(chw(image), chw(masks), chw(1.0 - masks))
  for ours, theirs in ((stem, t_stem), (key, t_key), (value, t_value)):
    theirs = _nhwc(theirs)
    assert np.linalg.norm(ours - theirs) / np.linalg.norm(theirs) < 1e-4

  query = rng.standard_normal((2, 4, 4, 32)).astype(np.float32)
  per_video = lambda x: x.reshape((2, 2) + x.shape[1:])  # pylint: disable=unnecessary-lambda-assignment
  ours = space_time_memory.read(jnp.asarray(query), per_video(key), per_video(value),
                                jnp.ones((2, 2), bool))
  as_memory = lambda x: x.reshape(2, 2, *x.shape[1:]).transpose(1, 2)  # [B, C, T, h, w]  # pylint: disable=unnecessary-lambda-assignment
  with torch.no_grad():
    theirs = _nhwc(_torch_read(torch, chw(query), as_memory(t_key), as_memory(t_value)))
  np.testing.assert_allclose(ours, theirs, rtol=1e-3, atol=1e-4)


def test_mask_convolutions_are_initialised_as_stms_pytorch_default():
  """STM leaves conv1_m and conv1_o at PyTorch's Conv2d default: U(-1/7, 1/7) for 7x7x1."""
  torch = pytest.importorskip('torch')
  encoder = stpfnet_memory.MemoryEncoder('resnet18', 1.0, 'stride16', 32, 128)
  params = jax.jit(lambda: encoder.init(jax.random.key(3), jnp.zeros((1, 32, 32, 3)),
                                        jnp.zeros((1, 32, 32, 1)), train=False))()['params']
  theirs = torch.nn.Conv2d(1, 64, 7, stride=2, padding=3, bias=False).weight.detach().numpy()
  for name in ('conv1_m', 'conv1_o'):
    kernel = np.asarray(params[name]['kernel'])
    assert kernel.shape == (7, 7, 1, 64)
    for w in (kernel, theirs):
      assert 0.97 / 7 < np.abs(w).max() <= 1 / 7
      assert abs(w.std() / (1 / (7 * math.sqrt(3))) - 1) < 0.05
  assert not np.array_equal(params['conv1_m']['kernel'], params['conv1_o']['kernel'])


def test_the_mask_changes_the_memory_encoders_first_layer():
  """The mask enters at the first layer: another mask, same frame, changes the stem output
  (after bn1) and so the key and value; frame 1's mask is not just a late extra channel."""
  encoder = stpfnet_memory.MemoryEncoder('resnet18', 0.0625, 'stride16', 4, 8)
  rng = np.random.default_rng(0)
  image = jnp.asarray(rng.standard_normal((2, 32, 32, 3)), jnp.float32)
  box = np.zeros((2, 32, 32, 1), np.float32)
  box[:, 4:20, 8:24] = 1.0
  variables = jax.jit(lambda: encoder.init(jax.random.key(0), image, box, train=False))()
  run = jax.jit(lambda mask: _first_layer_and_entry(encoder, variables, image, mask))
  with_box, with_nothing = run(box), run(np.zeros_like(box))
  for a, b in zip(with_box, with_nothing):
    assert not np.allclose(a, b)


@pytest.fixture(scope='module')
def tiny():
  """(model, variables, batch, run): the tiny STPFNet (STM form) on 2 clips of 2 frames;
  ``run(variables)`` -> (state after frame 1, frame 2's query key, state after frame 2,
  [(image, mask) given to the memory encoder, per call])."""
  model = models.create_model(stpfnet_config.get_config('tiny').model)
  rng = np.random.default_rng(0)
  masks = np.zeros((2, 2, 32, 32, 1), np.float32)
  masks[:, :, 4:20, 6:24] = 1.0
  batch = {'frames': jnp.asarray(rng.random((2, 2, 32, 32, 1)), jnp.float32),
           'masks': jnp.asarray(masks)}
  variables = jax.jit(lambda: model.init(jax.random.key(0), batch, train=False))()

  @jax.jit
  def run(variables):
    seen = {'query_key': [], 'memory_inputs': []}

    def record(next_fun, args, kwargs, context):
      if context.method_name == 'spatial_fusion_read':
        seen['query_key'].append(args[2])
      elif context.module.name == 'memory_network' and context.method_name == '__call__':
        seen['memory_inputs'].append(args[:2])
      return next_fun(*args, **kwargs)
    with nn.intercept_methods(record):
      first, _ = model.apply(variables, batch['frames'][:, 0], batch['masks'][:, 0],
                             method='start')
      second, logits = model.apply(variables, first, batch['frames'][:, 1], method='step')
    return first, seen['query_key'][0], second, seen['memory_inputs'], logits
  return model, variables, batch, run


def _perturbed(variables, *path):
  params = jax.tree.map(lambda x: x, variables['params'])
  node = params
  for name in path[:-1]:
    node = node[name]
  node[path[-1]] = jax.tree.map(lambda x: x + 0.5, node[path[-1]])
  return {**variables, 'params': params}


def test_memory_and_query_keys_come_from_heads_of_their_own(tiny):
  """The memory keys (frames 1 and 2) are the memory encoder's key head's, the query key the
  query encoder's: changing one head changes only its own keys (one shared head, or the
  query key written into the memory, would change both)."""
  _, variables, _, run = tiny
  _, query_key, state = run(variables)[:3]
  changed_query = run(_perturbed(variables, 'key_head'))
  # Frame 1 is memorised with its given mask; frame 2 with its prediction, which the query
  # key changes through the read, so only frame 1's memory key must stay as it was.
  np.testing.assert_array_equal(changed_query[2]['keys'][:, 0], state['keys'][:, 0])
  assert not np.allclose(changed_query[1], query_key)
  changed_memory = run(_perturbed(variables, 'memory_network', 'key_head'))
  np.testing.assert_array_equal(changed_memory[1], query_key)
  for t in range(2):
    assert not np.allclose(changed_memory[2]['keys'][:, t], state['keys'][:, t])


def test_each_frame_is_memorised_by_the_memory_encoder_with_its_mask(tiny):
  """Frame 1 with its given mask, frame 2 with its predicted probabilities, each through the
  memory encoder (not the query encoder), into memory slots 0 and 1; frame 1 is not queried."""
  model, variables, batch, run = tiny
  first, _, second, inputs, logits = run(variables)
  assert len(inputs) == 2
  for t, mask in enumerate((batch['masks'][:, 0], jax.nn.sigmoid(logits))):
    image, given = inputs[t]
    np.testing.assert_allclose(image, resnet.imagenet_normalize(
        jnp.broadcast_to(batch['frames'][:, t], batch['frames'].shape[:1] + (32, 32, 3))),
                               rtol=1e-6)
    np.testing.assert_allclose(given, mask, rtol=1e-6)
    key, value = jax.jit(lambda i, m: model.apply(
        variables, i, m, method=lambda module, i, m: module.memory_network(i, m, train=False))
                         )(image, given)
    np.testing.assert_allclose(second['keys'][:, t], key, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(second['values'][:, t], value, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(first['valid'], [[True, False, False]] * 2)


def test_imagenet_weights_load_into_the_query_encoder_and_the_memory_trunk(tmp_path):
  """``init.target='encoder,memory_network/trunk'`` (the config's): one converted ResNet
  into both; the shared form's target is the encoder alone."""
  # pylint: disable=g-import-not-at-top
  import helpers
  from flax import traverse_util
  from usvjax import tasks
  from usvjax.core import parallel
  from usvjax.core import state as state_lib
  from usvjax.models.backbones import convert
  config = helpers.load_config('stpfnet', '')
  assert stpfnet_config.get_config('tiny,shared_memory').init.target == 'encoder'
  shapes = state_lib.abstract_variables(  # Shapes only: nothing to compile.
      models.create_model(config.model),
      state_lib.init_batch(config, tasks.batch_spec(config, True)), parallel.create_mesh())
  zeros = jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), shapes)
  state = state_lib.TrainState(step=0, opt_state=None, **zeros)
  resnet = {c: jax.tree.map(lambda x: x + 1.0, zeros[c]['encoder'])  # Unlike the zeros.
            for c in ('params', 'batch_stats')}
  weights = convert.save_converted(resnet, str(tmp_path / 'resnet'))
  loaded = traverse_util.flatten_dict(
      state_lib.load_pretrained(state, weights, config.init.target).params, sep='/')
  trunk = [k for k in loaded if k.startswith('memory_network/trunk/')]
  assert trunk and all((loaded[k] == 1).all() for k in trunk)
  assert all((loaded[k] == 1).all() for k in loaded if k.startswith('encoder/'))
  assert (loaded['memory_network/key_head/kernel'] == 0).all()  # Heads keep their init.
