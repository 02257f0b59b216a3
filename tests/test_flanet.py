"""FLA-Net: the FFA module against a NumPy evaluation of the paper's equations, the
location-based contrastive loss, the model's configurations, the segmentation's use of
the localisation branch, and the released design against the released PyTorch code."""
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import flanet as flanet_config
from usvjax import losses
from usvjax import models
from usvjax.loss_terms import flanet as flanet_terms
from usvjax.models import flanet
from usvjax.models import flanet_base
from usvjax.models import flanet_import
from usvjax.models import flanet_released
from usvjax.models.backbones import resnet
from usvjax.tasks.segmentation import SegmentationTask
from scripts import make_flanet_fixture as parity_rule

FIXTURE = os.path.join(os.path.dirname(__file__), 'fixtures', 'flanet_released.npz')


def _spectrum(f):
  x = np.fft.rfft2(f, axes=(1, 2), norm='ortho')
  return np.concatenate([x.real, x.imag], axis=-1)


def _layer_norm(x, p, eps=1e-6):
  mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + eps) * p['scale'] + p['bias']


def _group_norm(x, p, groups, eps=1e-6):
  b, h, w, c = x.shape
  g = x.reshape(b, h, w, groups, c // groups)
  mean, var = g.mean((1, 2, 4), keepdims=True), g.var((1, 2, 4), keepdims=True)
  return ((g - mean) / np.sqrt(var + eps)).reshape(x.shape) * p['scale'] + p['bias']


def _conv3x3(x, p):
  padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  h, w = x.shape[1:3]
  return sum(padded[:, dy:dy + h, dx:dx + w] @ p['kernel'][dy, dx]
             for dy in range(3) for dx in range(3)) + p['bias']


def _ffa_numpy(params, f_t, f_1, f_2, groups):
  """o_t = BConv(z1 + z2), z_i = iFFT(CA([x_t, x_k]) * [x_t, x_k]) (Lin et al. Sec. 3.1)."""
  x_t, h, w = _spectrum(f_t), f_t.shape[1], f_t.shape[2]
  z = 0.0
  for name, f_k in (('attention1', f_1), ('attention2', f_2)):
    group = np.concatenate([x_t, _spectrum(f_k)], axis=-1)
    p = params[name]
    hidden = np.maximum(_layer_norm(group, p['norm']) @ p['conv1']['kernel'] + p['conv1']['bias'], 0)
    attention = 1 / (1 + np.exp(-(hidden @ p['conv2']['kernel'] + p['conv2']['bias'])))
    y = attention * group
    c = f_t.shape[-1]
    real = np.concatenate([y[..., :c], y[..., 2 * c:3 * c]], axis=-1)
    imag = np.concatenate([y[..., c:2 * c], y[..., 3 * c:]], axis=-1)
    z = z + np.fft.irfft2(real + 1j * imag, s=(h, w), axes=(1, 2), norm='ortho')
  p = params['bconv']
  return np.maximum(_group_norm(_conv3x3(z, p['conv']), p['norm'], groups), 0)


def test_ffa_matches_the_papers_equations_in_numpy():
  rng = np.random.default_rng(0)
  f_t, f_1, f_2 = (rng.standard_normal((2, 6, 5, 4)).astype(np.float32) for _ in range(3))
  module = flanet.FFA(reduction=2, groups=2)
  variables = module.init(jax.random.key(1), f_t, f_1, f_2)
  # Random (non-default) normalisation parameters, so that every term is exercised.
  variables = jax.tree.map(lambda v: v + 0.1 * rng.standard_normal(v.shape).astype(v.dtype),
                           variables)
  ours = module.apply(variables, f_t, f_1, f_2)
  params = jax.tree.map(np.asarray, variables['params'])
  expected = _ffa_numpy(params, f_t.astype(np.float64), f_1, f_2, groups=2)
  np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-4)
  # Aggregation uses the neighbours: changing f_{t-1} changes o_t.
  assert not np.allclose(module.apply(variables, f_t, f_2, f_2), ours, atol=1e-4)


