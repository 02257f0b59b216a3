"""Contrastive examples (SimCLR pretraining): two augmented views of frames of one video.

An example is ``frames[2, H, W, C]``: a frame and its positive, each view augmented
independently (also in evaluation, with fixed seeds, so that the views differ). From each
video (per pass) ``input.max_frames`` frames are drawn at random, seeded by the run seed
and the video's position in the stream; each is paired with itself
(``input.positives='same_frame'``, SimCLR) or with another random frame of the video
(``'same_video'``; itself if the video has one frame).

This module declares the examples (no TensorFlow); ``view_pair_streams`` makes them with
tf.data.
"""
from __future__ import annotations

from collections.abc import Mapping

import ml_collections

from input_pipeline import spec as spec_lib


class ViewPairs(spec_lib.StreamsInModule):
  """The example source of contrastive pretraining (``spec.ExampleSource``)."""

  STREAMS = 'input_pipeline.view_pair_streams'

  def required_features(self, features: Mapping) -> tuple[str, ...]:
    del features
    return ('frames',)

  def fields(self, config: ml_collections.ConfigDict, train: bool,
             features: Mapping | None) -> spec_lib.Spec:
    del features
    return {'frames': spec_lib.image_field(config, 2), **spec_lib.common_fields(train, 2)}
