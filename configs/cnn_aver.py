"""Frame CNN of Cui et al. (Sec. 3.2): CNN_Aver, CNN_Vote and stage 1 of the CNN-LSTM.

Trained on frames with the video's label (frame-level cross-entropy over every sampled
frame of a batch of videos), evaluated on videos by averaging per-frame probabilities
(``model.aggregation='vote'`` for CNN_Vote). Variants: ``demo``, ``tiny`` (tests), ``paper``:
ResNet-18 on 224x224 frames, up to 30 frames per video, three fully-connected layers
512 -> 256 -> 128 -> 2, Adam 1e-5, 300 epochs, validation every 20 epochs. Initialise it
from ImageNet: convert weights with experiments/convert_weights.py and pass the folder as
``--config.init.checkpoint``.

The paper's batch is 256 frames; here a batch is 8 videos of up to 30 frames (<= 240
frames). Epochs become steps for the paper's dataset: 811 videos, 4/5 of them training
in 5-fold cross-validation = 649 videos = 82 steps per epoch; 300 epochs = 24,600 steps,
validation every 20 epochs = 1,640 steps. Scale them to your dataset.
"""
from configs import common


def paper_frame_cnn(c):
  c.dataset.config = 'paper'
  c.total_steps, c.log_every, c.eval_every, c.checkpoint_every = 24600, 100, 1640, 1640
  c.input.update(image_size=224, channels=3, batch_size=8, eval_batch_size=8,
                 max_frames=30, length_buckets=(8, 16, 30))
  c.model.update(backbone='resnet18', head=(256, 128))
  c.optimizer.lr = 1e-5
  c.schedule.name = 'constant'


def get_config(arg: str | None = None):
  c = common.base_config('classification')
  c.model = common.ml_collections.ConfigDict(dict(
      name='cnn_aver', num_classes=2, backbone='conv', width=16, levels=4, backbone_width=1.0,
      head=(), aggregation='average'))
  c.task.frame_loss = True
  return common.finalize(c, arg, {'demo': common.classification_demo,
                                 'tiny': common.classification_tiny, 'paper': paper_frame_cnn})
