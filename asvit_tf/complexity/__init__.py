"""Complexity of a network at initialisation (docs/design.md §5), pure functions of a topology or
a model factory: length distortion L^E, curvature κ, curvature-weighted length L^E_κ and the
NTK condition number κ_Θ. Each returns a `MetricResult` (mean, per-repeat values, bad).

A factory is `factory(use_layer_norm: bool) -> tf_keras.Model` whose model has
`features(images, training) -> [B, F]`; a topology, topology string or variant name builds
`AsViT` (optionally at another width C with `width=`). Their weights are drawn afresh at every
repeat from the authors' distributions (docs/design.md §4). A given model with `features` is
measured as it is (its weights kept), on a given curve (`curve=(u0, u1)`) or image batch
(`images=`) if wanted, so anyone can check a model's values from outside.
"""
from asvit_tf.complexity.curves import CURVE_METRICS
from asvit_tf.complexity.curves import curvature
from asvit_tf.complexity.curves import curvature_weighted_length
from asvit_tf.complexity.curves import curve_metrics
from asvit_tf.complexity.curves import length_distortion
from asvit_tf.complexity.network import Factory
from asvit_tf.complexity.ntk import ntk_condition_number
from asvit_tf.complexity.result import MetricResult

METRICS = CURVE_METRICS + ('ntk',)

__all__ = ['CURVE_METRICS', 'METRICS', 'Factory', 'MetricResult', 'curvature',
           'curvature_weighted_length', 'curve_metrics', 'length_distortion',
           'ntk_condition_number']
