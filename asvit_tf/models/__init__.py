"""As-ViT models (tf_keras only), named variants and size counting.

The size functions are pure Python; the Keras names load TensorFlow on first use, so
`from asvit_tf.models import count_macs` stays light.
"""
import importlib

from asvit_tf.models.size import PartCost
from asvit_tf.models.size import cost_breakdown
from asvit_tf.models.size import count_macs
from asvit_tf.models.size import count_params
from asvit_tf.models.size import estimate_params
from asvit_tf.models.size import stage_grids
from asvit_tf.models.size import token_grid

_KERAS_NAMES = ('LEVELS', 'AsViT', 'AsViTEncoder', 'create_model', 'drop_path_rates',
                'model_names', 'register_model')

__all__ = list(_KERAS_NAMES) + ['PartCost', 'cost_breakdown', 'count_macs', 'count_params',
                                'estimate_params', 'stage_grids', 'token_grid']


def __getattr__(name):
  if name in _KERAS_NAMES:
    return getattr(importlib.import_module('asvit_tf.models.asvit'), name)
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
