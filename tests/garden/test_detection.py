"""Cascade Mask R-CNN with As-ViT: backbone levels, the experiment, its config errors, the
nuclei data set and a tiny train + COCO evaluation run."""
import json
import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from asvit_tf.garden import backbone as asvit_backbone
from asvit_tf.garden import detection
from asvit_tf.garden.data import make_nuclei_coco

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY_YAML = os.path.join(REPO, 'official_configs', 'cascadercnn_asvit_tiny_cpu.yaml')
LARGE_YAML = os.path.join(REPO, 'official_configs', 'cascadercnn_asvit_large_coco_tpu.yaml')
NUCLEI_YAML = os.path.join(REPO, 'official_configs', 'cascadercnn_asvit_nuclei_cpu.yaml')
TINY_ARCH = '8,2,3,1|4,1,2,1|4,1,4,1|4,1,6,1|16,16'


# ---- backbone levels at detection sizes -----------------------------------------------------
@pytest.mark.parametrize('height,width', [(128, 128), (256, 192), (320, 320)])
def test_backbone_levels_at_detection_sizes(height, width):
  spec = tf_keras.layers.InputSpec(shape=[None, height, width, 3])
  model = asvit_backbone.AsViTBackbone(TINY_ARCH, input_specs=spec, pre_logits=False)
  out = model(tf.zeros([1, height, width, 3]))
  assert sorted(out) == ['2', '3', '4', '5']
  for i, level in enumerate('2345'):
    stride = 2**int(level)
    expected = (1, height // stride, width // stride, 16 * 2**i)
    assert out[level].shape == expected
    assert model.output_specs[level].as_list() == [None, *expected[1:]]


def test_large_backbone_specs_at_1024():
  params = detection.cascadercnn_asvit_coco()
  spec = tf_keras.layers.InputSpec(shape=[None] + params.task.model.input_size)
  model = asvit_backbone.build_asvit(spec, params.task.model.backbone, None)
  specs = {k: v.as_list() for k, v in model.output_specs.items()}
  assert specs == {'2': [None, 256, 256, 180], '3': [None, 128, 128, 360],
                   '4': [None, 64, 64, 720], '5': [None, 32, 32, 1024]}
  # fixed windows: those of 224 px, not 1/S of the 1024-px grids (128, 128, 64, 32)
  windows = [stage[0].attn.window(rows, rows) for stage, rows
             in zip(model.encoder.stages, (256, 128, 64, 32))]
  assert windows == [(28, 28), (28, 28), (14, 14), (7, 7)]


@pytest.mark.slow
def test_backbone_remat_is_a_config_field_with_the_same_loss_and_gradients():
  """`backbone.asvit.remat` (off by default) reaches every block through Model Garden's
  builder, survives the backbone's get_config/from_config, and gives the loss and gradients
  of the backbone without it (drop-path on, as in the detection config)."""
  params = detection.detection_config(overrides={'task': {'model': {
      'input_size': [64, 64, 3],
      'backbone': {'asvit': {'arch': TINY_ARCH, 'window_reference_size': 32}}}}})
  assert not params.task.model.backbone.asvit.remat
  assert params.task.model.backbone.asvit.drop_path_rate > 0
  spec = tf_keras.layers.InputSpec(shape=[None, 64, 64, 3])
  plain = asvit_backbone.build_asvit(spec, params.task.model.backbone, None)
  params.override({'task': {'model': {'backbone': {'asvit': {'remat': True}}}}})
  remat = asvit_backbone.build_asvit(spec, params.task.model.backbone, None)
  blocks = [block for stage in remat.encoder.stages for block in stage]
  assert all(block.remat for block in blocks)
  assert not any(block.remat for stage in plain.encoder.stages for block in stage)
  clone = type(remat).from_config(remat.get_config())
  assert remat.get_config()['remat'] and all(b.remat for s in clone.encoder.stages for b in s)
  images = tf.constant(np.random.default_rng(0).uniform(size=(2, 64, 64, 3)), tf.float32)
  plain(images)
  remat(images)
  remat.set_weights(plain.get_weights())

  def loss_and_grads(model):  # eager: the same seed draws the same drop-path masks
    with tf.GradientTape() as tape:
      maps = model(images, training=True)
      loss = sum(tf.reduce_mean(tf.square(maps[level])) for level in '2345')
    return [loss] + tape.gradient(loss, model.trainable_weights)

  tf.random.set_seed(3)
  want = [t.numpy() for t in loss_and_grads(plain)]
  tf.random.set_seed(3)
  got = [t.numpy() for t in loss_and_grads(remat)]
  assert len(got) == len(want) == 1 + len(plain.trainable_weights)
  for a, b in zip(want, got):
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)