def test_contrastive_loss_is_zero_beyond_the_margin_and_linear_below_it():
  anchor = jnp.zeros((1, 2, 2, 1))
  far = jnp.ones((1, 2, 2, 1))  # MSE 1 from the anchor.
  # Positive closer than the negative by more than the margin: no loss.
  assert float(losses.location_contrastive(anchor, anchor, far, 0.5)[0]) == 0.0
  # Otherwise max(MSE(a, p) - MSE(a, n) + margin, 0): linear in the positive's distance.
  for d in (0.6, 0.8, 1.0):
    positive = jnp.full((1, 2, 2, 1), np.sqrt(d))  # MSE d from the anchor.
    value = float(losses.location_contrastive(anchor, positive, far, 0.5)[0])
    assert value == pytest.approx(d - 1.0 + 0.5, abs=1e-6)


def test_contrastive_negatives_come_only_from_other_videos():
  config = flanet_config.get_config('tiny').task
  config.unlock()
  config.update(bce_weight=0.0, iou_weight=0.0, heatmap_weight=0.0, contrastive_margin=0.0)
  task = SegmentationTask(config, 3, flanet_terms.create(config, 3))
  heat = jnp.array([0.0, 1.0, 3.0])[:, None, None, None] * jnp.ones((3, 2, 2, 1))
  outputs = {'logits': jnp.zeros((3, 2, 2, 1)), 'heatmap': heat,
             'previous_heatmap': jnp.zeros((3, 2, 2, 1))}
  batch = {'masks': jnp.zeros((3, 1, 2, 2, 1)), 'valid': jnp.ones((3, 1), bool),
           'annotated': jnp.ones((3, 1), bool),
           'video_hash': jnp.array([7, 7, 9])}
  _, parts = task.loss(outputs, batch)
  # Example i's negative is example i-1. Pair (1, 0) is one video and is skipped; pairs
  # (0, 2) and (2, 1): max(h_i^2 - (h_i - h_neg)^2, 0) = max(0 - 9, 0), max(9 - 4, 0).
  assert float(parts['contrastive']) == pytest.approx((0.0 + 5.0) / 2)
  assert float(parts['contrastive_pairs']) == pytest.approx(2 / 3)
  with pytest.raises(ValueError, match='batch_size'):
    flanet_terms.create(config, 1)


def test_temporal_shift_moves_channel_slices_between_frames():
  x = jnp.arange(3 * 8, dtype=jnp.float32).reshape(1, 3, 1, 1, 8)
  y = flanet_base.temporal_shift(x, 0.125)
  np.testing.assert_array_equal(y[0, 1, 0, 0, 0], x[0, 0, 0, 0, 0])  # From t-1.
  np.testing.assert_array_equal(y[0, 1, 0, 0, 1], x[0, 2, 0, 0, 1])  # From t+1.
  assert y[0, 0, 0, 0, 0] == 0 and y[0, 2, 0, 0, 1] == 0
  np.testing.assert_array_equal(y[..., 2:], x[..., 2:])


def _count(tree) -> int:
  return sum(int(np.prod(v.shape)) for v in jax.tree.leaves(tree))


def _ffa_parameters(c: int, reduction: int) -> int:
  """Two CAs on 4c channels (LayerNorm, 1x1 convs 4c -> 4c/r -> 4c) and BConv 2c -> c."""
  attention = 2 * 4 * c + (4 * c * (4 * c // reduction) + 4 * c // reduction) + (
      4 * c // reduction * 4 * c + 4 * c)
  return 2 * attention + (9 * 2 * c * c + c) + 2 * c


def _released_ffa_parameters(c: int) -> int:
  """Two SE blocks (1x1 convs 4c -> 2c -> 4c), the reduce conv 2c -> c and GroupNorm."""
  se_block = (4 * c * 2 * c + 2 * c) + (2 * c * 4 * c + 4 * c)
  return 2 * se_block + (9 * 2 * c * c + c) + 2 * c


# The released model's count is its state dict's, without BatchNorm statistics (measured
# on the released code, see scripts/make_flanet_fixture.py).
@pytest.mark.parametrize('variant,level,ffa,total', [
    ('paper', 'stride32', _ffa_parameters(2048, 16), None),
    ('released_code', 'stride16', _released_ffa_parameters(1024), 87_615_002)])
def test_full_size_model_has_one_ffa_on_top_of_res2net50(variant, level, ffa, total):
  config = flanet_config.get_config(variant)
  model = models.create_model(config.model)
  batch = {'frames': jnp.zeros((1, config.input.clip_length, 352, 352, 3))}
  params = jax.eval_shape(lambda: model.init(jax.random.key(0), batch, train=False))['params']
  assert _count(params['encoder']) == 23_650_120  # timm res2net50_26w_4s without its fc.
  # Converted ImageNet weights of the plain backbone fit config.init.target='encoder'.
  backbone = resnet.ResNet('res2net50_26w_4s')
  alone = jax.eval_shape(lambda: backbone.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)),
                                               train=False))['params']
  assert jax.tree.structure(alone) == jax.tree.structure(params[config.init.target])
  assert [k for k in params if k.startswith('fusions')] == [f'fusions_{level}']
  assert _count(params[f'fusions_{level}']) == ffa
  assert total is None or _count(params) == total
  print(f'{variant}: {_count(params):,} parameters')  # Reported in the notes.


