"""`asvit compare_families`: scaling runs at the paper's three sizes."""
import json
import os
import subprocess
import sys

import pytest

from asvit_tf.errors import UserInputError
from asvit_tf.search import family_compare

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def series(points):
  """Hand-made grow records from (params in M, MACs in G) per step."""
  return [{'step': i, 'arch': f'arch{i}', 'params': int(p * 1e6), 'macs': int(m * 1e9),
           'depths': [1 + i, 1, 1, 1], 'width': 32 + 4 * i} for i, (p, m) in enumerate(points)]


def write_jsonl(path, records):
  with open(path, 'w') as f:
    f.writelines(json.dumps(r) + '\n' for r in records)
  return str(path)


def test_the_references_are_the_papers_small_and_base_and_the_authors_large():
  small, base, large = family_compare.references()
  assert (small.params, small.macs) == (29.0e6, 5.3e9)
  assert (base.params, base.macs) == (52.6e6, 8.9e9)
  assert large.params == pytest.approx(87.58e6, rel=1e-3)
  assert large.macs == pytest.approx(22.36e9, rel=1e-3)


def test_each_size_takes_the_nearest_member_and_its_macs_against_the_reference():
  run = family_compare.Run('a', 'a', series([(10, 2), (27, 6.0), (33, 5.5), (50, 8.9),
                                             (60, 9), (85, 30), (100, 40)]))
  report = family_compare.compare([run])
  row = report['runs'][0]
  assert [m['step'] for m in row['members']] == [1, 3, 5]   # 27 M (2 off), 50 M, 85 M
  assert row['members'][0]['delta'] == pytest.approx(6.0 / 5.3 - 1)
  assert row['members'][1]['delta'] == pytest.approx(0.0)
  assert row['members'][2]['delta'] == pytest.approx(30 / 22.36 - 1, rel=1e-3)
  assert row['within'] == 2 and row['reached'] == 3    # +13 %, 0 %; not +34 %
  assert row['mean_abs_delta'] == pytest.approx(
      sum(abs(m['delta']) for m in row['members']) / 3)


def test_a_size_above_the_largest_member_is_not_reached():
  run = family_compare.Run('short', 'short', series([(10, 2), (30, 6), (45, 9)]))
  row = family_compare.compare([run])['runs'][0]
  # 45 M is nearer 52 M than 30 M is, but nothing is as large as 52 M yet
  assert row['members'][0]['step'] == 1 and row['members'][1:] == [None, None]
  assert row['reached'] == 1 and row['largest'] == 45e6
  report = family_compare.compare([run, family_compare.Run(
      'full', 'full', series([(29, 5.3), (52, 8.9), (88, 23)]))])
  assert family_compare.closest_run(report)['label'] == 'full'   # the only one at all sizes


def test_the_closest_run_has_the_smallest_mean_difference():
  near = family_compare.Run('near', 'n', series([(29, 5.6), (52, 9.5), (88, 24)]))
  far = family_compare.Run('far', 'f', series([(29, 5.3), (52, 8.9), (88, 40)]))
  report = family_compare.compare([far, near])
  assert [r['within'] for r in report['runs']] == [2, 3]
  assert family_compare.closest_run(report)['label'] == 'near'
  text = family_compare.markdown(report, 'asvit compare_families --runs=f,n', 'x.png')
  assert 'Closest to the references: **near**' in text
  assert '| far | step 0: 29.00 M, 5.30 G, **+0.0 %** |' in text
  assert '**+79 %**' in text   # far's Large: 40 / 22.36


def test_runs_are_read_from_a_jsonl_or_a_run_directory(tmp_path):
  records = series([(10, 2), (30, 6)])
  path = write_jsonl(tmp_path / 'family_seed1_grow.jsonl', records)
  assert family_compare.load_run(path).label == 'family_seed1'
  run_dir = tmp_path / 'family_x'
  run_dir.mkdir()
  write_jsonl(run_dir / 'grow.jsonl', records)
  run = family_compare.load_run(str(run_dir), 'mine')
  assert run.label == 'mine' and run.records == records


