"""A sixth method, added the way a user adds one: a model file (``model.py``), a config
(``config.py``) and the one registration line below, which importing the package runs."""
from toy_method import model
from usvjax import models

models.register('toy', model.ToySegmenter, model.loss_terms, models.Capabilities(min_frames=2))