@pytest.mark.parametrize('ablation,outputs', [
    ('basic', {'logits'}), ('fla', {'logits'}), ('lb', {'logits', 'heatmap'}),
    ('fla_lb', {'logits', 'heatmap'}), ('full', {'logits', 'heatmap', 'previous_heatmap'})])
def test_table3_ablations_switch_modules(ablation, outputs):
  config = flanet_config.get_config(f'tiny,{ablation}')
  model = models.create_model(config.model)
  batch = {'frames': jnp.zeros((2, config.input.clip_length, 32, 32, 1))}
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), batch, train=False))
  out = jax.eval_shape(lambda v: model.apply(v, batch, train=True, mutable=['batch_stats'])[0],
                       variables)
  assert set(out) == outputs
  names = set(variables['params'])
  assert ('localisation' in names) == ('heatmap' in outputs)
  fuse = variables['params']['fusions_stride32']
  assert ('bconv' in fuse) == (config.model.aggregation == 'ffa')


@functools.cache
def _resnet18_model(variant: str):
  """The model of ``variant`` on a ResNet-18 (a short compilation; the heads are the same)
  and its initial variables, shared by the tests that run it."""
  config = flanet_config.get_config(variant)
  config.model.backbone = 'resnet18'
  model = models.create_model(config.model)
  frames = np.zeros((2, 3, 32, 32, 1), np.float32)
  return model, jax.jit(lambda: model.init(jax.random.key(0), {'frames': frames},
                                           train=False))()


@pytest.mark.parametrize('variant,branch', [('tiny', 'localisation'),
                                            ('released_code,tiny', 'heatmap_head')])
def test_segmentation_adds_the_localisation_branch(variant, branch):
  """The segmentation output adds the localisation branch (the paper: d1l and d2l; the
  released code: its heatmap): changing only that branch's weights changes the logits."""
  model, variables = _resnet18_model(variant)
  frames = np.random.default_rng(0).random((2, 3, 32, 32, 1), np.float32)
  logits = jax.jit(lambda v: model.apply(v, {'frames': frames}, train=False)['logits'])
  keys = iter(jax.random.split(jax.random.key(1), 1000))
  moved = jax.tree.map(lambda p: p + 0.1 * jax.random.normal(next(keys), p.shape),
                       variables['params'][branch])
  before = np.asarray(logits(variables))
  after = np.asarray(logits({**variables, 'params': {**variables['params'], branch: moved}}))
  change = np.abs(after - before).max() / np.abs(before).max()
  assert change > 1e-3, f'the logits ignore {branch!r} (relative change {change:.1e})'


def test_contrastive_positive_is_the_heatmap_of_the_previous_frame():
  """``previous_heatmap`` (the positive of Eq. 1) is H_{t-1}: the heatmap of frame t-1 of
  the same clip, predicted from t-1, t-2, t-3. The clip [a, b, c, d] gives it for target c;
  the clip [d, a, b, c] has c as its target, and holds the same four frames, so training
  mode's BatchNorm statistics are the same: its ``heatmap`` must equal the first clip's
  ``previous_heatmap`` (any other frame, or the current one, gives another map)."""
  model, variables = _resnet18_model('tiny')
  a, b, c, d = np.random.default_rng(0).random((4, 2, 1, 32, 32, 1), np.float32)
  first, second = np.concatenate([a, b, c, d], 1), np.concatenate([d, a, b, c], 1)
  forward = jax.jit(lambda frames: model.apply(variables, {'frames': frames}, train=True,
                                               mutable=['batch_stats'])[0])
  clip, shifted = forward(first), forward(second)
  np.testing.assert_allclose(clip['previous_heatmap'], shifted['heatmap'], atol=1e-5)
  assert np.abs(clip['previous_heatmap'] - clip['heatmap']).max() > 1e-3


