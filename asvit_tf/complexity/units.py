"""κ_Θ's Θ and L^E's velocity from traced units kept across networks (`method='units'` of
`ntk_condition_number`; `curve_metrics`' default for L^E alone where it would trace).

A traced measure pays its trace for every new network, though networks of a search or a grow
are made of few kinds of pieces: an As-ViT is its patch embedding, its patch mergings and its
blocks (the *units*), and a grow's candidates differ from their parent by one block of a kind
the parent has. Here each unit is traced once per kind: its config and the shape of its
input. The trace runs on a template layer built with zero weights; before each call the
weights of the network's place are assigned into its template, so one trace serves every
place of that kind, in every network, at every repeat.

Θ itself is formed as `ntk.TappedGradients` forms it: per kernel, the per-image gradient
g_i = a_iᵀ δ_i from the kernel's input a and δ = ∂(Σ_i Σ_j h_j(x_i))/∂z at its output z
(the patch embedding's conv: the images' patches against δ at the norm's input; a
LayerNorm's scale γ: g_i = Σ_tokens x̂_i ⊙ δ_i). A plain pass through the units keeps each
unit's input; then, from the last unit back to the first, each unit's traced `step` runs
its pass again under a tape that watches its input and every tapped z, takes δx and every
δ_z from δy (the δx of the unit after it), and adds its share of Θ. Only δ are asked for, so
no weight gradient is formed; the cost is a second forward pass per repeat, and each unit
holds its intermediates only during its own step. (An eager tape over traced units instead,
as before, formed every weight's gradient as well: TensorFlow's backward of a function call
differentiates all its inputs, the variables it reads among them: about 1.6× the time per
repeat at 224 px.)

L^E's velocity ḣ (`features_and_velocity`) needs no backward pass: each unit's traced
function maps (x, ẋ) to (y, ẏ) as `dual` does, and one template per kind serves every place
in the network (the weights of the place are assigned right before its call).

Only for `AsViT` models without drop path or remat (`supports`); the whole batch goes
through at once (no chunks). Values equal the other methods' to float rounding.
"""
from __future__ import annotations

import collections
import json
from typing import List, Tuple

import tensorflow as tf
import tf_keras

from asvit_tf.complexity import attention
from asvit_tf.complexity import dual
from asvit_tf.complexity import network as network_lib
from asvit_tf.complexity import ntk
from asvit_tf.layers import blocks

# Kinds of unit kept (least recently used dropped first): a paper-preset search meets a few
# dozen (5 embeddings, merges and blocks of its stages' choices at one width), a grow about
# as many (its blocks at each proxy width).
MAX_UNITS = 256


def supports(model) -> bool:
  """True for an `AsViT` the units can measure: built, no drop path, no remat."""
  from asvit_tf.models import asvit  # pylint: disable=g-import-not-at-top
  if not isinstance(model, asvit.AsViT):
    return False
  encoder = model.encoder
  return encoder.built and encoder.drop_path_rate == 0.0 and not encoder.remat


def _template(layer, input_shape: Tuple[int, ...]):
  """A new layer of `layer`'s config, built for `input_shape` with zero weights."""
  config = dict(layer.get_config())
  config.pop('name', None)
  with network_lib.recorded_initial_values(undrawn=True):
    template = type(layer).from_config(config)
    blocks.build_in_scope(template, tf.TensorShape([None, *input_shape[1:]]))
  return template


