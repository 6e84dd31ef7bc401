"""Flags and helpers shared by `asvit search` and `asvit grow` (absl), and the forms of
grow's --arch."""
from __future__ import annotations

import logging
from typing import Dict, Mapping, Sequence

from absl import flags
from absl import logging as absl_logging

from asvit_tf import arch as arch_lib
from asvit_tf.errors import UserInputError

FLAGS = flags.FLAGS


def define_common_flags(seed_help: str):
  """--image_size --repeats (None: the preset's) --seed --data --data_dir --output_dir
  --progress --workers."""
  flags.DEFINE_integer('image_size', None, 'Input side for the metrics (paper 224, quick 32).')
  flags.DEFINE_integer('repeats', None,
                       'Initialisations each metric averages (paper 5, quick 1).')
  flags.DEFINE_integer('seed', 0, seed_help)
  flags.DEFINE_string('data', '', 'Images for κ_Θ: a TFDS name (with --data_dir) or a folder '
                      'of images; default Gaussian noise.')
  flags.DEFINE_string('data_dir', '', 'TFDS data directory (nothing is downloaded).')
  flags.DEFINE_string('output_dir', '', 'Where the run writes (and resumes from).')
  flags.DEFINE_bool('progress', True, 'Show a progress bar.')
  flags.DEFINE_integer('workers', 0, 'Processes that measure side by side (L^E and κ_Θ of a '
                       'topology, the candidates of a grow step); 0: one per core. Each '
                       'holds one measurement in memory (up to ~9 GB at 224 px late in a '
                       'paper-preset grow): use fewer when memory is short.', lower_bound=0)


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
  from asvit_tf.search import parallel  # pylint: disable=g-import-not-at-top
  return parallel.default_workers()


def common_config() -> Dict:
  return dict(seed=FLAGS.seed, data=FLAGS.data, data_dir=FLAGS.data_dir)


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
