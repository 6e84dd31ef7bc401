"""As-ViT models (tf_keras only), named variants and size counting."""
from asvit_tf.models.asvit import LEVELS
from asvit_tf.models.asvit import AsViT
from asvit_tf.models.asvit import AsViTEncoder
from asvit_tf.models.asvit import create_model
from asvit_tf.models.asvit import drop_path_rates
from asvit_tf.models.asvit import model_names
from asvit_tf.models.asvit import register_model
from asvit_tf.models.size import PartCost
from asvit_tf.models.size import cost_breakdown
from asvit_tf.models.size import count_macs
from asvit_tf.models.size import count_params
from asvit_tf.models.size import estimate_params
from asvit_tf.models.size import stage_grids
from asvit_tf.models.size import token_grid

__all__ = ['LEVELS', 'AsViT', 'AsViTEncoder', 'create_model', 'drop_path_rates', 'model_names',
           'register_model', 'PartCost', 'cost_breakdown', 'count_macs', 'count_params',
           'estimate_params', 'stage_grids', 'token_grid']
