"""Shared by the benchmark scripts: a Markdown table, and its section in docs/benchmarks.md;
a worker process's result, printed and read.

Each benchmark owns one section between `<!-- begin NAME -->` and `<!-- end NAME -->`; a run
replaces its own section and leaves the others alone.
"""
from __future__ import annotations

import json
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from typing import Optional, Sequence, Tuple

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(REPO, 'docs', 'benchmarks.md')
_TITLE = ('# Benchmarks\n\nMeasured on the project machine (2 CPU cores, no GPU) unless a '
          'section says otherwise. Each section is rewritten by the script named in it.\n')


# A worker process prints its result as one line: this prefix, then JSON.
RESULT = 'RESULT '


def print_result(out) -> None:
  """Prints `out` as a worker process's result line."""
  print(RESULT + json.dumps(out), flush=True)


def worker_result(cmd: Sequence[str], env: Optional[dict] = None
                  ) -> Tuple[Optional[object], subprocess.CompletedProcess]:
  """Runs the worker process `cmd`: (the JSON of its last result line, or None if it failed
  or printed none; the completed process, for its exit code and stderr)."""
  proc = subprocess.run(list(cmd), capture_output=True, text=True, env=env, check=False)
  lines = [l for l in proc.stdout.splitlines() if l.startswith(RESULT)]
  if proc.returncode or not lines:
    return None, proc
  return json.loads(lines[-1][len(RESULT):]), proc


def failure(proc: subprocess.CompletedProcess) -> str:
  """'exit N: the last line of stderr' of a failed worker process."""
  return f'exit {proc.returncode}: {(proc.stderr.strip().splitlines() or ["?"])[-1]}'


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
