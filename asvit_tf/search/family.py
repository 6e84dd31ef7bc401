"""Renders a scaling run (its grow.jsonl) as Markdown: the series table and docs/family.md.

    python -m asvit_tf.search.family runs/family_paper [--out docs/family.md]

picks As-ViT Small and Base as the steps closest to the paper's 29.0 M and 52.6 M
parameters and compares the last step with As-ViT Large. With --out NAME.md, the run's
scaling.png is copied beside the document (as NAME_scaling.png) and shown in it, so several
runs can be documented side by side.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
from typing import Dict, List, Optional, Sequence

from asvit_tf import arch as arch_lib
from asvit_tf.errors import UserInputError
from asvit_tf.models import size
from asvit_tf.search import amounts
from asvit_tf.search import state as state_lib

PAPER_SIZES = {'asvit_small': (29.0e6, 5.3e9), 'asvit_base': (52.6e6, 8.9e9),
               'asvit_large': (88.1e6, 22.6e9)}


def fmt(x, spec: str) -> str:
  """`x` formatted by `spec`, or '–' when it is missing or not finite."""
  return '–' if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, spec)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
  """A plain (unpadded) Markdown table; the '|' of topology strings is escaped."""
  cell = lambda v: str(v).replace('|', '\\|')
  lines = ['| ' + ' | '.join(map(cell, header)) + ' |', '|' + '---|' * len(header)]
  return '\n'.join(lines + ['| ' + ' | '.join(map(cell, r)) + ' |' for r in rows])


def choice_text(choice: Optional[Dict]) -> str:
  """'start', '+1 stage 3, +15 %' (a block), or 'E3 4→5, +15 %' (an MLP expansion)."""
  if not choice:
    return 'start'
  if choice.get('kind') == 'mlp':
    before, after = choice['expansion']
    return f'E{choice["stage"]} {before}→{after}, +{choice["percent"]} %'
  return f'+1 stage {choice["stage"]}, +{choice["percent"]} %'


def series_table(records: Sequence[Dict], marks: Optional[Dict[int, str]] = None) -> str:
  """Markdown table: one row per accepted model of the series. When a step records the
  draws' noise (`grow.step_noise`: the candidates were measured with several repeats), two
  columns give its ratio per metric: near or above 1, the draws decided that metric's
  ranking of the step's candidates more than the candidates did."""
  marks = marks or {}
  noisy = any(r.get('noise') for r in records)
  header = ('step', 'choice', 'topology (real width)', 'blocks', 'C', 'params (M)',
            'MACs (G)', 'L^E (proxy)', 'κ_Θ (proxy)') + (
                ('noise L^E', 'noise κ_Θ') if noisy else ())
  rows = []
  for r in records:
    c = r.get('choice')
    choice = choice_text(c)
    if c and c.get('tie_break'):
      choice += f' (tie → {c["tie_break"]})'
    step = str(r['step']) + (f' **{marks[r["step"]]}**' if r['step'] in marks else '')
    noise = r.get('noise') or {}
    rows.append((step, choice, f'`{r["arch"]}`', sum(r['depths']), r['width'],
                 f'{r["params"] / 1e6:.2f}', f'{r["macs"] / 1e9:.2f}',
                 fmt(r.get('length'), '.4g'), fmt(r.get('ntk'), '.4g')) + (
                     tuple(fmt((noise.get(m) or {}).get('ratio'), '.2f')
                           for m in ('length', 'ntk')) if noisy else ()))
  return markdown_table(header, rows)


def budget_table(records: Sequence[Dict], metric: str, budgets: Sequence[float]) -> str:
  """Markdown table: per budget, the member of the series marked nearest to it (the
  records' 'budget' lists, `grow.budget_marks`); a budget not placed yet says so."""
  where = {b: r for r in records for b in (r.get('budget') or [])}
  rows = []
  for b in budgets:
    r = where.get(b)
    if r is None:
      rows.append((amounts.format_budget(metric, b), 'not reached yet', '', '', '', ''))
      continue
    rows.append((amounts.format_budget(metric, b), r['step'], f'`{r["arch"]}`',
                 f'{r["params"] / 1e6:.2f} M', f'{r["macs"] / 1e9:.2f} G',
                 f'{100 * (r[metric] - b) / b:+.1f} %'))
  return markdown_table(('budget', 'step', 'topology (real width)', 'params', 'MACs',
                         'off the budget'), rows)


def read_records(path: str) -> List[Dict]:
  """The records of a grow.jsonl (or of the grow.jsonl inside a run directory)."""
  if os.path.isdir(path):
    path = os.path.join(path, 'grow.jsonl')
  if not os.path.exists(path):
    raise FileNotFoundError(f'{path} does not exist')
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def closest(records: Sequence[Dict], params: float) -> Dict:
  return min(records, key=lambda r: (abs(r['params'] - params), r['step']))


DEFAULT_OUT = 'docs/family.md'


def plot_name(out: str) -> str:
  """The file name of the scaling plot shown by the document `out`
  (family.md → family_scaling.png)."""
  return os.path.splitext(os.path.basename(out))[0] + '_scaling.png'


def _saved_state(run_dir: str) -> Dict:
  """The grow_state.json of a run directory ({} for a bare grow.jsonl or none saved)."""
  return (state_lib.read_state(run_dir, 'grow') if os.path.isdir(run_dir) else None) or {}