class _Unit:
  """A template of one kind of unit, tapped, and its two traced functions: `forward(x) -> y`
  (the plain pass) and `step(x, δy) -> (Θ of the kernels, Θ of the LayerNorm scales, δx)`:
  the unit's pass again with its backward from δy = ∂total/∂y, taking δ at every tapped
  output z and the unit's share of Θ ([b, b] float64 each, zeros if none) from them. The
  backward asks only for δx and the δ at the taps, so no weight gradient is formed; δx is
  None for the patch embedding (its input is the images)."""

  def __init__(self, layer, input_shape: Tuple[int, ...], dtype: tf.DType):
    self.layer = _template(layer, input_shape)
    self.weights = list(self.layer.trainable_weights)
    self._records, self._tape = None, None
    self._tap()
    x_spec = tf.TensorSpec(input_shape, dtype)
    # The attention's gradient functions register while `step` traces; the traced function
    # holds its backward once built, so the global registry lets them go (kept there, they
    # would hold every trace for the life of the process).
    with network_lib.releasing_custom_gradients():
      self.forward = tf.function(self._call, autograph=False).get_concrete_function(x_spec)
      y_spec = self.forward.structured_outputs
      self.output_shape = tuple(y_spec.shape)
      self.step = tf.function(self._step, autograph=False).get_concrete_function(
          x_spec, tf.TensorSpec(y_spec.shape, y_spec.dtype))

  def _tap(self):
    layers = list(self.layer.submodules) + [self.layer]
    for layer in layers:
      if isinstance(layer, tf_keras.layers.Dense):
        self._wrap(layer, 'dense')
      elif isinstance(layer, blocks.PatchEmbedding):
        self._wrap(layer.norm, 'conv', embedding=layer)
      elif isinstance(layer, blocks.SplitAttention):
        layer.core = attention.attention     # maps group by group, backward by hand
    for layer in layers:   # after the embedding's: its norm is tapped twice
      if isinstance(layer, tf_keras.layers.LayerNormalization) and layer.scale:
        self._wrap(layer, 'scale')

  def _watched(self, z):
    self._tape.watch(z)   # z is new here: every op that reads it is recorded
    return z

  def _wrap(self, layer, kind: str, embedding=None):
    call = layer.call

    def tapped(inputs, *args, **kwargs):
      if self._records is None:   # the plain pass
        return call(inputs, *args, **kwargs)
      if kind == 'conv':   # z is the norm's input: the conv's output plus its bias
        z = self._watched(inputs)
        self._records.append(('conv', embedding, z))
        return call(z, *args, **kwargs)
      z = self._watched(call(inputs, *args, **kwargs))
      factor = (inputs if kind == 'dense' else
                ntk.TappedGradients._normalised(layer, inputs))  # pylint: disable=protected-access
      self._records.append((kind, factor, z))
      return z
    layer.call = tapped

  def _call(self, x):
    if isinstance(self.layer, blocks.TransformerBlock):
      return self.layer(x, training=True)
    return self.layer(x)

  def _step(self, x, dy):
    first = isinstance(self.layer, blocks.PatchEmbedding)   # x: the images, δx not needed
    self._records = []
    try:
      with tf.GradientTape(watch_accessed_variables=False) as tape:
        self._tape = tape
        if not first:
          tape.watch(x)
        y = self._call(x)
      records = self._records
    finally:
      self._records, self._tape = None, None
    sources = [z for _, _, z in records] + ([] if first else [x])
    deltas = tape.gradient(y, sources, output_gradients=dy,
                           unconnected_gradients=tf.UnconnectedGradients.ZERO)
    a = [ntk.TappedGradients._patches(f, x) if kind == 'conv' else f   # pylint: disable=protected-access
         for kind, f, _ in records]
    kernels, scales = self._theta([kind for kind, _, _ in records], a, deltas[:len(records)])
    return kernels, scales, (None if first else deltas[-1])

  @staticmethod
  def _theta(kinds, a, deltas):
    """(Θ of the kernels, Θ of the LayerNorm scales), each [b, b] float64 (zeros if none)."""
    b = deltas[0].shape[0]
    kernels = scales = tf.zeros([b, b], tf.float64)
    for kind, f, delta in zip(kinds, a, deltas):
      delta = tf.reshape(delta, [b, -1, delta.shape[-1]])
      if kind == 'scale':
        g = tf.reduce_sum(tf.cast(tf.reshape(f, delta.shape), delta.dtype) * delta, axis=1)
        scales += ntk.kernel_matrix([g])
        continue
      f = tf.reshape(f, [b, -1, f.shape[-1]])
      kernels += (ntk.token_gram_term(f, delta) if ntk.token_gram_pays(f.shape, delta.shape)
                  else ntk.kernel_matrix([tf.matmul(f, delta, transpose_a=True)]))
    return kernels, scales


class _VelocityUnit:
  """A template of one kind of unit (LayerNorms removed) and its traced
  `forward(x, ẋ) -> (y, ẏ)`: the unit's output and its derivative along ẋ (`dual`)."""

  def __init__(self, layer, input_shape: Tuple[int, ...], dtype: tf.DType):
    self.layer = _template(layer, input_shape)
    self.weights = list(self.layer.trainable_weights)
    spec = tf.TensorSpec(input_shape, dtype)
    self.forward = tf.function(
        lambda x, t: dual.unit_with_velocity(self.layer, x, t),
        autograph=False).get_concrete_function(spec, spec)
    self.output_shape = tuple(self.forward.structured_outputs[0].shape)


