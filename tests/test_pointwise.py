"""1x1 convolutions as matrix products (usvjax/models/backbones/pointwise.py)."""
import collections

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from usvjax.models.backbones import pointwise
from usvjax.models.backbones import resnet

NHWC = ('NHWC', 'HWIO', 'NHWC')


def _primitives(fn, *args) -> collections.Counter:
  """How often each primitive occurs in ``fn``'s jaxpr."""
  jaxpr = jax.make_jaxpr(fn)(*args).jaxpr
  return collections.Counter(eqn.primitive.name for eqn in jaxpr.eqns)


@pytest.mark.parametrize('stride', [1, 2])
def test_a_pointwise_convolution_and_its_gradients_equal_xlas(stride):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((2, 7, 6, 5)), jnp.float32)  # Odd size: strides cut.
  w = jnp.asarray(rng.standard_normal((1, 1, 5, 3)), jnp.float32)
  args = ((stride, stride), ((0, 0), (0, 0)))
  ours = lambda x, w: pointwise.conv_general_dilated(x, w, *args, dimension_numbers=NHWC)
  xla = lambda x, w: lax.conv_general_dilated(x, w, *args, dimension_numbers=NHWC)
  assert 'dot_general' in _primitives(ours, x, w)
  assert 'conv_general_dilated' not in _primitives(ours, x, w)
  out, vjp = jax.vjp(ours, x, w)
  want, want_vjp = jax.vjp(xla, x, w)
  assert out.shape == want.shape == (2, -(-7 // stride), -(-6 // stride), 3)
  np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)
  cotangent = jnp.asarray(rng.standard_normal(out.shape), jnp.float32)
  for got, expected in zip(vjp(cotangent), want_vjp(cotangent)):
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('kernel,padding,groups,dimension_numbers', [
    ((3, 3), ((1, 1), (1, 1)), 1, NHWC),       # Not 1x1.
    ((1, 1), ((1, 1), (1, 1)), 1, NHWC),       # Padded.
    ((1, 1), ((0, 0), (0, 0)), 5, NHWC),       # Grouped (depthwise).
    ((1, 1), ((0, 0), (0, 0)), 1, ('NCHW', 'OIHW', 'NCHW'))])  # Channels first.
def test_anything_else_is_left_to_xla_unchanged(kernel, padding, groups, dimension_numbers):
  x = jnp.ones((1, 5, 4, 4) if dimension_numbers[0] == 'NCHW' else (1, 4, 4, 5))
  w = jnp.ones(kernel + (5 // groups, 5) if dimension_numbers[1] == 'HWIO' else
               (5, 5 // groups) + kernel)
  call = lambda fn: fn(x, w, (1, 1), padding, dimension_numbers=dimension_numbers,
                       feature_group_count=groups)
  assert 'conv_general_dilated' in _primitives(lambda: call(pointwise.conv_general_dilated))
  np.testing.assert_array_equal(call(pointwise.conv_general_dilated),
                                call(lax.conv_general_dilated))


def test_a_resnet_computes_the_same_with_and_without_the_switch():
  model = resnet.ResNet('resnet50', width=0.25)
  x = jax.random.uniform(jax.random.key(1), (2, 32, 32, 3))
  variables = model.init(jax.random.key(0), x, train=False)
  # A new function per setting: JAX caches traces by function, not by context.
  forward = lambda v: model.apply(v, x, train=False)['stride32']
  matmuls = _primitives(forward, variables)
  with pointwise.as_matmuls(False):
    forward_xla = lambda v: model.apply(v, x, train=False)['stride32']
    as_convolutions = forward_xla(variables)
    convolutions = _primitives(forward_xla, variables)
  # ResNet-50: 53 convolutions, of which 36 are 1x1 (two per bottleneck, four shortcuts).
  assert convolutions['conv_general_dilated'] == 53
  assert matmuls['conv_general_dilated'] == 53 - 36
  assert matmuls['dot_general'] - convolutions['dot_general'] == 36
  np.testing.assert_allclose(forward(variables), as_convolutions, rtol=1e-4, atol=1e-5)