# ---- the experiment --------------------------------------------------------------------------
def test_experiment_has_the_cascade_settings():
  params = detection.detection_config()
  model = params.task.model
  assert isinstance(params, detection.DetectionExperimentConfig)
  assert model.backbone.type == 'asvit' and model.backbone.asvit.arch == 'asvit_large'
  assert not model.backbone.asvit.pre_logits
  assert model.backbone.asvit.window_policy == 'fixed'
  assert model.backbone.asvit.window_reference_size == 224
  assert model.input_size == [1024, 1024, 3]
  assert (model.min_level, model.max_level) == (2, 6)
  assert model.decoder.type == 'fpn'
  assert model.roi_sampler.foreground_iou_threshold == 0.5
  assert model.roi_sampler.cascade_iou_thresholds == [0.6, 0.7]
  assert model.detection_head.class_agnostic_bbox_pred
  assert model.detection_head.cascade_class_ensemble
  assert model.include_mask
  # The experiment passes Model Garden's own checks and ours of the model (the data paths,
  # which are the user's, are checked by the tests of validate below).
  super(detection.DetectionExperimentConfig, params).validate()
  detection.validate_detection(params, check_data=False)


def test_large_tpu_yaml_is_the_experiment_with_bucket_paths():
  default = detection.detection_config().as_dict()
  tpu = detection.detection_config([LARGE_YAML]).as_dict()
  differing = []

  def walk(a, b, prefix=''):
    for key in a:
      if isinstance(a[key], dict):
        walk(a[key], b[key], f'{prefix}{key}.')
      elif a[key] != b[key]:
        differing.append(prefix + key)
  walk(tpu, default)
  assert sorted(differing) == sorted([
      'runtime.distribution_strategy', 'task.annotation_file', 'task.init_checkpoint',
      'task.train_data.input_path', 'task.validation_data.input_path'])


def test_nuclei_recipe_is_the_smoke_model_trained_longer():
  """The recipe of docs/detection_nuclei.md keeps the smoke run's backbone and tile size."""
  smoke = detection.detection_config([TINY_YAML]).task
  recipe = detection.detection_config([NUCLEI_YAML])
  assert recipe.task.model.backbone.as_dict() == smoke.model.backbone.as_dict()
  assert recipe.task.model.input_size == smoke.model.input_size == [128, 128, 3]
  assert recipe.trainer.train_steps == 600
  assert recipe.trainer.validation_interval == 100 and recipe.trainer.validation_steps == 2


# ---- config errors: one clear ValueError line each ---------------------------------------
@pytest.fixture()
def small_data(tmp_path):
  """An annotation file with category ids 1 and 3 and (empty) record files."""
  annotations = tmp_path / 'instances_val.json'
  annotations.write_text(json.dumps({
      'images': [{'id': 1, 'file_name': 'a.jpg', 'height': 128, 'width': 128}],
      'annotations': [{'id': 1, 'image_id': 1, 'category_id': 3, 'bbox': [1, 1, 5, 5],
                       'area': 25.0, 'iscrowd': 0, 'segmentation': [[1, 1, 6, 1, 6, 6]]}],
      'categories': [{'id': 1, 'name': 'a'}, {'id': 3, 'name': 'c'}]}))
  for name in ('train-00000-of-00001.tfrecord', 'val-00000-of-00001.tfrecord'):
    (tmp_path / name).write_bytes(b'')
  return {
      'task.annotation_file': str(annotations),
      'task.train_data.input_path': str(tmp_path / 'train-*'),
      'task.validation_data.input_path': str(tmp_path / 'val-*'),
      'task.model.num_classes': 4,
      'task.model.input_size': [128, 128, 3],
  }


