"""κ_Θ's Θ and L^E's velocity from traced units kept across networks (`method='units'` of
`ntk_condition_number`; `curve_metrics`' default for L^E alone where it would trace).

A traced measure pays its trace for every new network, though networks of a search or a grow
are made of few kinds of pieces: an As-ViT is its patch embedding, its patch mergings and its
blocks (the *units*), and a grow's candidates differ from their parent by one block of a kind
the parent has. Here each unit is traced once per kind: its config, the shape of its input
and its place among the network's units of that kind (two equal blocks of one network are two
units, each holding the weights its own backward pass reads). The trace runs on a template
layer built with zero weights; a network's drawn weights are then assigned into its templates,
so one trace serves every network with that unit, at every repeat.

Θ itself is formed as `ntk.TappedGradients` forms it: per kernel, the per-image gradient
g_i = a_iᵀ δ_i from the kernel's input a and δ = ∂(Σ_i Σ_j h_j(x_i))/∂z at its output z
(the patch embedding's conv: the images' patches against δ at the norm's input; a
LayerNorm's scale γ: g_i = Σ_tokens x̂_i ⊙ δ_i). To get every δ without recomputing a unit's
forward pass, each traced unit adds an input e_z (zeros) at every such z, z + e_z: one
eager `GradientTape` over the units' calls then gives δ_z = ∂total/∂e_z, through each unit's
own traced backward. Each unit's share of Θ comes from one more traced function per kind.

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
  """A template of one kind of unit, tapped, and its two traced functions:
  `forward(x, e) -> (y, a)` (e: one zero input per tapped output z; a: per tap, what its
  weight's gradient needs besides δ) and `theta(a, δ) -> [b, b]` float64."""

  def __init__(self, layer, input_shape: Tuple[int, ...], dtype: tf.DType):
    self.layer = _template(layer, input_shape)
    self.weights = list(self.layer.trainable_weights)
    self._records, self._e = None, None
    self.kinds: List[str] = []
    self._tap()
    x_spec = tf.TensorSpec(input_shape, dtype)
    with network_lib.custom_gradients_registered() as self._registered:
      self._trace(x_spec)

  def _trace(self, x_spec):
    # A first trace finds the tapped outputs' shapes; the second takes their zero inputs.
    probe = tf.function(lambda x: self._run(x, None), autograph=False)
    outputs = probe.get_concrete_function(x_spec).structured_outputs
    self.e_specs = [tf.TensorSpec(z.shape, z.dtype) for z in outputs[2]]
    a_specs = [tf.TensorSpec(a.shape, a.dtype) for a in outputs[1]]
    self.output_shape = tuple(outputs[0].shape)
    self.forward = tf.function(self._run, autograph=False).get_concrete_function(
        x_spec, self.e_specs)
    self.theta = tf.function(self._theta, autograph=False).get_concrete_function(
        a_specs, self.e_specs)

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

  def _perturbed(self, z):
    return z if self._e is None else z + self._e[len(self._records)]

  def _wrap(self, layer, kind: str, embedding=None):
    call = layer.call

    def tapped(inputs, *args, **kwargs):
      if kind == 'conv':   # z is the norm's input: the conv's output plus its bias
        z = self._perturbed(inputs)
        self._records.append(('conv', embedding, z))
        return call(z, *args, **kwargs)
      z = self._perturbed(call(inputs, *args, **kwargs))
      factor = (inputs if kind == 'dense' else
                ntk.TappedGradients._normalised(layer, inputs))  # pylint: disable=protected-access
      self._records.append((kind, factor, z))
      return z
    layer.call = tapped

  def _run(self, x, e):
    """(y, a) with e given; (y, a, the tapped outputs z) for the probe (e None)."""
    self._records, self._e = [], e
    try:
      if isinstance(self.layer, blocks.TransformerBlock):
        y = self.layer(x, training=True)
      else:
        y = self.layer(x)
      records = self._records
    finally:
      self._records, self._e = None, None
    self.kinds = [kind for kind, _, _ in records]
    a = [ntk.TappedGradients._patches(f, x) if kind == 'conv' else f   # pylint: disable=protected-access
         for kind, f, _ in records]
    return (y, a) if e is not None else (y, a, [z for _, _, z in records])

  def _theta(self, a, deltas):
    """(Θ of the kernels, Θ of the LayerNorm scales), each [b, b] float64 (zeros if none)."""
    b = self.e_specs[0].shape[0]
    kernels = scales = tf.zeros([b, b], tf.float64)
    for kind, f, delta in zip(self.kinds, a, deltas):
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
  `_Unit`) from the cache or new. A `_Unit` is kept per place among the network's units of
  its kind (its backward pass reads its own weights); a `_VelocityUnit` once per kind (the
  network's weights are assigned into it right before each call)."""
  seen = collections.Counter()
  plan, shape = [], tuple(input_shape)
  for layer in model.encoder.units():   # in the order the forward pass runs them
    kind = (unit_class.__name__,) + _kind(layer, shape, dtype)
    key = kind + ((seen[kind],) if unit_class is _Unit else ())
    seen[kind] += 1
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
  for unit, layer in plan:
    _assign(unit, layer)
  with tf.GradientTape(watch_accessed_variables=False) as tape:
    x, saved = images, []
    for unit, _ in plan:
      e = [tf.zeros(spec.shape, spec.dtype) for spec in unit.e_specs]
      tape.watch(e)
      x, a = unit.forward(x, e)
      saved.append((unit, e, a))
    total = tf.reduce_sum(tf.reduce_mean(x, axis=[1, 2]))   # Σ_i Σ_j of `AsViT.features`
  deltas = tape.gradient(total, [z for _, e, _ in saved for z in e],
                         unconnected_gradients=tf.UnconnectedGradients.ZERO)
  for unit, _ in plan:
    # The attention's gradient functions registered while tracing: each unit's backward
    # pass holds what it needs once built (by the gradient above), so the global registry
    # lets them go; kept there, they would hold every trace for the life of the process.
    network_lib.release_custom_gradients(unit._registered)   # pylint: disable=protected-access
    unit._registered = []   # pylint: disable=protected-access
  theta, start = None, 0
  for unit, e, a in saved:
    kernels, scales = unit.theta(a, deltas[start:start + len(e)])
    start += len(e)
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
