"""The variable-frame CNN-LSTM: padding never changes a real step or the prediction."""
import jax
import jax.numpy as jnp
import numpy as np

from usvjax.models import cnn_lstm
from usvjax.models import frame_classifier


def test_padded_batch_equals_each_sequence_run_alone():
  rng = np.random.default_rng(0)
  lengths = [1, 4, 7]
  padded = np.zeros((3, 8, 5), np.float32)
  sequences = [rng.standard_normal((n, 5)).astype(np.float32) for n in lengths]
  for i, seq in enumerate(sequences):
    padded[i, :len(seq)] = seq
    padded[i, len(seq):] = 100.0  # Garbage in the padding must not matter.
  valid = np.arange(8)[None] < np.array(lengths)[:, None]
  model = cnn_lstm.CNNLSTM(num_classes=3, hidden=6)
  variables = model.init(jax.random.key(0), {'features': padded, 'valid': valid}, train=False)
  batch_out = model.apply(variables, {'features': padded, 'valid': valid}, train=False)
  for i, seq in enumerate(sequences):
    alone = model.apply(variables, {'features': seq[None], 'valid': np.ones((1, len(seq)), bool)},
                        train=False)
    n = len(seq)
    np.testing.assert_allclose(batch_out['frame_logits'][i, :n], alone['frame_logits'][0],
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(batch_out['final_hidden'][i], alone['final_hidden'][0],
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(batch_out['logits'][i], alone['logits'][0], rtol=1e-5, atol=1e-6)


def test_video_probability_is_the_mean_of_the_real_frames_only():
  frame_logits = jnp.array([[[2.0, 0.0], [0.0, 2.0], [50.0, -50.0]]])
  valid = jnp.array([[True, True, False]])
  probs = jnp.exp(frame_classifier.average_frame_probabilities(frame_logits, valid))
  p = jax.nn.softmax(jnp.array([2.0, 0.0]))
  np.testing.assert_allclose(probs[0], (p + p[::-1]) / 2, rtol=1e-6)


def test_tiny_config_trains_and_evaluates(data_dir, tmp_path):
  import helpers  # pylint: disable=g-import-not-at-top
  from usvjax import train  # pylint: disable=g-import-not-at-top
  config = helpers.load_config('cnn_lstm', data_dir)
  state, metrics = train.train_and_evaluate(config, str(tmp_path))
  assert int(state.step) == config.total_steps
  assert metrics['num_videos'] == 4 and 0.0 <= metrics['accuracy'] <= 1.0