def _validate(overrides):
  params = detection.detection_config([TINY_YAML])
  params.override(_nested(overrides), is_strict=True)
  params.validate()  # what parse_configuration runs before a run


def _nested(flat):
  out = {}
  for key, value in flat.items():
    node = out
    *parents, leaf = key.split('.')
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = value
  return out


def _assert_one_line(error, *words):
  message = str(error.value)
  assert '\n' not in message
  for word in words:
    assert word in message


def test_valid_small_config_passes(small_data):
  _validate(small_data)


@pytest.mark.parametrize('size,max_level', [(96, 6), (200, 6), (128, 8)])
def test_image_size_not_divisible(small_data, size, max_level):
  with pytest.raises(ValueError) as error:
    _validate({**small_data, 'task.model.input_size': [size, size, 3],
               'task.model.max_level': max_level})
  _assert_one_line(error, f'{size}x{size}', f'2^max_level = {2**max_level}')


@pytest.mark.parametrize('num_classes', [2, 3])
def test_num_classes_not_above_largest_category(small_data, num_classes):
  with pytest.raises(ValueError) as error:
    _validate({**small_data, 'task.model.num_classes': num_classes})
  _assert_one_line(error, 'num_classes', 'largest category id 3', 'set it to 4')


def test_missing_annotation_file(small_data, tmp_path):
  with pytest.raises(ValueError) as error:
    _validate({**small_data, 'task.annotation_file': str(tmp_path / 'nope.json')})
  _assert_one_line(error, 'task.annotation_file', 'nope.json', 'does not exist')


def test_empty_annotation_file_needs_num_examples(small_data):
  with pytest.raises(ValueError) as error:
    _validate({**small_data, 'task.annotation_file': ''})
  _assert_one_line(error, 'task.annotation_file is empty')
  _validate({**small_data, 'task.annotation_file': '',
             'task.validation_data.num_examples': 4})


@pytest.mark.parametrize('split', ['train_data', 'validation_data'])
def test_missing_input_files(small_data, tmp_path, split):
  with pytest.raises(ValueError) as error:
    _validate({**small_data, f'task.{split}.input_path': str(tmp_path / 'nothing-*')})
  _assert_one_line(error, f'task.{split}.input_path', 'matches no file')


@pytest.mark.parametrize('key,value,words', [
    ('task.model.backbone.asvit.pre_logits', True, ['pre_logits must be false']),
    ('task.model.backbone.asvit.stride', 8, ['stride must be 4']),
    ('task.model.detection_head.class_agnostic_bbox_pred', False, ['class_agnostic']),
    ('task.model.backbone.asvit.arch', 'asvit_huge', ['asvit.arch', 'asvit_huge']),
    ('task.model.backbone.asvit.window_policy', 'global', ['asvit.window_policy', "'global'"]),
])
def test_model_errors(small_data, key, value, words):
  with pytest.raises(ValueError) as error:
    _validate({**small_data, key: value})
  _assert_one_line(error, *words)


def test_memory_ceiling_uses_the_fixed_windows_of_detection():
  """At 4096x4096 the detector's fixed windows pass the ceiling; `splits` windows would need
  4 TiB of attention scores in stage 1 for one image, and are refused before any build."""
  big = {'task': {'model': {'input_size': [4096, 4096, 3]}}}
  params = detection.detection_config([], big)
  assert params.task.model.backbone.asvit.window_policy == 'fixed'
  big['task']['model']['backbone'] = {'asvit': {'window_policy': 'splits'}}
  with pytest.raises(ValueError) as error:
    detection.detection_config([], big)
  _assert_one_line(error, 'task.model.input_size', 'too large', 'with splits windows',
                   'attention scores of stage1')


