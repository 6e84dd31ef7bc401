"""Keras (tf_keras) layers of As-ViT: re-tokenizable patch embedding, split attention,
MLP, transformer block, patch merging (docs/design.md §3)."""
from asvit_tf.layers.blocks import DropPath
from asvit_tf.layers.blocks import Mlp
from asvit_tf.layers.blocks import PatchEmbedding
from asvit_tf.layers.blocks import PatchMerging
from asvit_tf.layers.blocks import SplitAttention
from asvit_tf.layers.blocks import TransformerBlock
from asvit_tf.layers.blocks import dense_initializer
from asvit_tf.layers.blocks import embedding_initializer
from asvit_tf.layers.blocks import embedding_padding
from asvit_tf.layers.blocks import retokenization_dilation

__all__ = ['DropPath', 'Mlp', 'PatchEmbedding', 'PatchMerging', 'SplitAttention',
           'TransformerBlock', 'dense_initializer', 'embedding_initializer',
           'embedding_padding',
           'retokenization_dilation']
