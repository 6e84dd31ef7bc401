"""No library function is longer than a reader can hold: at most `LIMIT` lines of code
(its docstring not counted: the maths and the shapes belong there). A longer one is split
into named pieces, as `search/family.render_doc` was."""
import ast
import pathlib

import asvit_tf

LIMIT = 60


def long_functions(root: pathlib.Path, limit: int = LIMIT):
  """(path:line name, lines without the docstring) of every function over `limit`."""
  found = []
  for path in sorted(root.rglob('*.py')):
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
      if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        continue
      lines = node.end_lineno - node.lineno + 1
      first = node.body[0]
      if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and \
          isinstance(first.value.value, str):
        lines -= first.end_lineno - first.lineno + 1
      if lines > limit:
        found.append((f'{path.relative_to(root.parent)}:{node.lineno} {node.name}', lines))
  return found


def test_no_library_function_is_over_the_limit():
  assert long_functions(pathlib.Path(asvit_tf.__file__).parent) == []


def test_the_scan_finds_a_long_function(tmp_path):
  package = tmp_path / 'pkg'
  package.mkdir()
  body = lambda n: '\n'.join(f'  x{i} = {i}' for i in range(n))
  # `short` is at the limit with its def line (its docstring does not count); `long` is one
  # line over it.
  (package / 'm.py').write_text(f'def short():\n  """Doc."""\n{body(LIMIT - 1)}\n\n\n'
                                f'def long():\n{body(LIMIT)}\n')
  assert long_functions(package) == [(f'pkg/m.py:{LIMIT + 4} long', LIMIT + 1)]
