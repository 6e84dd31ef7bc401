"""Brute-force references, computed the way the authors' code does: for the curves one
reverse-mode pass per output coordinate (and nested tapes for the second derivative), for
the NTK a Python loop over the images. Slow by design; the tests check the fast measures
against them and `benchmarks/complexity_speed.py` times them.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import tensorflow as tf

from asvit_tf.complexity import curves


def _first_derivatives(features, u0, u1, theta, coordinates):
  """v [n, len(coordinates)]: one forward, then one reverse pass per coordinate j of
  Σ_k h_j(θ_k) with respect to θ (the points are independent: this is dh_j/dθ at each θ_k).
  """
  with tf.GradientTape(persistent=True) as tape:
    tape.watch(theta)
    h = features(curves.curve_points(u0, u1, theta))
    coordinates = range(h.shape[-1]) if coordinates is None else coordinates
    sums = [tf.reduce_sum(h[:, j]) for j in coordinates]
  return np.stack([tape.gradient(s, theta).numpy() for s in sums], axis=1)


def _second_derivatives(features, u0, u1, theta, coordinates):
  """(v, a) for the given coordinates from one forward under nested tapes; the outer tape
  records every coordinate's reverse pass, so memory grows with len(coordinates)."""
  with tf.GradientTape(persistent=True) as outer:
    outer.watch(theta)
    with tf.GradientTape(persistent=True) as inner:
      inner.watch(theta)
      h = features(curves.curve_points(u0, u1, theta))
      sums = [tf.reduce_sum(h[:, j]) for j in coordinates]
    vs = [inner.gradient(s, theta) for s in sums]
    v_sums = [tf.reduce_sum(v) for v in vs]
  v = np.stack([x.numpy() for x in vs], axis=1)
  a = np.stack([outer.gradient(s, theta).numpy() for s in v_sums], axis=1)
  return v, a


def curve_derivatives(features, u0, u1, theta, second_order: bool = True,
                      coordinates: Optional[Sequence[int]] = None,
                      chunk: Optional[int] = None):
  """(v, a) as numpy [n, len(coordinates)] (a is None without `second_order`).

  With `second_order`, coordinates go `chunk` at a time (default: all) through one forward
  each under nested tapes: TensorFlow cannot free one coordinate's recorded reverse pass
  before the next, so a small chunk bounds the memory at the price of more forwards.
  """
  theta = tf.convert_to_tensor(theta)
  if not second_order:
    return _first_derivatives(features, u0, u1, theta, coordinates), None
  if coordinates is None:
    coordinates = range(int(features(curves.curve_points(u0, u1, theta[:1])).shape[-1]))
  coordinates = list(coordinates)
  chunk = chunk or len(coordinates)
  parts = [_second_derivatives(features, u0, u1, theta, coordinates[i:i + chunk])
           for i in range(0, len(coordinates), chunk)]
  return (np.concatenate([p[0] for p in parts], axis=1),
          np.concatenate([p[1] for p in parts], axis=1))


def curve_metrics(features, u0, u1, theta):
  """{'length', 'curvature', 'curvature_length'} of one curve from the per-coordinate v, a."""
  v, a = curve_derivatives(features, u0, u1, theta)
  products = curves.point_products(tf.constant(v), tf.constant(a))
  return curves.metrics_from_products({k: t.numpy() for k, t in products.items()})


def authors_ntk(features, weights, images):
  """Θ [B, B] as the authors' code computes it: one forward of the whole batch, then for
  each image i one reverse pass of Σ_j h_j(x_i) through that batch (B passes, each as
  costly as a batch's backward)."""
  with tf.GradientTape(persistent=True, watch_accessed_variables=False) as tape:
    tape.watch(weights)
    h = features(images)
    sums = [tf.reduce_sum(h[i]) for i in range(int(images.shape[0]))]
  rows = []
  for s in sums:
    grads = [g for g in tape.gradient(s, weights) if g is not None]
    rows.append(np.concatenate([g.numpy().astype(np.float64).ravel() for g in grads]))
  g = np.stack(rows)
  return g @ g.T


def per_image_gradient_loop(features, weights, images, step=None):
  """Θ [B, B] from a Python loop over the images, one forward and reverse pass each.

  `step(x) -> list of gradients` may be a traced function of one image [1, H, W, 3]; by
  default the pass runs eagerly, like the authors' PyTorch loop.
  """
  def eager_step(x):
    with tf.GradientTape(watch_accessed_variables=False) as tape:
      tape.watch(weights)
      total = tf.reduce_sum(features(x))
    return [g for g in tape.gradient(total, weights) if g is not None]
  step = step or eager_step
  rows = []
  for i in range(int(images.shape[0])):
    grads = step(images[i:i + 1])
    rows.append(np.concatenate([g.numpy().astype(np.float64).ravel() for g in grads]))
  g = np.stack(rows)
  return g @ g.T
