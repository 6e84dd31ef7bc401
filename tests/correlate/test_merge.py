"""`asvit correlate` measures an As-ViT with the patch merging it is trained with."""
import json
import os

import pytest

from asvit_tf import arch as arch_lib
from asvit_tf import complexity
from asvit_tf.complexity import network as network_lib
from asvit_tf.correlate import measure
from asvit_tf.correlate import table
from asvit_tf.errors import UserInputError
from asvit_tf.models import size

TOPOLOGY = arch_lib.as_topology('4,2,2,1|2,1,2,1|2,1,2,1|2,1,2,1|16,8')
TINY = dict(image_size=32, repeats=1, num_points=4, batch_size=4, metrics=('length', 'ntk'))


def test_settings_keep_plain_runs_as_they_were_and_check_the_merge():
  assert 'merge' not in measure.Settings('asvit').to_dict()  # old settings.json still match
  assert measure.Settings('asvit', merge='residual').to_dict()['merge'] == 'residual'
  with pytest.raises(UserInputError, match="`merge` must be one of plain, residual, got 'x'"):
    measure.Settings('asvit', merge='x')
  with pytest.raises(UserInputError, match='a PiT has no patch merging'):
    measure.Settings('pit', merge='residual')


def test_the_residual_run_measures_and_sizes_the_residual_network():
  residual = measure.measure_network(measure.Settings('asvit', merge='residual', **TINY),
                                     TOPOLOGY)
  plain = measure.measure_network(measure.Settings('asvit', **TINY), TOPOLOGY)
  build = network_lib.model_factory(TOPOLOGY, merge='residual')
  direct = complexity.ntk_condition_number(build, 32, 1, 0, batch_size=4)
  assert residual['ntk'] == pytest.approx(direct.mean, rel=1e-6)
  assert residual['ntk'] != pytest.approx(plain['ntk'], rel=1e-6)
  assert measure.sizes('asvit', TOPOLOGY, 'residual') == {
      'params': size.estimate_params(TOPOLOGY, None, merge='residual'),
      'macs': size.count_macs(TOPOLOGY, 224, None, merge='residual')}
  assert (measure.sizes('asvit', TOPOLOGY, 'residual')['params']
          > measure.sizes('asvit', TOPOLOGY)['params'])


def test_a_plain_run_directory_made_before_the_option_still_resumes(tmp_path):
  settings = measure.Settings('asvit', **TINY)
  with open(os.path.join(tmp_path, measure.SETTINGS_FILE), 'w') as f:
    json.dump({k: v for k, v in settings.to_dict().items()}, f)  # no `merge` field
  row = table.Row(str(TOPOLOGY), TOPOLOGY, {'accuracy': 0.5}, {'length': 1.0, 'ntk': 2.0})
  out = measure.measure_table([row], settings, str(tmp_path), progress=False)
  assert out[str(TOPOLOGY)]['ntk'] == 2.0
  with pytest.raises(UserInputError, match="merge: None there, 'residual' now"):
    measure.measure_table([row], measure.Settings('asvit', merge='residual', **TINY),
                          str(tmp_path), progress=False)