def _intro(run_dir: str, records: Sequence[Dict], state: Dict, out: str) -> List[str]:
  """The title and the paragraph saying how the run was made and where it stands."""
  config = state.get('config', {})
  measurements = 1 + sum(len(r.get('candidates') or []) for r in records)
  minutes = sum(r.get('seconds') or 0.0 for r in records) / 60
  status = ('finished: ' + state.get('stop_reason', '')) if state.get('done') else \
      f'in progress, {len(records)} steps so far'
  return [
      '# The As-ViT family from one scaling run',
      '',
      f'Seed `{config.get("arch", records[0]["arch"])}` grown by `asvit grow` (docs/design.md §9) '
      f'with metrics at {config.get("image_size", "?")}×{config.get("image_size", "?")}, '
      f'repeats {config.get("repeats", "?")}, seed {config.get("seed", "?")}, target '
      f'{config.get("target_params", 0) / 1e6:g} M, '
      f'ceiling {config.get("max_params", 0) / 1e6:g} M '
      f'parameters{_kinds_clause(config)}. Run: `{run_dir}` ({status}).',
      'Parameters at 1000 classes and MACs at 224×224 are counted from the topology '
      '(`asvit_tf.models.size`); L^E and κ_Θ are measured on the proxy width C/4.',
      f'{measurements} measurements (L^E and κ_Θ each) took {minutes:.0f} min in all: the sum '
      'of the steps\' wall times on this machine (a step resumed after a stop counts from the '
      'restart).',
      f'Regenerate with `python -m asvit_tf.search.family {run_dir} --out {out}`.',
      '',
  ]


def _kinds_clause(config: Dict) -> str:
  """', candidates depth, mlp (...)' for a run with other than the default candidate kinds."""
  kinds = config.get('candidate_kinds') or ['depth']
  if list(kinds) == ['depth']:
    return ''
  cap = max(dict(arch_lib.SEARCH_SPACE)['E1'])  # grow.MAX_EXPANSION (grow imports this module)
  return (f', candidate kinds {", ".join(kinds)} (`--candidate_kinds`; an MLP candidate raises '
          f'one stage\'s expansion E by 1, up to the search space\'s {cap})')


def _budget_section(records: Sequence[Dict], config: Dict) -> List[str]:
  """The run's --budgets and the member nearest each; nothing if it had none."""
  budgets = config.get('budgets') or []
  if not budgets:
    return []
  return ['## Budgets', '',
          'The run\'s `--budgets`: the member nearest each (`grow.budget_marks`).', '',
          budget_table(records, config.get('budget_metric', ''), budgets), '']


def _variants_section(small: Dict, base: Dict, done: bool) -> List[str]:
  """Our As-ViT Small and Base (the steps closest to the paper's sizes) beside the paper's."""
  rows = []
  for name, r in (('asvit_small', small), ('asvit_base', base)):
    p, m = PAPER_SIZES[name]
    rows.append((name, r['step'], f'`{r["arch"]}`', f'{r["params"] / 1e6:.2f} M',
                 f'{p / 1e6:.1f} M', f'{r["macs"] / 1e9:.2f} G', f'{m / 1e9:.1f} B'))
  return ['## As-ViT Small and Base',
          '',
          'The paper gives sizes, not strings; ours are the steps of this run closest to them'
          + ('.' if done else ' so far (provisional: the run has not finished).'),
          '',
          markdown_table(('variant', 'step', 'topology', 'params', 'paper params', 'MACs',
                          'paper FLOPs'), rows), '']


def _large_section(last: Dict) -> List[str]:
  """The run's last step beside the authors' As-ViT Large."""
  large = arch_lib.as_topology('asvit_large')
  large_params, large_macs = size.estimate_params(large), size.count_macs(large, 224)
  return ['## Last step vs. As-ViT Large', '',
          markdown_table(('model', 'topology', 'depths', 'C', 'params', 'MACs'), [
              (f'step {last["step"]}', f'`{last["arch"]}`',
               ','.join(map(str, last['depths'])), last['width'],
               f'{last["params"] / 1e6:.2f} M', f'{last["macs"] / 1e9:.2f} G'),
              ('As-ViT Large (authors)', f'`{large}`', ','.join(map(str, large.depths)),
               large.width, f'{large_params / 1e6:.2f} M', f'{large_macs / 1e9:.2f} G'),
          ]), '']


def render_doc(run_dir: str, plot: bool = False, out: str = DEFAULT_OUT) -> str:
  """The document `out` for the scaling run in `run_dir` (`plot`: show `plot_name(out)`)."""
  records = read_records(run_dir)
  if not records:
    raise UserInputError(f'{run_dir} has no scaling steps yet')
  state = _saved_state(run_dir)
  small = closest(records, PAPER_SIZES['asvit_small'][0])
  base = closest(records, PAPER_SIZES['asvit_base'][0])
  marks = {small['step']: 'Small', base['step']: 'Base'}
  if small['step'] == base['step']:
    marks = {small['step']: 'Small, Base'}
  lines = [*_intro(run_dir, records, state, out),
           '## The series', '', series_table(records, marks), '',
           f'![scaling path]({plot_name(out)})' if plot else '', '',
           *_budget_section(records, state.get('config', {})),
           *_variants_section(small, base, bool(state.get('done'))),
           *_large_section(records[-1])]
  return '\n'.join(lines)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('run_dir', help='output dir of `asvit grow` (or its grow.jsonl)')
  parser.add_argument('--out', default='', help='write here instead of printing')
  args = parser.parse_args(argv)
  plot = os.path.join(args.run_dir, 'scaling.png') if os.path.isdir(args.run_dir) else ''
  plot = plot if plot and os.path.exists(plot) and args.out else ''
  text = render_doc(args.run_dir, plot=bool(plot), out=args.out or DEFAULT_OUT)
  if args.out:
    out_dir = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(out_dir, exist_ok=True)
    if plot:
      shutil.copyfile(plot, os.path.join(out_dir, plot_name(args.out)))
    state_lib.atomic_write(args.out, text)
  else:
    print(text)


if __name__ == '__main__':
  main()
