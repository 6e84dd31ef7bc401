"""Importing asvit_tf before TensorFlow gives TensorFlow's BFC allocator on the CPU, unless the
user chose otherwise."""
import os
import subprocess
import sys

import pytest

# A BFC allocator keeps statistics and rounds each allocation up to a multiple of 256 bytes:
# 1,000 bytes take 1,024. The default allocator keeps none on some CPUs (ValueError) and, on
# others (seen on a Zen 4 EPYC), statistics that a small tensor leaves unchanged.
_PROBE = """
import asvit_tf
import tensorflow as tf
tf.ones([256, 256]).numpy()
dims, value = tf.constant([250]), tf.constant(2.0)
try:
  before = tf.config.experimental.get_memory_info('CPU:0')['current']
except ValueError:
  print('DEFAULT')
else:
  x = tf.fill(dims, value)   # 1,000 bytes
  x.numpy()
  grown = tf.config.experimental.get_memory_info('CPU:0')['current'] - before
  print('BFC' if grown == 1024 else 'DEFAULT')
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