def test_detection_config_and_build_detector_check_the_model():
  with pytest.raises(ValueError, match='not divisible'):
    detection.detection_config([TINY_YAML], {'task': {'model': {'input_size': [96, 96, 3]}}})
  params = detection.detection_config([TINY_YAML])  # data paths are not checked here
  with pytest.raises(ValueError, match='not divisible'):
    detection.build_detector(params, image_size=(160, 160))


# ---- the nuclei data set and a tiny run ------------------------------------------------------
@pytest.fixture(scope='module')
def nuclei(tmp_path_factory):
  out = str(tmp_path_factory.mktemp('nuclei_coco'))
  return make_nuclei_coco.make_nuclei_coco(out, tile=128, val_tiles=4)


@pytest.mark.slow  # builds the nuclei data set (44 s under load)
def test_nuclei_dataset(nuclei):
  assert (nuclei.num_train, nuclei.num_val) == (12, 4)
  image, labels = make_nuclei_coco.read_stardist_nuclei()
  assert image.shape == labels.shape == (512, 512)
  assert len(np.unique(labels)) - 1 == 125
  # Every nucleus appears (cut ones possibly twice, tiny border slivers dropped).
  assert 120 <= nuclei.num_train_instances + nuclei.num_val_instances <= 200
  from pycocotools import mask as mask_lib
  data = json.load(open(nuclei.val_json))
  assert data['categories'] == [make_nuclei_coco.CATEGORY]
  first = data['images'][0]
  origin = make_nuclei_coco.tile_origins(512, 512, 128)[-4]
  tile_labels = labels[origin[0]:origin[0] + 128, origin[1]:origin[1] + 128]
  for ann in (a for a in data['annotations'] if a['image_id'] == first['id']):
    x, y, w, h = ann['bbox']
    assert 0 <= x and 0 <= y and x + w <= 128 and y + h <= 128
    drawn = mask_lib.decode(mask_lib.merge(mask_lib.frPyObjects(ann['segmentation'], 128,
                                                                128))).astype(bool)
    values, counts = np.unique(tile_labels[drawn], return_counts=True)
    truth = tile_labels == values[np.argmax(counts)]
    assert (drawn & truth).sum() / (drawn | truth).sum() > 0.95
  for pattern in (nuclei.train_pattern, nuclei.val_pattern):
    files = tf.io.gfile.glob(pattern)
    assert len(files) == 1
  assert sum(1 for _ in tf.data.TFRecordDataset(tf.io.gfile.glob(nuclei.val_pattern))) == 4


def test_overlapping_training_crops_never_touch_the_validation_tiles():
  val = make_nuclei_coco.tile_origins(512, 512, 128)[-4:]  # the bottom row
  assert make_nuclei_coco.training_origins(512, 512, 128, 128, val) == (
      make_nuclei_coco.tile_origins(512, 512, 128)[:-4])  # the default: today's tiles
  crops = make_nuclei_coco.training_origins(512, 512, 128, 32, val)
  assert len(crops) == 9 * 13 and crops[0] == (0, 0) and crops[-1] == (256, 384)
  assert all(r + 128 <= 384 for r, _ in crops)
  # a validation tile inside the image: every crop that overlaps it by a pixel is left out
  crops = make_nuclei_coco.training_origins(512, 512, 128, 32, [(128, 128)])
  assert (0, 0) in crops and (0, 32) in crops and (32, 32) not in crops
  assert not any(128 - 128 < r < 256 and 128 - 128 < c < 256 for r, c in crops)
  with pytest.raises(ValueError, match='train_stride 0 must be between 1 and the tile size'):
    make_nuclei_coco.training_origins(512, 512, 128, 0, val)


