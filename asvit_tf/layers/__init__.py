"""Keras (tf_keras) layers of As-ViT: re-tokenizable patch embedding, split attention,
MLP, transformer block, patch merging, classification head (docs/design.md §3), and the
helpers that make them (`dense`, `norm`, `build_in_scope`, `serialize_regularizer`,
`static_hw`)."""
from asvit_tf.layers.blocks import DropPath
from asvit_tf.layers.blocks import Mlp
from asvit_tf.layers.blocks import PatchEmbedding
from asvit_tf.layers.blocks import PatchMerging
from asvit_tf.layers.blocks import SplitAttention
from asvit_tf.layers.blocks import TransformerBlock
from asvit_tf.layers.blocks import build_in_scope
from asvit_tf.layers.blocks import dense
from asvit_tf.layers.blocks import dense_initializer
from asvit_tf.layers.blocks import embedding_initializer
from asvit_tf.layers.blocks import embedding_padding
from asvit_tf.layers.blocks import norm
from asvit_tf.layers.blocks import retokenization_dilation
from asvit_tf.layers.blocks import serialize_regularizer
from asvit_tf.layers.blocks import static_hw
from asvit_tf.layers.head import ClassificationHead
from asvit_tf.layers.head import keep_checkpoint_paths

__all__ = ['ClassificationHead', 'DropPath', 'Mlp', 'PatchEmbedding', 'PatchMerging',
           'SplitAttention', 'TransformerBlock', 'build_in_scope', 'dense', 'dense_initializer',
           'embedding_initializer', 'embedding_padding', 'keep_checkpoint_paths', 'norm',
           'retokenization_dilation', 'serialize_regularizer', 'static_hw']