@pytest.mark.parametrize('content,message', [
    (None, 'is neither a grow.jsonl nor a directory with one'),
    ('', 'has no scaling steps yet'),
    ('{"step": 0\n', 'is not a grow.jsonl'),
    ('{"step": 0, "arch": "a"}\n', 'its records lack params, macs, depths, width'),
])
def test_what_is_not_a_scaling_run_is_refused_in_one_line(tmp_path, content, message):
  path = tmp_path / 'grow.jsonl'
  if content is not None:
    path.write_text(content)
  with pytest.raises(UserInputError, match=message):
    family_compare.load_run(str(path if content is not None else tmp_path))


def _cli(*args):
  return subprocess.run([sys.executable, '-m', 'asvit_tf.cli.main', 'compare_families', *args],
                        cwd=REPO, capture_output=True, text=True, timeout=120,
                        env={**os.environ, 'PYTHONPATH': REPO})


def test_the_command_writes_report_json_and_plot_and_refuses_in_one_line(tmp_path):
  a = write_jsonl(tmp_path / 'a.jsonl', series([(29, 5.3), (52, 8.9), (88, 23)]))
  b = write_jsonl(tmp_path / 'b.jsonl', series([(20, 5), (40, 12)]))
  out = str(tmp_path / 'rep' / 'families.md')
  done = _cli(f'--runs={a},{b}', "--labels=A,B's run", f'--out={out}')
  assert done.returncode == 0, done.stderr
  assert done.stdout == open(out).read()
  # the command as a shell takes it back
  assert f'Made by `asvit compare_families --runs={a},{b} \'--labels=A,B\'"\'"\'s run\' ' \
         f'--out={out}`.' in done.stdout
  assert "| B's run | step 0: 20.00 M, 5.00 G, **−6 %** | not reached | not reached | 1 of 1 " \
         "(largest 40.00 M) |" in done.stdout
  saved = json.load(open(out[:-3] + '.json'))
  assert [r['label'] for r in saved['runs']] == ['A', "B's run"]
  assert saved['runs'][0]['within'] == 3
  with open(out[:-3] + '.png', 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'
  bad = _cli(f'--runs={a},{tmp_path}', f'--out={out}')
  assert bad.returncode == 2, bad.stderr
  assert bad.stderr.startswith(f'error: --runs {tmp_path} is neither a grow.jsonl'), bad.stderr
  assert bad.stderr.count('\n') == 1, bad.stderr


def test_labels_and_sizes_that_do_not_fit_are_refused(tmp_path):
  a = write_jsonl(tmp_path / 'a.jsonl', series([(29, 5.3)]))
  with pytest.raises(UserInputError, match='`labels` must name each of the 2 runs, got 1'):
    family_compare.load_runs([a, a], ['A'])
  assert [r.label for r in family_compare.load_runs([a, a], ['A', 'B'])] == ['A', 'B']
  with pytest.raises(UserInputError, match='`sizes` must give 3 parameter counts'):
    family_compare.compare(family_compare.load_runs([a]), [29e6, 52e6])


def test_the_plot_gives_every_run_its_own_colour(tmp_path, monkeypatch):
  from asvit_tf.search import plots  # pylint: disable=g-import-not-at-top
  saved = []
  monkeypatch.setattr(plots, '_save', lambda fig, path: saved.append(fig))
  runs = [(f'run {i}', series([(2 + i, 0.5), (30 + i, 5 + i), (90, 20 + i)])) for i in range(7)]
  plots.plot_families(runs, [('Small', 29e6, 5.3e9)], [records[1:2] for _, records in runs],
                      str(tmp_path / 'families.png'))
  ax = saved[0].axes[0]
  lines = [line for line in ax.get_lines() if line.get_label().startswith('run ')]
  assert len(lines) == 7
  colours = [line.get_color() for line in lines]
  assert len(set(colours)) == 7, colours
  rings = [line for line in ax.get_lines() if line.get_markerfacecolor() == 'none']
  assert [ring.get_markeredgecolor() for ring in rings] == colours