def test_released_ffa_output_does_not_depend_on_its_input():
  """The released FFA treats [Im X, Re X] as real and imaginary parts: a real odd plus j
  times a real even spectrum, whose inverse FFT is purely imaginary, so z_1 + z_2 = 0 and
  o_t = GroupNorm(ReLU(bias)) for any features (measured on the released code too)."""
  rng = np.random.default_rng(0)
  f = [rng.standard_normal((1, 4, 4, 16)).astype(np.float32) for _ in range(6)]
  module = flanet_released.ReleasedFFA(reduction=2, groups=4)
  variables = module.init(jax.random.key(0), *f[:3])
  variables = jax.tree.map(lambda v: v + 0.1 * rng.standard_normal(v.shape).astype(v.dtype),
                           variables)
  np.testing.assert_allclose(module.apply(variables, *f[:3]), module.apply(variables, *f[3:]),
                             atol=1e-4)


def test_released_se_attention_is_a_constant_per_channel():
  """The released SE block divides each channel's L2 norm G by its mean over a size-1 axis,
  i.e. by itself: its attention is sigmoid(up(relu(down(1)))) whatever the input (with no
  all-zero channel), and its gradient stays finite on an all-zero channel (the temporal
  shift makes some)."""
  rng = np.random.default_rng(0)
  x = rng.standard_normal((2, 3, 3, 8)).astype(np.float32)
  module = flanet_released.SEBlock(hidden=4)
  variables = module.init(jax.random.key(0), x)
  p = jax.tree.map(np.asarray, variables['params'])
  hidden = np.maximum(np.ones(8) @ p['down']['kernel'][0, 0] + p['down']['bias'], 0)
  expected = 1 / (1 + np.exp(-(hidden @ p['up']['kernel'][0, 0] + p['up']['bias'])))
  for scale in (1.0, 30.0):
    y = scale * rng.standard_normal(x.shape).astype(np.float32)
    np.testing.assert_allclose(module.apply(variables, y), y * expected, rtol=1e-5, atol=1e-6)
  zero_channel = np.copy(x)
  zero_channel[..., 0] = 0.0
  grad = jax.grad(lambda v: module.apply(variables, v).sum())(zero_channel)
  assert np.isfinite(np.asarray(grad)).all()


def test_released_design_reproduces_the_released_code(tmp_path):
  """Parity with the released PyTorch FLA-Net (fixture and rule weights: see
  scripts/make_flanet_fixture.py): the rule's state dict, written as a .pth and imported as
  a user's file is, fills every variable, and the segmentation, the heatmap and the SE
  blocks' attention equal the released code's to a relative error of 1e-4
  (max |difference| / max |reference|)."""
  torch = pytest.importorskip('torch')
  fixture = np.load(FIXTURE)
  shapes = {str(name): tuple(int(d) for d in shape[:ndim])
            for name, shape, ndim in zip(fixture['names'], fixture['shapes'], fixture['ndims'])}
  state_dict = parity_rule.rule_state_dict(shapes)
  torch.save({k: torch.from_numpy(v) for k, v in state_dict.items()}, tmp_path / 'flanet.pth')
  model = models.create_model(flanet_config.get_config('released_code').model)
  batch = {'frames': parity_rule.rule_frames()}
  empty = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), jax.eval_shape(
      lambda: model.init(jax.random.key(0), batch, train=False)))
  variables, report = flanet_import.import_file(str(tmp_path / 'flanet.pth'), empty)
  assert not flanet_import.problems(report), report.summary()
  outputs, state = jax.jit(lambda v: model.apply(v, batch, train=False,
                                                  mutable=['intermediates']))(variables)
  for i in (1, 2):
    (attention,) = state['intermediates']['fusions_stride16'][f'se_block{i}']['attention']
    outputs[f'se_block{i}_attention'] = attention.reshape(-1)
  for name in ('logits', 'heatmap', 'se_block1_attention', 'se_block2_attention'):
    error = np.abs(np.asarray(outputs[name]) - fixture[name]).max() / np.abs(fixture[name]).max()
    assert error <= 1e-4, f'{name}: relative error {error:.2e}'
  # A tensor without a place, and a variable without a tensor, are both named.
  del state_dict['decoder.blocks.4.conv2.0.weight']
  state_dict['FAM_list.0.extra.weight'] = np.zeros((1, 1, 1, 1), np.float32)
  _, report = flanet_import.convert_state_dict(state_dict, empty)
  assert flanet_import.problems(report) == [
      'params/decoder/block4_conv2/Conv_0/kernel', 'FAM_list.0.extra.weight']


