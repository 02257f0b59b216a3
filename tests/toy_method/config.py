"""The toy method's config: the shared schema plus its own loss-term keys."""
import ml_collections

from configs import common


def _tiny(c):
  c.dataset.config = 'tiny'
  c.total_steps, c.log_every, c.eval_every, c.checkpoint_every = 3, 1, 3, 3
  c.input.update(image_size=32, batch_size=4, eval_batch_size=4, shuffle_buffer=8,
                 video_shuffle_buffer=4)


def get_config(arg: str | None = None):
  c = common.base_config('segmentation')
  c.model = ml_collections.ConfigDict(dict(name='toy', features=4))
  c.task.update(area_weight=0.5, area_target=0.25)
  return common.finalize(c, arg, {'tiny': _tiny})
