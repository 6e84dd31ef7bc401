import os
import stat

import pytest

from asvit_tf.search import family
from asvit_tf.search import state as state_lib


def test_atomic_write_replaces_and_leaves_no_temporary_file(tmp_path):
  path = tmp_path / 'a.json'
  state_lib.atomic_write(str(path), 'one')
  state_lib.atomic_write(str(path), 'two')
  assert path.read_text() == 'two'
  assert os.listdir(tmp_path) == ['a.json']
  assert stat.S_IMODE(path.stat().st_mode) & 0o044  # readable like any output file


def test_load_state_checks_the_configuration(tmp_path):
  out = str(tmp_path)
  assert state_lib.load_state(out, 'grow', {'a': 1}) is None
  state_lib.save_state(out, {'kind': 'grow', 'config': {'a': 1}, 'step': 3})
  assert state_lib.load_state(out, 'grow', {'a': 1})['step'] == 3
  with pytest.raises(ValueError, match=r'different configuration \(a=1 there, 2 now\)'):
    state_lib.load_state(out, 'grow', {'a': 2})
  # an option added after the run was saved matches at its default value only
  assert state_lib.load_state(out, 'grow', {'a': 1, 'b': 0}, defaults={'b': 0})
  with pytest.raises(ValueError, match='b=0 there, 5 now'):
    state_lib.load_state(out, 'grow', {'a': 1, 'b': 5}, defaults={'b': 0})
  # a search and a grow keep separate states in one directory
  assert state_lib.load_state(out, 'search', {'a': 2}) is None
  state_lib.save_state(out, {'kind': 'search', 'config': {'a': 2}, 'step': 5})
  assert state_lib.load_state(out, 'grow', {'a': 1})['step'] == 3
  assert state_lib.load_state(out, 'search', {'a': 2})['step'] == 5


@pytest.mark.parametrize('text', ['{"kind": "grow", "step": 3', '[]', '{"kind": "search"}'])
def test_a_damaged_state_says_what_to_do(tmp_path, text):
  (tmp_path / 'grow_state.json').write_text(text)
  with pytest.raises(ValueError, match='grow_state.json .*: move it away to start the run '
                     'afresh, or use another `output_dir`$'):
    state_lib.load_state(str(tmp_path), 'grow', {'a': 1})
  # the tools that read a finished run (family report, rescore) say the same
  with pytest.raises(ValueError, match='grow_state.json .*: move it away'):
    family._saved_state(str(tmp_path))  # pylint: disable=protected-access


def test_unwritable_output_dir_is_a_one_line_error(tmp_path):
  (tmp_path / 'file').write_text('')
  with pytest.raises(ValueError, match='not a directory'):
    state_lib.prepare_output_dir(str(tmp_path / 'file'))
  with pytest.raises(ValueError, match='not writable'):
    state_lib.prepare_output_dir('/proc/asvit_out')
