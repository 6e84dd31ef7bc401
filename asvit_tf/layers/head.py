"""The As-ViT classification head (docs/design.md §3), one layer for the classifier (`AsViT`)
and the Model Garden backbone's 'pre_logits' endpoint."""
from __future__ import annotations

from typing import Dict, Optional

import tensorflow as tf
import tf_keras

from asvit_tf.layers.blocks import build_in_scope
from asvit_tf.layers.blocks import dense
from asvit_tf.layers.blocks import norm
from asvit_tf.layers.blocks import serialize_regularizer


@tf_keras.utils.register_keras_serializable(package='asvit_tf')
class ClassificationHead(tf_keras.layers.Layer):
  """LayerNorm -> global average pool -> Dense(head_width) -> tanh [-> Dense(num_classes)].

  Calling it on the last stage map [B, rows, cols, d4] returns logits [B, num_classes], or the
  pre-logits [B, head_width] when `num_classes` is None (Model Garden's classifier then adds
  its own Dense).

  Args:
    head_width: F, the width of the pre-logits (`Topology.head_width`).
    num_classes: classes of the final Dense; None for no final Dense.
    use_layer_norm: False makes the LayerNorm the identity.
    kernel_regularizer: applied to both Dense kernels.
  """

  def __init__(self, head_width: int, num_classes: Optional[int] = None,
               use_layer_norm: bool = True, kernel_regularizer=None, **kwargs):
    super().__init__(**kwargs)
    self.head_width = int(head_width)
    self.num_classes = None if num_classes is None else int(num_classes)
    self.use_layer_norm = bool(use_layer_norm)
    self.kernel_regularizer = tf_keras.regularizers.get(kernel_regularizer)
    reg = self.kernel_regularizer
    self.norm = norm(self.use_layer_norm, 'norm')
    self.pre_logits = dense(self.head_width, 'pre_logits', regularizer=reg)
    self.classifier = (None if self.num_classes is None
                       else dense(self.num_classes, 'classifier', regularizer=reg))

  def build(self, input_shape):
    """Creates every weight without a forward pass (they depend on the width alone)."""
    width = tf.TensorShape(input_shape)[-1]
    build_in_scope(self.norm, tf.TensorShape([None, None, None, width]))
    build_in_scope(self.pre_logits, tf.TensorShape([None, width]))
    if self.classifier is not None:
      build_in_scope(self.classifier, tf.TensorShape([None, self.head_width]))
    super().build(input_shape)

  def call(self, last_map):
    x = tf.tanh(self.pre_logits(tf.reduce_mean(self.norm(last_map), axis=[1, 2])))
    return x if self.classifier is None else self.classifier(x)

  def checkpoint_paths(self, norm_name: str, pre_logits_name: str,
                       classifier_name: Optional[str] = None) -> Dict[str, tf_keras.layers.Layer]:
    """The head's layers under the names a model gave them before the head was one layer:
    `keep_checkpoint_paths(model, head.checkpoint_paths(...))` lets old TF checkpoints load."""
    paths = {norm_name: self.norm, pre_logits_name: self.pre_logits}
    if self.classifier is not None and classifier_name is not None:
      paths[classifier_name] = self.classifier
    return paths

  def get_config(self):
    return {**super().get_config(), 'head_width': self.head_width,
            'num_classes': self.num_classes, 'use_layer_norm': self.use_layer_norm,
            'kernel_regularizer': serialize_regularizer(self.kernel_regularizer)}


def keep_checkpoint_paths(model: tf_keras.layers.Layer,
                          paths: Dict[str, tf_keras.layers.Layer]) -> None:
  """Makes each layer of `paths` also a checkpoint dependency of `model` under its name, so a
  TF checkpoint that reached it there still loads (and new ones hold both paths). Only the TF
  checkpoint graph sees these names: Keras' layer list, `.keras` and `.weights.h5` files see
  the layer once, where it lives."""
  for name, layer in paths.items():
    model._track_trackable(layer, name=name)  # pylint: disable=protected-access
