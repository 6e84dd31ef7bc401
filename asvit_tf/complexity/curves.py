"""Length distortion, curvature and curvature-weighted length of the feature curve
(docs/design.md §5, §6).

The input is the great circle x(θ) = u0 cos θ + u1 sin θ through two orthonormal directions
of R^(H·W·3), sampled at θ_k = linspace(0, 2π, n) (both ends, no √N scale). h(θ) are the
pooled features of the network with LayerNorms removed, in training mode. The curve is
2π-periodic, so θ_{n−1} = 2π is the point θ_0 = 0 again: its terms are those of θ_0, counted
twice as the sum asks, and the network sees only the n − 1 distinct points. Those go
through the network as one batch: one forward-mode pass with tangent 1 on every θ_k gives
v_k = dh/dθ(θ_k) for all points and all features at once (a sample's features depend on its
own θ only), and a second accumulator around the first gives a_k = d²h/dθ². What runs where:
- L^E alone on an As-ViT: `dual` pushes the tangent dx/dθ through the layers by hand, the
  same v_k faster than the accumulator; where it would be traced, unit by unit (`units`:
  each patch embedding, merging and block traced once per kind and kept across networks);
- κ or L^E_κ on an As-ViT or a PiT (LayerNorms removed, no drop path): `jet` pushes
  (x, dx/dθ, d²x/dθ² = −x) through the layers by hand, (h, v, a) from one plain pass with no
  autodiff, several times cheaper than tracing forward-over-forward;
- any other model (or a given one with LayerNorms): the accumulators above.
(docs/benchmarks.md has the times.)

Per point, with vv = v·v, aa = a·a, va = v·a and D = vv·aa − va² (in float64):
  L^E   = Σ_k √vv
  κ     = Σ_k √D / vv^(3/2)
  L^E_κ = Σ_k ‖d(v/‖v‖)/dθ‖ = Σ_k √D / vv      (d(v/‖v‖)/dθ = a/‖v‖ − v·va/‖v‖³)
D is evaluated as vv·‖a⊥‖² with a⊥ = a − (va/vv)·v, the part of a normal to v: the same
number, without the cancellation of vv·aa − va² that leaves √eps·‖v‖‖a‖ on a straight curve.
"""
from __future__ import annotations

import time
from typing import Dict, Optional, Sequence

from absl import logging
import numpy as np
import tensorflow as tf
import tf_keras

from asvit_tf import seeding
from asvit_tf.complexity import dual
from asvit_tf.complexity import jet
from asvit_tf.complexity import network as network_lib
from asvit_tf.complexity import units
from asvit_tf.complexity.result import MetricResult
from asvit_tf.errors import UserInputError

CURVE_METRICS = ('length', 'curvature', 'curvature_length')
METHODS = ('auto', 'units', 'network')
_NEEDS_SECOND_ORDER = ('curvature', 'curvature_length')


def input_curve(image_shape: Sequence[int], seed: int, repeat: int = 0):
  """(u0, u1): orthonormal directions of R^(H·W·3) as two float64 [H, W, 3] arrays."""
  n = int(np.prod(image_shape))
  gaussian = seeding.measure_rng(seed, seeding.CURVE, repeat).standard_normal((n, 2))
  q, _ = np.linalg.qr(gaussian)
  return q[:, 0].reshape(image_shape), q[:, 1].reshape(image_shape)


def angles(num_points: int) -> np.ndarray:
  if num_points < 1:
    raise UserInputError(f'num_points must be >= 1, got {num_points}')
  return np.linspace(0.0, 2.0 * np.pi, num_points)


def distinct_angles(theta: np.ndarray) -> np.ndarray:
  """The angles without the last when it closes the circle (θ = 2π is θ = 0 again)."""
  return theta[:-1] if len(theta) >= 2 else theta


def with_period_end(per_point: np.ndarray, num_points: int) -> np.ndarray:
  """Per-point values of `distinct_angles`, completed to all `num_points` angles: the
  point at 2π gets the values of the point at 0."""
  if num_points >= 2:
    per_point = np.concatenate([per_point, per_point[:1]])
  return per_point


def curve_points(u0, u1, theta):
  """x(θ_k) = u0 cos θ_k + u1 sin θ_k: [n, H, W, 3] from [H, W, 3] directions and [n] θ."""
  c = tf.reshape(tf.cos(theta), [-1, 1, 1, 1])
  s = tf.reshape(tf.sin(theta), [-1, 1, 1, 1])
  return c * u0[None] + s * u1[None]


