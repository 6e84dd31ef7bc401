"""Trained accuracy with and without the residual merge (issue 21), paired by topology.

  asvit correlate --train --n=40 --out_dir=runs/asvit_mnist_n40
  asvit correlate --train --n=8 --residual_merge --reference= --out_dir=runs/asvit_mnist_n8_res
  python benchmarks/residual_merge_accuracy.py --plain=runs/asvit_mnist_n40 \
      --residual=runs/asvit_mnist_n8_res --out=docs/residual_merge_accuracy.md

Both `asvit correlate --train` runs sample the same topologies (seed 0: the first N of a larger
sample are a smaller one's N) and train them under one budget, so each topology's two
accuracies differ only by the merge (and the weights the shortcut's kernels shift in the
draw order). Pairs every topology trained by both runs, with the measures at initialisation
(224 px, `OUT/measures.jsonl`) where both runs have them, and writes a Markdown table.
"""
from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
import numpy as np  # noqa: E402
from scipy import stats  # noqa: E402

from asvit_tf.search import state as state_lib  # noqa: E402
from asvit_tf.errors import UserInputError  # noqa: E402
from benchmarks import _report  # noqa: E402

flags.DEFINE_string('plain', None, '`asvit correlate --train` run with the plain merge.')
flags.DEFINE_string('residual', None, 'The same with --residual_merge.')
flags.DEFINE_string('out', '', 'Markdown file to write (empty: print only).')
FLAGS = flags.FLAGS


def _settings(run: str) -> dict:
  path = os.path.join(run, 'train_settings.json')
  if not os.path.exists(path):
    raise UserInputError(f'{run} is not an `asvit correlate --train` run (no {path})')
  with open(path, encoding='utf-8') as f:
    return json.load(f)


def _records(run: str, name: str) -> dict:
  path = os.path.join(run, name)
  if not os.path.exists(path):
    return {}
  return {r['key']: r for r in state_lib.read_jsonl(path)}


def load_pairs(plain: str, residual: str):
  """[(topology, plain trained record, residual trained record, plain measures, residual
  measures)] in the residual run's order; refuses runs of other budgets or merges."""
  a, b = _settings(plain), _settings(residual)
  if a.get('merge') != 'plain' or b.get('merge') != 'residual':
    raise UserInputError(f'--plain must be a plain-merge run and --residual a residual one, '
                         f'got {a.get("merge")!r} and {b.get("merge")!r}')
  diff = sorted(k for k in set(a) | set(b) if k != 'merge' and a.get(k) != b.get(k))
  if diff:
    raise UserInputError(f'the two runs trained under other budgets ({", ".join(diff)} differ)')
  ta, tb = _records(plain, 'trained.jsonl'), _records(residual, 'trained.jsonl')
  ma, mb = _records(plain, 'measures.jsonl'), _records(residual, 'measures.jsonl')
  keys = [k for k in tb if k in ta]
  if not keys:
    raise UserInputError(f'{plain} and {residual} trained no topology in common')
  # Measures are keyed by the measured network (depths and width written out, the trained
  # record's `trained`), trainings by the sampled topology.
  measured = lambda m, t: m.get(t.get('trained', t['key']))
  return [(k, ta[k], tb[k], measured(ma, ta[k]), measured(mb, tb[k])) for k in keys]


def _fmt(x, spec: str) -> str:
  return format(x, spec) if isinstance(x, (int, float)) else '—'


def report(pairs) -> str:
  """The paired table and its summary as Markdown."""
  rows, deltas = [], []
  for key, ta, tb, ma, mb in pairs:
    delta = tb['accuracy'] - ta['accuracy']
    deltas.append(delta)
    rows.append((f'`{key}`'.replace('|', '\\|'), f'{ta["accuracy"]:.3f}',
                 f'{tb["accuracy"]:.3f}', f'{delta:+.3f}',
                 _fmt((ma or {}).get('length'), '.4g'), _fmt((mb or {}).get('length'), '.4g'),
                 _fmt((ma or {}).get('ntk'), '.4g'), _fmt((mb or {}).get('ntk'), '.4g')))
  deltas = np.array(deltas)
  better, worse = int((deltas > 0).sum()), int((deltas < 0).sum())
  lines = [_report.markdown_table(
      ('topology', 'acc. plain', 'acc. residual', 'Δ', 'L^E plain', 'L^E residual',
       'κ_Θ plain', 'κ_Θ residual'), rows), '',
      f'{len(deltas)} topologies: residual − plain accuracy mean {deltas.mean():+.4f}, '
      f'sd {deltas.std(ddof=1) if len(deltas) > 1 else 0.0:.4f}, '
      f'min {deltas.min():+.3f}, max {deltas.max():+.3f}; residual better on {better}, '
      f'worse on {worse}, equal on {len(deltas) - better - worse}.']
  if better + worse >= 1 and len(deltas) > 1:
    p = stats.wilcoxon(deltas, zero_method='zsplit').pvalue
    lines.append(f'Wilcoxon signed-rank test of Δ = 0 (zeros split): p = {p:.3f}.')
  measured = [(ma, mb) for _, _, _, ma, mb in pairs if ma and mb]
  for metric, name in (('length', 'L^E'), ('ntk', 'κ_Θ')):
    ratio = [mb[metric] / ma[metric] for ma, mb in measured
             if isinstance(ma.get(metric), float) and isinstance(mb.get(metric), float)]
    if ratio:
      lines.append(f'{name} residual / plain over {len(ratio)} topologies: median '
                   f'{np.median(ratio):.3f}, range {min(ratio):.3f}–{max(ratio):.3f}.')
  return '\n'.join(lines) + '\n'


def main(argv):
  del argv
  if not FLAGS.plain or not FLAGS.residual:
    raise UserInputError('give both --plain=DIR and --residual=DIR')
  text = report(load_pairs(FLAGS.plain, FLAGS.residual))
  print(text)
  if FLAGS.out:
    header = ('# Trained accuracy with and without the residual merge\n\nCommand: `'
              f'{_report.command_line()}`\n\n')
    state_lib.atomic_write(FLAGS.out, header + text)


if __name__ == '__main__':
  try:
    app.run(main)
  except UserInputError as e:
    sys.exit(f'error: {e}')
