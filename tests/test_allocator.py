"""Importing asvit_tf before TensorFlow gives TensorFlow's BFC allocator on the CPU, unless the
user chose otherwise."""
import os
import subprocess
import sys

import pytest

_PROBE = """
import asvit_tf
import tensorflow as tf
tf.ones([256, 256]).numpy()
try:
  tf.config.experimental.get_memory_info('CPU:0')   # a BFC allocator keeps statistics
  print('BFC')
except ValueError:
  print('DEFAULT')
"""


def _allocator(**env) -> str:
  full = {k: v for k, v in os.environ.items() if k != 'TF_CPU_ALLOCATOR_USE_BFC'}
  full.update(env, TF_CPP_MIN_LOG_LEVEL='2')
  out = subprocess.run([sys.executable, '-c', _PROBE], env=full, capture_output=True,
                       text=True, check=True)
  return out.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize('env, expected', [({}, 'BFC'),
                                           ({'TF_CPU_ALLOCATOR_USE_BFC': 'false'}, 'DEFAULT')])
def test_import_chooses_the_bfc_allocator_unless_set(env, expected):
  assert _allocator(**env) == expected
