"""`asvit measure ARCH [--metrics=length,curvature,curvature_length,ntk] [--image_size=224]
[--repeats=5] [--width=C] [--share_embedding] [--noinclude_scales]
[--data=photos|FOLDER|TFDS_NAME] [--json]`.

Measures the complexity of ARCH at initialisation and prints one row per metric: its mean,
the per-repeat values, whether the network is bad, and the seconds the measurement took
(build, trace and all repeats). The numbers follow `asvit_tf.validation` (image sides >= 4, the
stride; a network beyond any accelerator's memory is refused before TensorFlow loads).
"""
from __future__ import annotations

import json
import math
from typing import Dict, Sequence

from absl import flags

from asvit_tf import arch as arch_lib
from asvit_tf import validation
from asvit_tf.errors import UserInputError
from asvit_tf.models import memory
from asvit_tf.search import data as data_lib

ARCH_ARGUMENT = 'ARCH'

# asvit_tf.complexity.METRICS, repeated so that --help and argument errors need no TensorFlow.
METRICS = ('length', 'curvature', 'curvature_length', 'ntk')
TITLES = {'length': 'L^E (length distortion)', 'curvature': 'kappa (curvature)',
          'curvature_length': 'L^E_kappa (curvature-weighted length)',
          'ntk': 'kappa_Theta (NTK condition number)'}


def define_flags():
  """Defines the flags of this command (the dispatcher calls it before parsing)."""
  flags.DEFINE_list('metrics', list(METRICS), f'Metrics to measure, any of {METRICS}.')
  flags.DEFINE_integer('image_size', 224, 'Image side in pixels.')
  flags.DEFINE_integer('repeats', 5, 'Independent initialisations to average over.')
  flags.DEFINE_integer('seed', 0, 'Random seed (same seed, same numbers).')
  flags.DEFINE_integer('num_points', 10, 'Points on the input curve (curve metrics).')
  flags.DEFINE_integer('batch_size', 16, 'Noise images for the NTK.')
  flags.DEFINE_integer('width', None, 'Overrides the width C of the topology.')
  flags.DEFINE_enum('mode', 'auto', ['auto', 'eager', 'graph', 'xla'],
                    'Execution of the measures: auto picks per measure what was measured '
                    'fastest (see asvit_tf.complexity.curve_metrics).')
  flags.DEFINE_bool('share_embedding', False,
                    "Draw the patch embedding's conv once for all repeats and re-draw only "
                    "Dense and LayerNorm weights, as the authors' code does (default: every "
                    'weight drawn per repeat).')
  flags.DEFINE_bool('include_scales', True,
                    "kappa_Theta differentiates the LayerNorm scales gamma besides the kernels, "
                    "as the authors' code does; --noinclude_scales: the kernels only.")
  flags.DEFINE_string('data', '', "The NTK's images: 'photos' (seeded random crops of "
                      "scikit-image's photos), a folder of images or a prepared TFDS name; "
                      'default Gaussian noise.')
  flags.DEFINE_bool('json', False, 'Print JSON instead of a table.')


FLAGS = flags.FLAGS


def measure(arch, metrics: Sequence[str], image_size: int = 224, repeats: int = 5,
            seed: int = 0, num_points: int = 10, batch_size: int = 16, width=None,
            mode: str = 'auto', share_embedding: bool = False,
            data: str = '', include_scales: bool = True) -> Dict[str, object]:
  """{metric: MetricResult} for ARCH, each metric measured (and timed) on its own; κ_Θ on
  the `data` batch (`asvit_tf.search.data.load_batch`, seeded by `seed`) if given, and
  differentiating the LayerNorm scales unless `include_scales` is False."""
  unknown = [m for m in metrics if m not in METRICS]
  if unknown or not metrics:
    raise UserInputError(f'--metrics must be a list of {", ".join(METRICS)}; got {list(metrics)}')
  topology = arch_lib.as_topology(arch)
  if width is not None:
    topology = topology.replace(width=width)   # validates the width before TF loads
  for name, value in (('repeats', repeats), ('num_points', num_points),
                      ('batch_size', batch_size)):
    validation.integer(f'--{name}', value)
  memory.check_buildable(topology, image_size, None, name='--image_size')
  images = None
  if data and 'ntk' in metrics:
    images = data_lib.load_batch(data, '', image_size, batch_size, seed)
  from asvit_tf import complexity  # pylint: disable=g-import-not-at-top
  out = {}
  for m in metrics:
    if m == 'ntk':
      out[m] = complexity.ntk_condition_number(topology, image_size, repeats, seed,
                                               images=images, batch_size=batch_size, mode=mode,
                                               share_embedding=share_embedding,
                                               include_scales=include_scales)
    else:
      out[m] = complexity.curve_metrics(topology, image_size, num_points, repeats, seed,
                                        (m,), mode=mode, share_embedding=share_embedding)[m]
  return out


def _number(x: float) -> str:
  return f'{x:.6g}' if math.isfinite(x) else str(x)


def format_table(topology, results, image_size: int) -> str:
  header = ('metric', 'mean', 'values', 'bad', 'seconds')
  rows = [(TITLES[m], _number(r.mean), ' '.join(_number(v) for v in r.values),
           'yes' if r.bad else 'no', f'{r.seconds:.2f}') for m, r in results.items()]
  widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
  line = lambda r: '  '.join(v.ljust(w) for v, w in zip(r, widths)).rstrip()
  return '\n'.join([f'{topology}  ({image_size}x{image_size})', line(header),
                    line(tuple('-' * w for w in widths))] + [line(r) for r in rows])


def to_json(topology, results, image_size: int) -> str:
  # JSON has no inf/nan: non-finite numbers become strings ("inf", "nan").
  clean = lambda x: x if math.isfinite(x) else str(x)
  return json.dumps({'topology': str(topology), 'image_size': image_size, 'metrics': {
      m: {'mean': clean(r.mean), 'values': [clean(v) for v in r.values], 'bad': r.bad,
          'seconds': round(r.seconds, 3)} for m, r in results.items()}}, indent=2)


def main(argv):
  if len(argv) != 2:
    raise UserInputError(f'measure takes one ARCH: {arch_lib.arch_help()}')
  topology = arch_lib.resolve(argv[1])
  if FLAGS.width is not None:
    topology = topology.replace(width=FLAGS.width)
  results = measure(topology, FLAGS.metrics, FLAGS.image_size, FLAGS.repeats, FLAGS.seed,
                    FLAGS.num_points, FLAGS.batch_size, None, FLAGS.mode,
                    FLAGS.share_embedding, FLAGS.data, FLAGS.include_scales)
  text = (to_json if FLAGS.json else format_table)(topology, results, FLAGS.image_size)
  print(text)