def curve_tangents(u0, u1, theta):
  """dx/dθ(θ_k) = −u0 sin θ_k + u1 cos θ_k: [n, H, W, 3]."""
  c = tf.reshape(tf.cos(theta), [-1, 1, 1, 1])
  s = tf.reshape(tf.sin(theta), [-1, 1, 1, 1])
  return c * u1[None] - s * u0[None]


def derivatives(features, u0, u1, theta, second_order: bool = True):
  """(h, v, a) along the curve, each [n, F]; a is None without `second_order`.

  `features` maps images [n, H, W, 3] to [n, F]. One forward-mode pass (tangent 1 on θ)
  for v, forward-over-forward for a.
  """
  ones = tf.ones_like(theta)
  zero = tf.UnconnectedGradients.ZERO
  if not second_order:
    with tf.autodiff.ForwardAccumulator(theta, ones) as acc:
      h = features(curve_points(u0, u1, theta))
    return h, acc.jvp(h, unconnected_gradients=zero), None
  with tf.autodiff.ForwardAccumulator(theta, ones) as outer:
    with tf.autodiff.ForwardAccumulator(theta, ones) as inner:
      h = features(curve_points(u0, u1, theta))
    v = inner.jvp(h, unconnected_gradients=zero)
  return h, v, outer.jvp(v, unconnected_gradients=zero)


def point_products(v, a=None):
  """Per-point float64 products, each [n]: 'vv' and, with a, 'aa', 'va' and 'aperp'
  (‖a⊥‖², a⊥ = a − (va/vv)·v)."""
  n = tf.shape(v)[0]
  v = tf.reshape(tf.cast(v, tf.float64), [n, -1])
  vv = tf.reduce_sum(v * v, axis=1)
  out = {'vv': vv}
  if a is not None:
    a = tf.reshape(tf.cast(a, tf.float64), [n, -1])
    va = tf.reduce_sum(v * a, axis=1)
    a_perp = a - (va / vv)[:, None] * v
    out.update(aa=tf.reduce_sum(a * a, axis=1), va=va,
               aperp=tf.reduce_sum(a_perp * a_perp, axis=1))
  return out


def metrics_from_products(products: Dict[str, np.ndarray]) -> Dict[str, float]:
  """L^E and, with 'aa' and 'va' (and optionally 'aperp'), κ and L^E_κ: sums over the points.

  A zero or non-finite velocity gives a non-finite value, never an exception.
  """
  vv = np.asarray(products['vv'], np.float64)
  with np.errstate(all='ignore'):
    out = {'length': float(np.sum(np.sqrt(vv)))}
    if 'aa' in products:
      if 'aperp' in products:
        d = vv * np.asarray(products['aperp'], np.float64)
      else:
        va = np.asarray(products['va'], np.float64)
        d = vv * np.asarray(products['aa'], np.float64) - va * va
      # D >= 0 by Cauchy-Schwarz; rounding can push a straight curve a hair below 0.
      root = np.where(np.isfinite(d), np.sqrt(np.maximum(d, 0.0)), np.nan)
      out['curvature'] = float(np.sum(root / vv ** 1.5))
      out['curvature_length'] = float(np.sum(root / vv))
  return out


def _check_metrics(metrics: Sequence[str]):
  unknown = [m for m in metrics if m not in CURVE_METRICS]
  if unknown or not metrics:
    raise UserInputError(f'unknown curve metric(s) {list(metrics)}; known: {CURVE_METRICS}')


def check_curve(curve):
  """(u0, u1) as two float64 arrays of one [H, W, C] shape; a ValueError otherwise."""
  try:
    u0, u1 = (np.asarray(u, np.float64) for u in curve)
  except (TypeError, ValueError):
    raise UserInputError('curve must be a pair (u0, u1) of [H, W, C] arrays') from None
  if u0.ndim != 3 or u0.shape != u1.shape:
    raise UserInputError(f'curve must be a pair (u0, u1) of [H, W, C] arrays of one shape, got '
                     f'shapes {u0.shape} and {u1.shape}')
  return u0, u1