def _released_structure_loss(logits, masks):
  """train_w_hm.py's structure_loss as it runs: its BCE call (``reduce='none'``, the old
  boolean) returns the batch's plain mean BCE, so only the IoU is boundary-weighted.
  F3Net's weights 1 + 5 |avgpool_31(mask) - mask| (zero padding counted); [B, H, W]."""
  pad = np.pad(masks, ((0, 0), (15, 15), (15, 15)))
  h, w = masks.shape[1:]
  pooled = sum(pad[:, dy:dy + h, dx:dx + w] for dy in range(31) for dx in range(31)) / 31**2
  weight = 1 + 5 * np.abs(pooled - masks)
  bce = np.maximum(logits, 0) - logits * masks + np.log1p(np.exp(-np.abs(logits)))
  probs = 1 / (1 + np.exp(-logits))
  inter = (weight * probs * masks).sum((1, 2))
  union = (weight * (probs + masks)).sum((1, 2))
  wiou = 1 - (inter + 1) / (union - inter + 1)
  weighted_bce = (weight * bce).sum((1, 2)) / weight.sum((1, 2))
  return bce.mean() + wiou.mean(), weighted_bce.mean() + wiou.mean()


def test_released_code_trains_with_its_structure_loss_heatmap_mse_and_step_decay():
  """The ``released_code`` recipe: structure loss + 0.5 x heatmap MSE on an imperfect
  prediction, the learning rate x0.1 after 59 epochs of 575 steps, gradients clamped."""
  from usvjax import tasks  # pylint: disable=import-outside-toplevel
  from usvjax.core import optim  # pylint: disable=import-outside-toplevel
  config = flanet_config.get_config('released_code')
  rng = np.random.default_rng(0)
  masks = np.zeros((3, 20, 20), np.float32)
  masks[:, 4:13, 6:15] = 1.0
  # The lesion predicted 2 pixels off: errors on the boundary, where the weights are large.
  logits = 4 * np.roll(masks, 2, axis=2) - 2 + rng.normal(0.0, 0.5, masks.shape)
  logits = logits.astype(np.float32)
  heatmap = rng.random(masks.shape, np.float32)
  target = rng.random(masks.shape, np.float32)
  batch = {'masks': np.stack([masks, masks, masks], 1)[..., None],
           'heatmaps': np.stack([target, target, target], 1)[..., None],
           'valid': np.ones((3, 3), bool), 'annotated': np.ones((3, 3), bool),
           'video_hash': np.arange(3)}
  outputs = {'logits': jnp.asarray(logits[..., None]), 'heatmap': jnp.asarray(heatmap[..., None])}
  total, _ = tasks.create_task(config).loss(outputs, batch)
  structure, as_written = _released_structure_loss(logits.astype(np.float64), masks)
  expected = structure + 0.5 * np.mean((heatmap - target) ** 2)
  assert abs(as_written - structure) > 1e-2  # The data tell the two readings apart.
  assert float(total) == pytest.approx(expected, rel=1e-5)
  torch = pytest.importorskip('torch')
  with pytest.warns(UserWarning):  # The released call: a scalar, the plain mean.
    released = torch.nn.functional.binary_cross_entropy_with_logits(
        torch.from_numpy(logits), torch.from_numpy(masks), reduce='none')
  assert released.ndim == 0
  assert float(released) == pytest.approx(float(np.mean(
      np.maximum(logits, 0) - logits * masks + np.log1p(np.exp(-np.abs(logits))))), rel=1e-5)
  schedule = optim.learning_rate_schedule(config)
  assert config.schedule.step_boundaries == (59 * 575,)
  assert float(schedule(59 * 575 - 1)) == pytest.approx(5e-5)
  assert float(schedule(59 * 575)) == pytest.approx(5e-6)
  assert config.total_steps == 100 * 575 and config.optimizer.clip_value == 0.5