_CACHE: 'collections.OrderedDict[tuple, object]' = collections.OrderedDict()


def _kind(layer, input_shape: Tuple[int, ...], dtype: tf.DType) -> tuple:
  config = dict(layer.get_config())
  config.pop('name', None)
  return (type(layer).__name__, json.dumps(config, sort_keys=True, default=str),
          tuple(input_shape), dtype.name)


def _plan(model, input_shape: Tuple[int, ...], dtype: tf.DType,
          unit_class=_Unit) -> List[Tuple[object, object]]:
  """(template, the model's layer) per unit, in order; templates of `unit_class` (default
  `_Unit`) from the cache or new, one per kind: the weights of each place are assigned into
  its template right before each call (`_assign`)."""
  plan, shape = [], tuple(input_shape)
  for layer in model.encoder.units():   # in the order the forward pass runs them
    key = (unit_class.__name__,) + _kind(layer, shape, dtype)
    unit = _CACHE.get(key)
    if unit is None:
      unit = _CACHE[key] = unit_class(layer, shape, dtype)
      while len(_CACHE) > MAX_UNITS:
        _CACHE.popitem(last=False)
    else:
      _CACHE.move_to_end(key)
    plan.append((unit, layer))
    shape = unit.output_shape
  return plan


def _assign(unit, layer):
  """The layer's weights, as they are now, into its unit's template."""
  weights = layer.trainable_weights
  if [w.shape for w in weights] != [t.shape for t in unit.weights]:
    raise ValueError(f'unit {layer.name}: its weights do not match its template\'s')
  for template, weight in zip(unit.weights, weights):
    template.assign(weight)


def clear_cache():
  """Drops every kept unit (and its traces)."""
  _CACHE.clear()


def kernel_matrix(model, images, include_scales: bool = True) -> tf.Tensor:
  """Θ [B, B] float64 of `model` (`supports`) on `images` [B, H, W, 3], its weights as they
  are now: the kernels' gradients, and with `include_scales` the LayerNorm scales'."""
  with network_lib.without_grappler():   # as traced measures: their first runs skip it
    return _kernel_matrix(model, tf.convert_to_tensor(images), include_scales)


def _kernel_matrix(model, images, include_scales: bool) -> tf.Tensor:
  plan = _plan(model, tuple(images.shape), images.dtype)
  inputs, x, holds = [], images, {}
  for unit, layer in plan:   # the plain pass, keeping each unit's input
    _assign(unit, layer)
    holds[id(unit)] = layer
    inputs.append(x)
    x = unit.forward(x)
  with tf.GradientTape(watch_accessed_variables=False) as tape:
    tape.watch(x)
    total = tf.reduce_sum(tf.reduce_mean(x, axis=[1, 2]))   # Σ_i Σ_j of `AsViT.features`
  dy = tape.gradient(total, x)
  theta = None
  for (unit, layer), x in reversed(list(zip(plan, inputs))):   # δ back, unit by unit
    if holds[id(unit)] is not layer:   # its template served another place since
      _assign(unit, layer)
      holds[id(unit)] = layer
    kernels, scales, dy = unit.step(x, dy)
    term = kernels + scales if include_scales else kernels
    theta = term if theta is None else theta + term
  return theta


def features_and_velocity(model, images, tangents) -> Tuple[tf.Tensor, tf.Tensor]:
  """(h, ḣ) as `dual.features_and_velocity` gives them, [B, F] each, from the units of
  `model` (an As-ViT without LayerNorms: `dual.supports`) traced once per kind and kept, its
  weights as they are now: L^E's path in `curves.curve_metrics` where it would trace."""
  if not (dual.supports(model) and supports(model)):
    raise ValueError('units.features_and_velocity needs a built AsViT without LayerNorm, '
                     'drop path or remat')
  images = tf.convert_to_tensor(images)
  with network_lib.without_grappler():   # as traced measures: their first runs skip it
    x, t = images, tf.convert_to_tensor(tangents, images.dtype)
    for unit, layer in _plan(model, tuple(images.shape), images.dtype, _VelocityUnit):
      _assign(unit, layer)
      x, t = unit.forward(x, t)
  return tf.reduce_mean(x, axis=[1, 2]), tf.reduce_mean(t, axis=[1, 2])
