"""`asvit measure`: the table, the JSON and one-line errors."""
import json
import subprocess
import sys

import pytest

from asvit_tf.cli import measure
from tests.complexity.conftest import TINY


def test_table_and_json_of_a_tiny_asvit():
  results = measure.measure(TINY, ['length', 'ntk'], image_size=32, repeats=1,
                            num_points=3, batch_size=3)
  table = measure.format_table(TINY, results, 32)
  assert 'L^E (length distortion)' in table and 'kappa_Theta' in table
  data = json.loads(measure.to_json(TINY, results, 32))
  assert sorted(data['metrics']) == ['length', 'ntk']
  assert data['metrics']['length']['bad'] is False
  assert len(data['metrics']['ntk']['values']) == 1


@pytest.mark.parametrize('args, message', [
    (['measure', 'not_a_model'], 'unknown variant'),
    (['measure', '8,2,3|4,1,2|4,1,4|4,1,6|12'], 'H must be divisible by 8'),
    (['measure', 'asvit_seed', '--metrics=speed'], '--metrics must be'),
    (['measure', 'asvit_seed', '--width=2'], 'too narrow'),
])
def test_bad_arguments_give_one_line_and_nonzero_exit(args, message):
  proc = subprocess.run([sys.executable, '-m', 'asvit_tf.cli.main'] + args,
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode != 0
  lines = [l for l in proc.stderr.splitlines() if l.startswith('error:')]
  assert len(lines) == 1 and message in lines[0], proc.stderr


def test_share_embedding_reaches_the_measures():
  """--share_embedding: repeat 0 as without it, repeat 1 keeps the conv's first draw."""
  kwargs = dict(image_size=32, repeats=2, num_points=3, batch_size=3)
  drawn = measure.measure(TINY, ['length', 'ntk'], **kwargs)
  shared = measure.measure(TINY, ['length', 'ntk'], share_embedding=True, **kwargs)
  for m in ('length', 'ntk'):
    assert shared[m].values[0] == drawn[m].values[0]
    assert shared[m].values[1] != drawn[m].values[1]


def test_data_photos_is_the_ntk_batch():
  from asvit_tf import complexity
  from asvit_tf.search import data
  got = measure.measure(TINY, ['ntk'], image_size=32, repeats=1, batch_size=3, seed=2,
                        data='photos')['ntk']
  want = complexity.ntk_condition_number(TINY, repeats=1, seed=2,
                                         images=data.photo_batch(32, 3, seed=2))
  noise = measure.measure(TINY, ['ntk'], image_size=32, repeats=1, batch_size=3, seed=2)
  assert got.values == want.values and got.values != noise['ntk'].values


def test_include_scales_reaches_the_ntk():
  """κ_Θ differentiates the LayerNorm γ by default (the authors' selection);
  include_scales=False (--noinclude_scales) measures the kernels only."""
  from asvit_tf import complexity
  common = dict(image_size=32, repeats=1, batch_size=3, seed=1)
  default = measure.measure(TINY, ['ntk'], **common)['ntk']
  kernels = measure.measure(TINY, ['ntk'], include_scales=False, **common)['ntk']
  assert default.values == complexity.ntk_condition_number(
      TINY, include_scales=True, **common).values
  assert kernels.values == complexity.ntk_condition_number(
      TINY, include_scales=False, **common).values
  assert default.values != kernels.values
