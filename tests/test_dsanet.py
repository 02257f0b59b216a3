"""DSANet: AFSA against a NumPy evaluation of Eqs. 1-3, the channel reassembly of Eq. 5,
the structure loss against hand-computed values, and the auxiliary supervision of Eq. 6."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import dsanet as dsanet_config
from usvjax import losses
from usvjax import models
from usvjax.models import dsanet
from usvjax.loss_terms import auxiliary_frames
from usvjax.tasks.segmentation import SegmentationTask


def _afsa_numpy(previous, current, mode):
  """Eqs. 1-3 with loops over channels (or positions), as the paper writes them."""
  b, h, w, c = current.shape
  p, f = previous.reshape(b, h * w, c), current.reshape(b, h * w, c)
  if mode == 'channel':  # S_i: cosine of channel i's spatial responses.
    s = np.stack([[p[n, :, i] @ f[n, :, i] / (np.linalg.norm(p[n, :, i]) * np.linalg.norm(f[n, :, i]))
                   for i in range(c)] for n in range(b)])[:, None, :]
  else:  # S_j: cosine over channels at position j.
    s = np.stack([[p[n, j] @ f[n, j] / (np.linalg.norm(p[n, j]) * np.linalg.norm(f[n, j]))
                   for j in range(h * w)] for n in range(b)])[:, :, None]
  f_ref, p_ref = s * f, s * p
  out = p_ref.mean(axis=1, keepdims=True) * f_ref * f_ref.mean(axis=1, keepdims=True)
  return out.reshape(b, h, w, c)


@pytest.mark.parametrize('mode', ['channel', 'pixel'])
def test_afsa_matches_equations_1_to_3(mode):
  rng = np.random.default_rng(0)
  previous, current = rng.standard_normal((2, 2, 3, 5, 4))
  ours = dsanet.afsa(jnp.asarray(previous, jnp.float32), jnp.asarray(current, jnp.float32), mode)
  np.testing.assert_allclose(ours, _afsa_numpy(previous, current, mode), rtol=1e-4, atol=1e-6)
  # Identical frames: S = 1, so F' = F.
  same = dsanet.similarity(jnp.asarray(current), jnp.asarray(current), mode)
  np.testing.assert_allclose(same, 1.0, rtol=1e-5)


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


def test_auxiliary_losses_supervise_the_two_previous_frames():
  config = dsanet_config.get_config('tiny').task
  task = SegmentationTask(config, 1, auxiliary_frames.create(config, 1))
  masks = np.zeros((1, 3, 4, 4, 1), np.float32)
  masks[0, 0, :2] = 1.0  # t-2: top half.
  masks[0, 1, :, :2] = 1.0  # t-1: left half.
  masks[0, 2, 1:3, 1:3] = 1.0  # t: centre.
  as_logits = lambda m: 40.0 * (2 * m - 1)  # pylint: disable=unnecessary-lambda-assignment
  batch = {'masks': jnp.asarray(masks), 'valid': jnp.ones((1, 3), bool)}
  right = {'logits': as_logits(masks[:, 2]), 'aux_logits': as_logits(masks[:, :2])}
  loss, parts = task.loss(right, batch)
  assert float(loss) < 1e-3 and {'aux0_wbce', 'aux1_wiou', 'soft_dice_loss'} <= set(parts)
  swapped = dict(right, aux_logits=as_logits(masks[:, 1::-1]))  # t-1 and t-2 exchanged.
  assert float(task.loss(swapped, batch)[0]) > 1.0


def test_full_size_model_is_res2net50_plus_a_light_head():
  config = dsanet_config.get_config('paper')
  model = models.create_model(config.model)
  batch = {'frames': jnp.zeros((1, 3, 352, 352, 3))}
  params = jax.eval_shape(lambda: model.init(jax.random.key(0), batch, train=False))['params']
  count = lambda tree: sum(int(np.prod(v.shape)) for v in jax.tree.leaves(tree))  # pylint: disable=unnecessary-lambda-assignment
  assert count(params['encoder']) == 23_650_120
  print(f'DSANet paper: {count(params):,} parameters')  # Reported in the notes.
  assert count(params) - count(params['encoder']) < 1_000_000
