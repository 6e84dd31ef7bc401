"""Helpers of the training tests: tiny configs, ports, the `asvit` command (the MNIST
fixture `mnist_dir` is in conftest.py, so every module shares one)."""
import os
import pathlib
import socket
import subprocess
import sys

import yaml

REPO = pathlib.Path(__file__).resolve().parents[2]
TINY_YAML = REPO / 'official_configs' / 'asvit_tiny_cpu.yaml'
# The seed topology at width C=8 (stage widths 8..64, heads 2..16): fast on a CPU.
TINY_ARCH = '8,2,3,1|4,1,2,1|4,1,4,1|4,1,6,1|16,8'


def tiny_override(data_dir, train_steps=6, steps_per_loop=2,
                  schedule=((0, 16, 2), (2, 8, 1), (4, 4, 1)), **extra) -> str:
  """A --params_override YAML string that shrinks asvit_tiny_cpu.yaml to a few steps."""
  override = {
      'task': {
          'model': {'backbone': {'asvit': {
              'arch': TINY_ARCH,
              'retokenization': [{'start_step': s, 'stride': t, 'dilation': d}
                                 for s, t, d in schedule]}}},
          'train_data': {'input_path': os.path.join(str(data_dir), 'train*'),
                         'global_batch_size': 8, 'shuffle_buffer_size': 16},
          'validation_data': {'input_path': os.path.join(str(data_dir), 'valid*'),
                              'global_batch_size': 8},
      },
      'trainer': {'train_steps': train_steps, 'steps_per_loop': steps_per_loop,
                  'summary_interval': steps_per_loop, 'checkpoint_interval': steps_per_loop,
                  'validation_interval': steps_per_loop, 'validation_steps': 2,
                  'optimizer_config': {'learning_rate': {'cosine': {
                      'decay_steps': train_steps}}, 'warmup': {'linear': {'warmup_steps': 1}}}},
  }
  _merge(override, extra)
  return yaml.safe_dump(override, default_flow_style=True, width=10**6)


def _merge(base, extra):
  for key, value in extra.items():
    if isinstance(value, dict) and isinstance(base.get(key), dict):
      _merge(base[key], value)
    else:
      base[key] = value


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def asvit_env(**extra):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', PYTHONUNBUFFERED='1')
  env.pop('TF_CONFIG', None)
  env.update(extra)
  return env


def run_asvit(args, timeout=240, **popen_kwargs) -> subprocess.CompletedProcess:
  """Runs the `asvit` console entry point in a subprocess."""
  cmd = [sys.executable, '-m', 'asvit_tf.cli.main'] + list(args)
  return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO,
                        env=asvit_env(), **popen_kwargs)
