"""Transposed convolutions as sub-pixel convolutions equal lax.conv_transpose and
nn.ConvTranspose: outputs, gradients and parameters."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from usvjax.models import subpixel


def _reference(x, kernel, strides, padding, transpose_kernel):
  return lax.conv_transpose(x, kernel, strides, padding,
                            dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
                            transpose_kernel=transpose_kernel,
                            precision=lax.Precision.HIGHEST)


@pytest.mark.parametrize('kernel_size,strides,padding,transpose_kernel', [
    ((3, 3), (2, 2), ((1, 2), (1, 2)), True),   # FLA-Net's heatmap head (PyTorch p=1, op=1).
    ((2, 2), (2, 2), 'SAME', False),            # DSANet's up-sampling.
    ((3, 2), (2, 3), 'SAME', False),
    ((4, 3), (2, 2), 'VALID', True),
    ((3, 3), (3, 2), ((0, 1), (2, 0)), False),  # Uneven phases: outputs cropped.
    ((1, 1), (3, 3), 'SAME', False),            # Phases no tap reaches: zeros.
    ((3, 3), (1, 1), 'SAME', True),             # Stride 1: an ordinary convolution.
])
def test_sub_pixel_convolutions_equal_the_dilated_convolution(kernel_size, strides, padding,
                                                              transpose_kernel):
  x = jax.random.normal(jax.random.key(0), (2, 5, 4, 3))
  channels = (6, 3) if transpose_kernel else (3, 6)  # [.., C_out, C_in] when transposed.
  kernel = jax.random.normal(jax.random.key(1), kernel_size + channels)
  expected = _reference(x, kernel, strides, padding, transpose_kernel)
  with jax.default_matmul_precision('highest'):
    got = subpixel.conv_transpose(x, kernel, strides, padding, transpose_kernel)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    cotangent = jax.random.normal(jax.random.key(2), expected.shape)  # Gradients too.
    ours = jax.vjp(lambda a, k: subpixel.conv_transpose(a, k, strides, padding,
                                                        transpose_kernel), x, kernel)[1]
    theirs = jax.vjp(lambda a, k: _reference(a, k, strides, padding, transpose_kernel),
                     x, kernel)[1]
    for g, h in zip(ours(cotangent), theirs(cotangent)):
      np.testing.assert_allclose(g, h, rtol=1e-4, atol=1e-4)


def test_the_layer_is_flaxs_with_the_same_parameters_and_outputs():
  x = jax.random.normal(jax.random.key(0), (2, 6, 6, 8))
  for kwargs in ({'padding': ((1, 2), (1, 2)), 'transpose_kernel': True},
                 {'padding': 'SAME'}, {'padding': 1}):
    ours = subpixel.ConvTranspose(4, (3, 3), (2, 2), **kwargs)
    flax_layer = nn.ConvTranspose(4, (3, 3), (2, 2), **kwargs)
    variables = flax_layer.init(jax.random.key(3), x)
    variables = jax.tree.map(lambda v: v + 0.1, variables)  # A non-zero bias.
    assert (jax.tree.map(jnp.shape, ours.init(jax.random.key(3), x)) ==
            jax.tree.map(jnp.shape, variables))
    with jax.default_matmul_precision('highest'):
      np.testing.assert_allclose(ours.apply(variables, x), flax_layer.apply(variables, x),
                                 rtol=1e-5, atol=1e-5)
