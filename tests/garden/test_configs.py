"""The `asvit_imagenet` experiment, the YAMLs of official_configs/ and the config checks."""
import pytest
import yaml
import tensorflow as tf
import tf_keras

from official.core import exp_factory
from official.core import task_factory
from official.modeling import performance

from asvit_tf import arch as arch_lib
from asvit_tf.garden import retokenization as retok
from asvit_tf.garden import train_lib
from asvit_tf.garden.configs import validate_experiment
from asvit_tf.models import size
from tests.garden._training import REPO, TINY_ARCH, TINY_YAML, run_asvit

# Every ImageNet TPU YAML that ships (small, base and base_seed2 come with our scaling runs).
TPU_VARIANTS = tuple(sorted(p.name[len('asvit_'):-len('_imagenet_tpu.yaml')]
                            for p in (REPO / 'official_configs').glob('asvit_*_imagenet_tpu.yaml')))


def _leaves(tree, prefix=()):
  """(path, value) of every leaf of a nested dict."""
  for key, value in tree.items():
    if isinstance(value, dict):
      yield from _leaves(value, prefix + (key,))
    else:
      yield prefix + (key,), value


def _phases(params):
  return retok.as_phases(params.task.model.backbone.asvit.retokenization)


def test_experiment_is_registered_with_the_published_schedule():
  params = exp_factory.get_exp_config('asvit_imagenet')
  validate_experiment(params)
  backbone = params.task.model.backbone
  assert backbone.type == 'asvit'
  kernel = arch_lib.as_topology(backbone.asvit.arch).kernels[0]
  assert _phases(params) == retok.published_schedule(
      params.trainer.train_steps, kernel, 300, params.trainer.steps_per_loop)


def test_the_large_tpu_yaml_ships():
  assert 'large' in TPU_VARIANTS


@pytest.mark.slow
@pytest.mark.parametrize('variant', TPU_VARIANTS)
def test_tpu_yaml_loads_validates_and_builds(variant):
  path = REPO / 'official_configs' / f'asvit_{variant}_imagenet_tpu.yaml'
  params = train_lib.parse_configuration('asvit_imagenet', [str(path)])
  asvit = params.task.model.backbone.asvit
  assert asvit.arch == f'asvit_{variant}'
  assert params.runtime.distribution_strategy == 'tpu'
  assert params.task.model.input_size == [224, 224, 3]
  assert not params.task.init_checkpoint
  # The paper's schedule (epochs 0/80/132 of 300) with the dilation rule for this K1.
  topology = arch_lib.as_topology(asvit.arch)
  trainer = params.trainer
  assert trainer.train_steps == 300 * trainer.steps_per_loop
  assert _phases(params) == retok.published_schedule(
      trainer.train_steps, topology.kernels[0], 300, trainer.steps_per_loop)
  assert (asvit.stride, asvit.dilation) == (4, 1)
  model = task_factory.get_task(params.task).build_model()
  assert model.output_shape == (None, 1001)
  assert model.count_params() == size.estimate_params(topology, num_classes=1001)


def test_tiny_yaml_runs_every_phase_of_its_schedule():
  params = train_lib.parse_configuration('asvit_imagenet', [str(TINY_YAML)])
  phases = _phases(params)
  assert [p.stride for p in phases] == [16, 8, 4]
  assert phases[1].start_step > 0
  model = task_factory.get_task(params.task).build_model()
  for phase in phases:
    model.backbone.set_tokenization(phase.stride, phase.dilation)
    assert model(tf.zeros([2, 32, 32, 3]), training=False).shape == (2, 10)


def test_classification_keeps_splits_and_the_backbone_config_carries_the_policy():
  params = exp_factory.get_exp_config('asvit_imagenet')
  assert params.task.model.backbone.asvit.window_policy == 'splits'
  override = ("task: {model: {backbone: {asvit: {window_policy: 'fixed', "
              'window_reference_size: 16}}}}')
  params = train_lib.parse_configuration('asvit_imagenet', [str(TINY_YAML)], override)
  backbone = task_factory.get_task(params.task).build_model().backbone
  topology = arch_lib.as_topology(params.task.model.backbone.asvit.arch)
  windows = [stage[0].attn.fixed_window for stage in backbone.encoder.stages]
  assert windows == size.fixed_windows(topology, 4, 16)
  config = backbone.get_config()
  assert (config['window_policy'], config['window_reference_size']) == ('fixed', 16)
  clone = type(backbone).from_config(config)
  assert [s[0].attn.fixed_window for s in clone.encoder.stages] == windows


