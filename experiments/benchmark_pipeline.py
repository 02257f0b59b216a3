r"""Measures how many frames/s the tf.data pipelines deliver (decode, resize, augment, batch).

  python -m experiments.benchmark_pipeline [--image_size=352] [--batches=40]

Builds a small synthetic dataset stored at the benchmark resolution (once, in --data_dir),
then times training batches of segmentation clips (target + 2 previous frames) and of
variable-length classification sequences, after 5 warm-up batches. A frame is one decoded,
resized, augmented image of a clip or sequence.
"""
import time

import tensorflow_datasets as tfds
from absl import app
from absl import flags

from configs import cnn_aver
from configs import unet
from input_pipeline import pipeline
from input_pipeline.builders import usv_synthetic
from usvjax import tasks

IMAGE_SIZE = flags.DEFINE_integer('image_size', 352, 'Stored and model resolution.')
BATCHES = flags.DEFINE_integer('batches', 40, 'Timed batches per pipeline.')
DATA_DIR = flags.DEFINE_string('data_dir', 'runs/tensorflow_datasets', 'TFDS data_dir.')


def frames_per_second(batches, count: int) -> float:
  for _ in range(5):
    next(batches)
  start, frames = time.perf_counter(), 0
  for _ in range(count):
    batch = next(batches)
    frames += int(batch['valid'].sum())
  return frames / (time.perf_counter() - start)


def main(argv):
  del argv
  size = IMAGE_SIZE.value
  builder = tfds.builder('usv_synthetic', data_dir=DATA_DIR.value, config=usv_synthetic.SyntheticConfig(
      name=f'bench{size}', height=size, width=size, min_frames=10, max_frames=30,
      num_videos=(('train', 24), ('validation', 2), ('test', 2))))
  builder.download_and_prepare()
  for name, module in (('segmentation clips', unet), ('classification sequences', cnn_aver)):
    config = module.get_config('paper')
    config.input.update(image_size=size, shuffle_buffer=256, video_shuffle_buffer=8)
    config.input.augment.speckle_prob = 0.5
    batches = pipeline.train_batches(config, builder, tasks.example_source(config))
    fps = frames_per_second(batches, BATCHES.value)
    print(f'{name}: {fps:.0f} frames/s at {size}x{size} '
          f'(batch {config.input.batch_size}, augmentation on)')


if __name__ == '__main__':
  app.run(main)