def curve_metrics(arch_or_factory: network_lib.ArchOrFactory, image_size: int = 224,
                  num_points: int = 10, repeats: int = 5, seed: int = 0,
                  metrics: Sequence[str] = CURVE_METRICS, *, width: Optional[int] = None,
                  mode: str = 'auto', curve=None, share_embedding: bool = False,
                  method: str = 'auto', repeat_range: Optional[Sequence[int]] = None
                  ) -> Dict[str, MetricResult]:
  """Several curve metrics from one pass per repeat: {metric: MetricResult}.

  Args:
    arch_or_factory: what to measure. A `Topology`, topology string or variant name (built
      as `AsViT` with LayerNorms removed) or a factory `factory(use_layer_norm: bool) ->
      model` whose model has `features(images, training) -> [B, F]` (called with
      use_layer_norm=False): its weights are drawn afresh at every repeat. Or a given model
      with `features` (e.g. `AsViT(..., use_layer_norm=False)` holding the weights to check),
      measured as it is: its weights are neither drawn nor changed, and only the curve
      changes from repeat to repeat. The authors measure without LayerNorms: a given model
      with LayerNorms is measured with them (a warning says so).
    image_size: square input side (ignored when `curve` is given).
    num_points: n, the points θ_k = linspace(0, 2π, n) on the input curve.
    repeats: independent initialisations, each with its own curve; the result averages.
      With a given model and a given curve every repeat computes the same: use 1.
    seed: same seed, same numbers.
    metrics: any of 'length' (L^E), 'curvature' (κ), 'curvature_length' (L^E_κ).
    width: overrides the topology's C.
    curve: optional (u0, u1), two [H, W, 3] arrays: the input curve x(θ) = u0 cos θ +
      u1 sin θ of every repeat, as given (docs/design.md §5 takes them orthonormal:
      `input_curve(shape, seed, repeat)` draws the measure's own). Default: a new curve per
      repeat.
    share_embedding: draw the patch embedding's conv once and keep it for all repeats,
      re-drawing only Dense and LayerNorm weights, as the authors' code does (default: every
      weight drawn per repeat). Not for a given model.
    mode: 'eager', 'graph' (one `tf.function` traced per call, reused by the repeats),
      'xla' (the same, XLA-compiled) or 'auto': eager for a topology (or a factory
      carrying its MACs, `network.with_macs`) of a small batch cost measured at most
      `network.EAGER_REPEATS` times (`network.eager_pays`: one trace costs more than those
      eager repeats); otherwise graph for L^E alone on an As-ViT (by
      hand: traced, its attention maps run group by group, `attention`), eager for L^E
      alone by the accumulator (other models), graph when κ or L^E_κ are asked (by the
      jet on an As-ViT or a PiT, its attention maps group by group; else by
      forward-over-forward). Chosen by measurement (docs/benchmarks.md): by hand, one
      trace is repaid by a measurement's repeats; by the accumulator, eager beats a trace
      at a few repeats and needs less memory; forward-over-forward in eager is slower and
      needs far more memory than traced, on large networks; the jet, eager wins below the
      batch bound (the seed at 64 px, the smallest PiT at 224 px) and traced above it (the
      median PiT: less CPU and memory at 5 repeats).
    method: 'network' (the paths above: the whole network as one function, run as `mode`
      says), 'units' (L^E alone on an As-ViT: the tangent pushed through by hand as by
      `dual`, each unit — patch embedding, merging, block — traced once per kind and kept
      across networks, `units.features_and_velocity`, so a network made of units met before
      pays no trace; `mode` unused) or 'auto': units where they apply and `mode` is 'auto'
      and would trace (`network.eager_pays` says no), else network. Where 'auto' would run
      eagerly (a small batch, few repeats) eager wins: a search there meets mostly new units,
      and each would be traced (the quick preset's search took 2× as long by units); where it
      would trace, the units remove the trace (docs/benchmarks.md). Same values to float
      rounding.
    repeat_range: (start, stop): only repeats start..stop-1 of the `repeats` (the path still
      chosen for all of them), so a measurement can run in parts whose values, put together
      in order, are the whole measurement's (`network.measured_repeats`). Default: all.

  Each result's `seconds` is the wall time of the whole call.
  """
  metrics = tuple(metrics)
  _check_metrics(metrics)
  network_lib.check_mode(mode)
  if method not in METHODS:
    raise UserInputError(f'method must be one of {METHODS}, got {method!r}')
  measured = network_lib.measured_repeats(repeats, repeat_range)
  theta_np = angles(num_points)
  if curve is not None:
    curve = check_curve(curve)
    shape = curve[0].shape
  else:
    shape = network_lib.image_shape(image_size)
  start = time.perf_counter()
  values = {m: [] for m in metrics}
  second_order = any(m in _NEEDS_SECOND_ORDER for m in metrics)
  net = network_lib.measured_network(arch_or_factory, width, False, shape, share_embedding)
  if net.given and _has_layer_norm(net.model):
    logging.warning('curve metrics of a given model with LayerNorms: measured with them '
                    '(the authors measure without; build it with use_layer_norm=False)')

  eager = mode == 'auto' and network_lib.eager_pays(
      arch_or_factory, width, shape, len(distinct_angles(theta_np)), repeats)
  run = _measuring_function(net, second_order, method, mode, eager)

  theta = tf.constant(distinct_angles(theta_np), net.dtype)
  for r in measured:
    if not net.given:
      net.reinitialise(seed, r, share_embedding)
    u0, u1 = curve if curve is not None else input_curve(shape, seed, r)
    out = run(tf.constant(u0, net.dtype), tf.constant(u1, net.dtype), theta)
    result = metrics_from_products(
        {k: with_period_end(t.numpy(), num_points) for k, t in out.items()})
    for m in metrics:
      values[m].append(result[m])
    logging.vlog(1, 'curve metrics repeat %d/%d: %s', r + 1, repeats, result)
  seconds = time.perf_counter() - start
  return {m: MetricResult.from_values(values[m], seconds) for m in metrics}