def _tiny_runner(nuclei, model_dir, mode, model=None, trainer=None):
  """An Orbit runner of the tiny detection config on the nuclei data, on one CPU device;
  `model` and `trainer` override the config's sections."""
  from official.core import task_factory
  from official.core import train_lib
  from asvit_tf.garden import registry_imports  # noqa: F401  (the Mask R-CNN task)
  params = detection.detection_config([TINY_YAML], {
      'task': {'annotation_file': nuclei.val_json, 'model': model or {},
               'train_data': {'input_path': nuclei.train_pattern},
               'validation_data': {'input_path': nuclei.val_pattern}},
      'trainer': trainer or {}})
  params.validate()
  params.lock()
  strategy = tf.distribute.OneDeviceStrategy('/cpu:0')
  with strategy.scope():
    task = task_factory.get_task(params.task, logging_dir=model_dir)
  runner = train_lib.OrbitExperimentRunner(
      distribution_strategy=strategy, task=task, mode=mode, params=params,
      model_dir=model_dir)
  return params, strategy, runner


@pytest.mark.slow
def test_tiny_experiment_trains_and_evaluates(nuclei, tmp_path):
  model_dir = str(tmp_path / 'run')
  params, strategy, runner = _tiny_runner(
      nuclei, model_dir, 'train_and_eval',
      trainer={'train_steps': 2, 'steps_per_loop': 2, 'checkpoint_interval': 2,
               'validation_interval': 2, 'validation_steps': 2})
  with strategy.scope():
    runner.controller.train(steps=2)
    logs = runner.controller.evaluate(steps=2)
  for key in ('AP', 'AP50', 'mask_AP', 'mask_AP50'):
    assert key in logs and np.isfinite(float(logs[key]))
  assert tf.train.latest_checkpoint(model_dir).endswith('ckpt-2')

  # The exporter's path: a detector built from the config and the run's checkpoint.
  detector = detection.build_detector(params, model_dir)
  trained = runner.trainer.model
  np.testing.assert_array_equal(detector.backbone.weights[0].numpy(),
                                trained.backbone.weights[0].numpy())
  np.testing.assert_array_equal(detector.mask_head.weights[-1].numpy(),
                                trained.mask_head.weights[-1].numpy())


@pytest.mark.slow
def test_fixed_windows_detector_trains_a_step_at_256(nuclei, tmp_path):
  """The tiny detection config (fixed windows of 128 px: 16, 16, 8, 4 tokens) at 256 px:
  grids 64, 32, 16, 8, so the windows no longer follow the grid; one step changes the
  attention weights and gives a finite loss."""
  params, strategy, runner = _tiny_runner(
      nuclei, str(tmp_path / 'run'), 'train', model={'input_size': [256, 256, 3]},
      trainer={'train_steps': 1, 'steps_per_loop': 1, 'summary_interval': 1,
               'checkpoint_interval': 1, 'validation_interval': 1})
  assert params.task.model.backbone.asvit.window_policy == 'fixed'
  model = runner.trainer.model
  encoder = model.backbone.encoder
  windows = [stage[0].attn.window(rows, rows) for stage, rows
             in zip(encoder.stages, (64, 32, 16, 8))]
  assert windows == [(16, 16), (16, 16), (8, 8), (4, 4)]
  attention = encoder.stages[0][0].attn.qkv.kernel
  before = attention.numpy().copy()
  with strategy.scope():
    logs = runner.trainer.train(tf.constant(1, dtype=tf.int32))
  assert int(runner.trainer.global_step.numpy()) == 1
  assert np.isfinite(float(logs['training_loss'])) and float(logs['training_loss']) > 0
  assert not np.array_equal(attention.numpy(), before)
  maps = model.backbone(tf.zeros([1, 256, 256, 3]))
  assert [maps[l].shape[1] for l in '2345'] == [64, 32, 16, 8]