def test_the_model_runs_in_bfloat16_as_the_tpu_recipes_ask():
  override = f"task: {{model: {{backbone: {{asvit: {{arch: '{TINY_ARCH}'}}}}}}}}"
  params = train_lib.parse_configuration('asvit_imagenet', [str(TINY_YAML)], override)
  performance.set_mixed_precision_policy('bfloat16')
  try:
    model = task_factory.get_task(params.task).build_model()
    model.backbone.set_tokenization(16, 2)
    logits = model(tf.random.uniform([2, 32, 32, 3]), training=True)
  finally:
    # Back to the default policy (which follows floatx), not to an explicit 'float32' that
    # would outlive this test and pin the dtype of layers built later.
    tf_keras.mixed_precision.set_global_policy(None)
  assert logits.shape == (2, 10)
  assert bool(tf.reduce_all(tf.math.is_finite(tf.cast(logits, tf.float32))))


@pytest.mark.parametrize('override, message', [
    ('task.model.backbone.asvit.arch=asvit_huge', "unknown variant 'asvit_huge'"),
    ("task: {model: {backbone: {asvit: {arch: '8,2,3|4,1,2|4,1,4|4,1,6|12'}}}}",
     'H must be divisible by 8'),
    ('task.model.input_size=[8,8,3]', 'input_size must be at least the tokenization stride 16'),
    ('task.model.num_classes=-3', 'num_classes must be an integer >= 1, got -3'),
    ('task.model.input_size=[100000,100000,3]', 'input_size .* is too large'),
    ('task: {model: {backbone: {asvit: {retokenization: [{start_step: 0, stride: 16, '
     'dilation: 2}, {start_step: 100, stride: 4, dilation: 1}]}}}}',
     'not a multiple of trainer.steps_per_loop=40'),
    ('task: {model: {backbone: {asvit: {retokenization: [{start_step: 0, stride: 16, '
     'dilation: 2}, {start_step: 80, stride: 8, dilation: 1}]}}}}', 'must agree'),
    ('task.model.backbone.asvit.window_policy=swin',
     "window_policy must be one of splits, fixed, got 'swin'"),
    ('task.model.backbone.asvit.window_reference_size=0', 'window_reference_size must be >= 1'),
    ('task.model.backbone.asvit.strid=8', 'config error'),
    ('/nonexistent/override.yaml', 'config error'),
])
def test_config_errors_are_one_clear_value_error(override, message):
  with pytest.raises(ValueError, match=message) as info:
    train_lib.parse_configuration('asvit_imagenet', [str(TINY_YAML)], override)
  assert '\n' not in str(info.value)


def test_the_memory_ceiling_follows_the_window_policy():
  """As-ViT Large at 4096 px: `splits` windows of 512x512 tokens (4 TiB of attention scores)
  are refused; the `fixed` windows of 224 px (12.5 GiB) are not."""
  override = 'task.model.backbone.asvit.arch=asvit_large,task.model.input_size=[4096,4096,3]'
  with pytest.raises(ValueError, match='too large .* with splits windows') as info:
    train_lib.parse_configuration('asvit_imagenet', [str(TINY_YAML)], override)
  assert '\n' not in str(info.value)
  params = train_lib.parse_configuration(
      'asvit_imagenet', [str(TINY_YAML)],
      override + ',task.model.backbone.asvit.window_policy=fixed')
  assert params.task.model.input_size == [4096, 4096, 3]


def test_unknown_experiment_is_a_value_error():
  with pytest.raises(ValueError, match='config error'):
    train_lib.parse_configuration('asvit_imagenet_typo')


@pytest.mark.slow
def test_cli_fails_before_training_with_one_line(tmp_path):
  model_dir = tmp_path / 'run'
  result = run_asvit(['train', '--experiment=asvit_imagenet', '--mode=train',
                      f'--config_file={TINY_YAML}', f'--model_dir={model_dir}',
                      '--params_override=task.model.backbone.asvit.arch=asvit_huge'])
  assert result.returncode != 0
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith('error: ') and "unknown variant 'asvit_huge'" in last
  assert 'Traceback' not in result.stderr
  assert not (model_dir / 'params.yaml').exists()  # nothing was started


@pytest.mark.parametrize('variant', TPU_VARIANTS)
def test_tpu_yaml_sets_only_what_differs_from_the_experiment(variant):
  """The recipe lives in `asvit_imagenet`; a YAML restating it would drift from it."""
  path = REPO / 'official_configs' / f'asvit_{variant}_imagenet_tpu.yaml'
  default = exp_factory.get_exp_config('asvit_imagenet').as_dict()
  restated = []
  for keys, value in _leaves(yaml.safe_load(path.read_text())):
    node = default
    for key in keys:
      node = node[key]
    if node == value:
      restated.append('.'.join(keys))
  assert not restated, f'{path.name} restates the experiment\'s {restated}'