def _measuring_function(net: network_lib.Network, second_order: bool, method: str, mode: str,
                        eager: bool):
  """`run(u0, u1, θ)` -> the per-point products (`point_products`) of `net` along the curve,
  by the path `method` and `mode` pick (`curve_metrics`); `eager`: what mode='auto' picks
  when the path is traced by default (`network.eager_pays`)."""

  def features(images):
    return net.model.features(images, training=True)

  # By hand: L^E alone on an As-ViT pushes the tangent through (`dual`); κ or L^E_κ on an
  # As-ViT or a PiT push the second-order jet through (`jet`); one plain pass, no autodiff.
  by_hand = not second_order and dual.supports(net.model)
  by_jet = second_order and jet.supports(net.model)
  units_apply = by_hand and units.supports(net.model)
  if method == 'units' and not units_apply:
    raise UserInputError('method="units" measures L^E alone on an As-ViT without '
                         'LayerNorms, drop path or remat; use method="auto"')
  by_units = method == 'units' or (method == 'auto' and mode == 'auto' and units_apply
                                    and not eager)
  if mode == 'auto':
    mode = 'graph' if (second_order or by_hand) and not eager else 'eager'

  def products(u0, u1, theta):
    if not (by_hand or by_jet):
      _, v, a = derivatives(features, u0, u1, theta, second_order)
      return point_products(v, a)
    x, dx = curve_points(u0, u1, theta), curve_tangents(u0, u1, theta)
    if by_units:
      return point_products(units.features_and_velocity(net.model, x, dx)[1])
    if by_hand:
      return point_products(dual.features_and_velocity(net.model, x, dx)[1])
    _, v, a = jet.features_jet(net.model, x, dx, -x)    # d²x/dθ² = −x on the circle
    return point_products(v, a)
  # The units trace themselves; the rest is one function, traced or not as `mode` says.
  return products if by_units else network_lib.compile_mode(products, mode)


def _has_layer_norm(model) -> bool:
  return any(isinstance(layer, tf_keras.layers.LayerNormalization)
             for layer in model.submodules)


def length_distortion(arch_or_factory, image_size: int = 224, num_points: int = 10,
                      repeats: int = 5, seed: int = 0, **kwargs) -> MetricResult:
  """L^E = Σ_k ‖dh/dθ(θ_k)‖, averaged over repeats (higher is better). See `curve_metrics`."""
  return curve_metrics(arch_or_factory, image_size, num_points, repeats, seed,
                       ('length',), **kwargs)['length']


def curvature(arch_or_factory, image_size: int = 224, num_points: int = 10, repeats: int = 5,
              seed: int = 0, **kwargs) -> MetricResult:
  """κ = Σ_k √((v·v)(a·a) − (v·a)²) / (v·v)^(3/2) (lower is better). See `curve_metrics`."""
  return curve_metrics(arch_or_factory, image_size, num_points, repeats, seed,
                       ('curvature',), **kwargs)['curvature']


def curvature_weighted_length(arch_or_factory, image_size: int = 224, num_points: int = 10,
                              repeats: int = 5, seed: int = 0, **kwargs) -> MetricResult:
  """L^E_κ = Σ_k ‖d(v/‖v‖)/dθ‖ (the paper finds it uncorrelated). See `curve_metrics`."""
  return curve_metrics(arch_or_factory, image_size, num_points, repeats, seed,
                       ('curvature_length',), **kwargs)['curvature_length']
