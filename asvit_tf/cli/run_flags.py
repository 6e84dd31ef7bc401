"""Flags and helpers shared by `asvit search` and `asvit grow` (absl), and the forms of
grow's --arch."""
from __future__ import annotations

import logging
from typing import Dict, Mapping, Optional, Sequence

from absl import flags
from absl import logging as absl_logging

from asvit_tf import arch as arch_lib
from asvit_tf.errors import UserInputError
from asvit_tf.search import measure as measure_lib
from asvit_tf.search import parallel
from asvit_tf.search import ray_evaluator
from asvit_tf.search import run as run_lib

FLAGS = flags.FLAGS
# The flags the functions below define belong to the command that calls them (they are its
# key flags, listed by its --help), not to this module.
flags.disclaim_key_flags()


def define_common_flags(seed_help: str):
  """--image_size --repeats (None: the preset's) --seed --data --data_dir
  --share_embedding --output_dir --progress --workers and the backend flags."""
  flags.DEFINE_integer('image_size', None, 'Input side for the metrics (paper 224, quick 32).')
  flags.DEFINE_integer('repeats', None,
                       'Initialisations each metric averages (paper 5, quick 1).')
  flags.DEFINE_integer('seed', 0, seed_help)
  flags.DEFINE_string('data', '', "Images for κ_Θ: 'photos' (seeded random crops of the photos "
                      "shipped with scikit-image), a folder of images or a TFDS name (with "
                      '--data_dir); default Gaussian noise.')
  flags.DEFINE_string('data_dir', '', 'TFDS data directory (nothing is downloaded).')
  flags.DEFINE_bool('share_embedding', False,
                    "Draw each measured topology's patch-embedding conv once for all repeats "
                    "and re-draw only Dense and LayerNorm weights, as the authors' code does "
                    '(default: every weight drawn per repeat).')
  flags.DEFINE_string('output_dir', '', 'Where the run writes (and resumes from).')
  flags.DEFINE_bool('progress', True, 'Show a progress bar.')
  define_workers_flag('L^E and κ_Θ of a topology, the candidates of a grow step',
                      'up to ~9 GB at 224 px late in a paper-preset grow')
  define_backend_flags()


def define_workers_flag(side_by_side: str, memory: str = ''):
  """--workers: the local measuring processes (`workers()`), the same flag for every
  command; `side_by_side` says what they measure together, `memory` how much one holds."""
  memory = f' ({memory})' if memory else ''
  flags.DEFINE_integer('workers', 0, f'Processes that measure side by side ({side_by_side}); '
                       '0: one per core; 1: in this process, one measurement after the '
                       f'other. Each holds one measurement in memory{memory}: use fewer when '
                       'memory is short.', lower_bound=0)


def define_backend_flags():
  """--backend --ray_address --ray_cpus_per_measurement --ray_gpus_per_measurement (any
  command whose measurements go through an `Evaluator`: `evaluator()` / `ray_options()`)."""
  flags.DEFINE_enum('backend', 'local', list(BACKENDS), 'Where the measurements run: local '
                    'worker processes (--workers), or Ray tasks (--ray_*; pip install -e '
                    '".[ray]"). The same seed gives the same result on both.')
  flags.DEFINE_string('ray_address', '', 'With --backend=ray: host:port of a running Ray '
                      'cluster\'s head (or "auto"); empty: a one-machine Ray on 127.0.0.1, '
                      'started for the run.')
  flags.DEFINE_float('ray_cpus_per_measurement', 1.0, 'With --backend=ray: CPUs a measurement '
                     '(one metric of one topology) reserves; its intra-op threads.')
  flags.DEFINE_float('ray_gpus_per_measurement', 0.0, 'With --backend=ray: GPUs a measurement '
                     'reserves (fractions share one).')


BACKENDS = ('local', 'ray')
_RAY_FLAGS = ('ray_address', 'ray_cpus_per_measurement', 'ray_gpus_per_measurement')


def preset_values(presets: Mapping[str, Dict], names: Sequence[str]) -> Dict:
  """The chosen --preset's values, overridden by the flags among `names` given explicitly
  (a None default means "the preset's")."""
  values = dict(presets[FLAGS.preset])
  for name in names:
    if FLAGS[name].value is not None:
      value = FLAGS[name].value
      values[name] = int(round(value)) if isinstance(value, float) else value
  return values


def workers() -> int:
  """--workers, with 0 meaning one per core."""
  if FLAGS.workers:
    return FLAGS.workers
  return parallel.default_workers()


def ray_options():
  """The `ray_evaluator.RayOptions` of --backend=ray, or None for --backend=local (a
  --ray_* flag given with it, or --workers with ray, is refused: it would do nothing)."""
  if FLAGS.backend != 'ray':
    given = [f'--{name}' for name in _RAY_FLAGS if FLAGS[name].present]
    if given:
      raise UserInputError(f'{", ".join(given)} given with --backend={FLAGS.backend}; the '
                       '--ray_* flags need --backend=ray')
    return None
  if 'workers' in FLAGS and FLAGS['workers'].present:
    raise UserInputError('--workers given with --backend=ray; Ray runs as many measurements '
                     'side by side as the cluster has --ray_cpus_per_measurement for')
  return ray_evaluator.RayOptions(
      address=FLAGS.ray_address.strip(), cpus_per_measurement=FLAGS.ray_cpus_per_measurement,
      gpus_per_measurement=FLAGS.ray_gpus_per_measurement).validate()


def evaluator(metrics: Sequence[str], config) -> Optional[measure_lib.Evaluator]:
  """The evaluator --backend asks for (the caller closes it), or None: the run's default
  (local worker processes)."""
  options = ray_options()
  if options is None:
    return None
  return run_lib.default_evaluator(metrics, config, ray=options)


def common_config() -> Dict:
  return dict(seed=FLAGS.seed, data=FLAGS.data, data_dir=FLAGS.data_dir,
              share_embedding=FLAGS.share_embedding)


def check_argv(command: str, argv: Sequence[str]):
  if len(argv) > 1:
    raise UserInputError(f'{command} takes no positional arguments, got {" ".join(argv[1:])}')
  if not FLAGS.output_dir:
    raise UserInputError('--output_dir is required')
  # tf.vectorized_map warns about its while_loop fallback for every measured network.
  logging.getLogger('tensorflow').setLevel(logging.ERROR)


def resolve_arch(arch: str) -> str:
  """The seed string of grow's --arch: a topology string, a variant name, `@file` (a
  seed.txt) or a search output directory (its seed.txt), as `arch.resolve` reads them.

  The scaling starts from the seed at depths 1,1,1,1 and proxy width 8 whatever is given:
  the depths and width of a scaled topology or a variant are not used, which a warning says.
  """
  topo = arch_lib.resolve(arch, name='--arch')
  seed = arch_lib.Topology.parse(topo.seed_string)
  if topo != seed:
    absl_logging.warning('--arch %s: only its seed part %s is used (the scaling starts at '
                         'depths 1,1,1,1 and proxy width 8, not at its depths %s and width '
                         '%d)', arch.strip(), topo.seed_string,
                         ','.join(map(str, topo.depths)), topo.width)
  return topo.seed_string
