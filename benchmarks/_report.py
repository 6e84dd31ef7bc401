"""Shared by the benchmark scripts: a Markdown table, and its section in docs/benchmarks.md.

Each benchmark owns one section between `<!-- begin NAME -->` and `<!-- end NAME -->`; a run
replaces its own section and leaves the others alone.
"""
from __future__ import annotations

import os
import platform
import re
import shlex
import sys
import time
from typing import Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(REPO, 'docs', 'benchmarks.md')
_TITLE = ('# Benchmarks\n\nMeasured on the project machine (2 CPU cores, no GPU) unless a '
          'section says otherwise. Each section is rewritten by the script named in it.\n')


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
  cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
  widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
  fmt = lambda r: '| ' + ' | '.join(v.ljust(w) for v, w in zip(r, widths)) + ' |'
  lines = [fmt(cells[0]), '|' + '|'.join('-' * (w + 2) for w in widths) + '|']
  return '\n'.join([lines[0], lines[1]] + [fmt(r) for r in cells[1:]])


def command_line() -> str:
  script = os.path.relpath(os.path.abspath(sys.argv[0]), REPO)
  return ' '.join(['python', shlex.quote(script)] + [shlex.quote(a) for a in sys.argv[1:]])


def write_section(name: str, title: str, body: str, path: str = DOC) -> str:
  """Replaces (or appends) section `name` of docs/benchmarks.md; returns the section text."""
  stamp = time.strftime('%Y-%m-%d')
  load = os.getloadavg()[0]  # other work on the machine slows the timings down
  section = (f'<!-- begin {name} -->\n## {title}\n\nCommand: `{command_line()}`  \n'
             f'Run: {stamp}, Python {platform.python_version()}, {os.cpu_count()} CPU cores, '
             f'1-minute load average {load:.1f} when the run ended.\n\n'
             f'{body.strip()}\n<!-- end {name} -->')
  os.makedirs(os.path.dirname(path), exist_ok=True)
  text = open(path).read() if os.path.exists(path) else _TITLE
  pattern = re.compile(rf'<!-- begin {re.escape(name)} -->.*?<!-- end {re.escape(name)} -->',
                       re.S)
  if pattern.search(text):
    text = pattern.sub(lambda _: section, text)
  else:
    text = text.rstrip('\n') + '\n\n' + section + '\n'
  with open(path, 'w') as f:
    f.write(text)
  return section
