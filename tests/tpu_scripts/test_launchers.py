"""The Cloud TPU launchers print the exact command with --dry_run."""
import glob
import os
import shlex
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Every ImageNet TPU config is a variant of train.sh.
VARIANTS = sorted(os.path.basename(p)[len('asvit_'):-len('_imagenet_tpu.yaml')] for p in glob.glob(
    os.path.join(REPO, 'official_configs', 'asvit_*_imagenet_tpu.yaml')))


def _run(script, *args):
  return subprocess.run(['bash', os.path.join(REPO, 'tpu_scripts', script), *args],
                        capture_output=True, text=True, timeout=30, cwd=REPO)


def _dry(script, *args):
  result = _run(script, *args, '--dry_run')
  assert result.returncode == 0, result.stderr
  lines = result.stdout.strip().splitlines()
  assert len(lines) == 1
  return shlex.split(lines[0])


def test_train_command():
  argv = _dry('train.sh', '--variant=large', '--model_dir=gs://bucket/run', '--tpu=my-tpu',
              '--params_override=task.train_data.global_batch_size=512')
  assert argv == ['asvit', 'train', '--experiment=asvit_imagenet', '--mode=train_and_eval',
                  '--config_file=official_configs/asvit_large_imagenet_tpu.yaml',
                  '--model_dir=gs://bucket/run', '--tpu=my-tpu',
                  '--params_override=task.train_data.global_batch_size=512']
  assert os.path.exists(os.path.join(REPO, argv[4].split('=', 1)[1]))


@pytest.mark.parametrize('variant', VARIANTS)
def test_train_command_of_each_variant(variant):
  argv = _dry('train.sh', f'--variant={variant}', '--model_dir=gs://bucket/run')
  config = f'official_configs/asvit_{variant}_imagenet_tpu.yaml'
  assert f'--config_file={config}' in argv
  assert os.path.exists(os.path.join(REPO, config))


def test_search_grow_export_commands():
  assert _dry('search.sh', '--output_dir=gs://b/s', '--data=imagenet2012',
              '--data_dir=gs://b/tfds') == [
                  'asvit', 'search', '--preset=paper', '--output_dir=gs://b/s', '--seed=0',
                  '--data=imagenet2012', '--data_dir=gs://b/tfds']
  argv = _dry('grow.sh', '--output_dir', 'gs://b/g')
  assert argv[:3] == ['asvit', 'grow', '--arch=8,2,3|4,1,2|4,1,4|4,1,6|32']
  assert '--target_params=80e6' in argv and '--max_params=110e6' in argv
  assert _dry('export.sh', '--model_dir=gs://b/m', '--export_dir=gs://b/e') == [
      'asvit', 'export', '--experiment=asvit_imagenet', '--config_file=gs://b/m/params.yaml',
      '--checkpoint_path=gs://b/m', '--export_dir=gs://b/e']


def test_remote_launch_through_gcloud_runs_the_same_command_on_all_workers():
  argv = _dry('train.sh', '--model_dir=gs://b/m', '--tpu_vm=v4-32', '--zone=us-central2-b',
              '--project=p')
  assert argv[:5] == ['gcloud', 'compute', 'tpus', 'tpu-vm', 'ssh']
  assert '--worker=all' in argv and '--zone=us-central2-b' in argv and '--project=p' in argv
  remote = next(a for a in argv if a.startswith('--command=')).split('=', 1)[1]
  assert remote.startswith('cd ~/asvit-tf && asvit train --experiment=asvit_imagenet')


@pytest.mark.parametrize('script, args, message', [
    ('train.sh', [], '--model_dir is required'),
    ('train.sh', ['--model_dir=x', '--variant=huge'],
     '--variant must be one of base, base_seed2, large, small'),
    ('search.sh', [], '--output_dir is required'),
    ('export.sh', ['--model_dir=x'], '--export_dir is required'),
    ('grow.sh', ['--output_dir=x', '--bogus=1'], 'unknown flag --bogus'),
    ('train.sh', ['--model_dir=x', '--tpu_vm=v4'], '--zone is required'),
])
def test_bad_flags_fail_with_one_line(script, args, message):
  result = _run(script, *args, '--dry_run')
  assert result.returncode == 2
  assert result.stderr.strip().splitlines() == [f'error: {message}'] or \
      message in result.stderr.strip()
  assert len(result.stderr.strip().splitlines()) == 1


def _defined_flags(command):
  """Flag names the `asvit COMMAND` module defines (in a fresh process: absl flags are global)."""
  code = ('import importlib; from absl import flags; '
          f'importlib.import_module("asvit_tf.cli.{command}").define_flags(); '
          'print(" ".join(flags.FLAGS))')
  result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          timeout=300, cwd=REPO)
  assert result.returncode == 0, result.stderr
  return set(result.stdout.split())


@pytest.mark.parametrize('script, args', [
    ('search.sh', ['--output_dir=o', '--data=d', '--data_dir=dd']),
    ('grow.sh', ['--output_dir=o']),
    # train and export define Model Garden's flags: their process imports Model Garden.
    pytest.param('train.sh', ['--model_dir=m', '--params_override=a.b=1'],
                 marks=pytest.mark.slow),
    pytest.param('export.sh', ['--model_dir=m', '--export_dir=e'], marks=pytest.mark.slow),
])
def test_launched_commands_use_flags_the_cli_defines(script, args):
  argv = _dry(script, *args)
  assert argv[0] == 'asvit'
  used = {a[2:].split('=', 1)[0] for a in argv[2:]}
  assert used <= _defined_flags(argv[1])
