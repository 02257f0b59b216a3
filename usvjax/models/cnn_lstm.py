"""Variable-frame CNN-LSTM (Cui et al.), Sec. 3.3: an LSTM over per-frame CNN features.

Each video's frame features x_1..x_n (n = its number of real frames, 1..30 in the paper;
512-d ResNet features) run through an LSTM (hidden 256); every step's hidden state gives
a per-frame softmax, and the video's class probabilities are the mean over its n real frames
(Eq. in Sec. 3.3: "the probabilities are added and averaged").

Packed-sequence semantics under jit: sequences are padded at the end to a bucket length T
and ``valid[B, T]`` marks real frames (a prefix). The LSTM runs with ``seq_lengths`` = n,
so the carry stops at step n (the final state is the state after the last real frame);
padded steps come after every real step, so they cannot change one; and padded outputs are
excluded from the average. The result for a padded batch therefore equals running each
sequence alone.

**Loss (our choice).** The paper names cross-entropy (Eq. 1) but not what it is applied
to. Training minimises the cross-entropy of the video's averaged probability, -log p_video
[label] with ``logits`` = log p_video (``config.task.frame_loss`` False, the default of
``configs/cnn_lstm.py``): the quantity the paper predicts with. ``--config.task.frame_loss=
True`` instead averages the per-step cross-entropy of ``frame_logits`` over the real steps.

**Frozen frame CNN.** In the two-stage run (``usvjax.runners.two_stage``) stage 2 reads cached
features, so the frame CNN is frozen while the LSTM trains, as in the paper (features
"saved locally as a numpy file"). Given ``frames``, this module also trains the frame CNN
end to end (its BatchNorms then never see padding: ``frame_classifier``).

Inputs: ``batch['features']`` [B, T, D] (cached CNN features), or ``batch['frames']``
[B, T, H, W, C] encoded here by a ``FrameEncoder``; ``batch['valid']`` [B, T].
Outputs: ``frame_logits`` [B, T, K], ``logits`` [B, K] = log mean probability,
``final_hidden`` [B, hidden].
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from usvjax.models import frame_classifier


class MaskedLSTM(nn.Module):
  """LSTM over the first ``lengths[b]`` steps of each sequence: [B, T, D] -> [B, T, H]."""
  hidden: int = 256

  @nn.compact
  def __call__(self, x: jnp.ndarray, lengths: jnp.ndarray) -> tuple[tuple, jnp.ndarray]:
    rnn = nn.RNN(nn.OptimizedLSTMCell(self.hidden), return_carry=True, name='rnn')
    carry, outputs = rnn(x, seq_lengths=lengths)
    return carry, outputs


class CNNLSTM(frame_classifier.VideoClassifierBase):
  hidden: int = 256

  @nn.compact
  def __call__(self, batch: dict[str, jnp.ndarray], *, train: bool) -> dict[str, jnp.ndarray]:
    valid = batch['valid']
    features = self.frame_features(batch, train)
    lengths = jnp.sum(valid, axis=1).astype(jnp.int32)
    (_, hidden), outputs = MaskedLSTM(self.hidden, name='lstm')(features, lengths)
    frame_logits = nn.Dense(self.num_classes, name='classifier')(outputs)
    return {'frame_logits': frame_logits, 'final_hidden': hidden,
            'logits': frame_classifier.average_frame_probabilities(frame_logits, valid)}
