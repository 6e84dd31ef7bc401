"""One check of every number, the same in every entry point (`asvit_tf.validation`)."""
import time

import pytest

from asvit_tf import arch
from asvit_tf import validation
from asvit_tf.cli import describe
from asvit_tf.cli import measure
from asvit_tf.cli import run_flags
from asvit_tf.errors import UserFacingError
from asvit_tf.errors import UserInputError
from asvit_tf.models import memory
from asvit_tf.models import size
from asvit_tf.search import grow
from asvit_tf.search import reinforce

HUGE_DEPTH = '8,2,3,99999999|4,1,2|4,1,4|4,1,6|32'


def test_user_input_errors_are_value_errors_and_user_facing():
  with pytest.raises(ValueError) as info:
    arch.Topology.parse('8,2,3|4,1,2|4,1,4|4,1,6|12')
  assert isinstance(info.value, UserInputError) and isinstance(info.value, UserFacingError)


@pytest.mark.parametrize('value, accepted', [
    (32, True), (32.0, True), (32.7, False), (True, False), ('32', False),
    (float('nan'), False), (0, False), (-4, False),
])
def test_integers_are_never_truncated(value, accepted):
  if accepted:
    assert validation.integer('x', value) == 32
  else:
    with pytest.raises(UserInputError, match=r'^x must be an integer >= 1, got '):
      validation.integer('x', value)


def test_topology_refuses_a_fractional_field():
  with pytest.raises(UserInputError, match=r'^H must be an integer >= 8, got 32\.7'):
    arch.Topology((8, 4, 4, 4), (2, 1, 1, 1), (3, 2, 4, 6), heads=32.7)
  with pytest.raises(UserInputError, match=r'^L2 must be an integer >= 1, got 1\.5'):
    arch.Topology((8, 4, 4, 4), (2, 1, 1, 1), (3, 2, 4, 6), depths=(1, 1.5, 1, 1))
  assert arch.Topology((8, 4, 4, 4), (2, 1, 1, 1), (3, 2, 4, 6), heads=32.0).heads == 32


@pytest.mark.parametrize('kwargs, message', [
    (dict(image_size=0), r'^image_size must be an integer >= 1, got 0'),
    (dict(image_size=3), r'^image_size must be at least the tokenization stride 4'),
    (dict(stride=0), r'^stride must be an integer >= 1, got 0'),
    (dict(stride=-4), r'^stride must be an integer >= 1, got -4'),
    (dict(num_classes=-3), r'^num_classes must be an integer >= 1, got -3'),
    (dict(image_size=224.5), r'^image_size must be an integer >= 1, got 224\.5'),
])
def test_count_macs_checks_its_numbers(kwargs, message):
  with pytest.raises(UserInputError, match=message):
    size.count_macs('asvit_seed', **{'image_size': 224, **kwargs})


# One image-size rule: a side >= the stride; a side the stride does not divide is padded up.
@pytest.mark.parametrize('side, ok', [(1, False), (3, False), (4, True), (30, True),
                                      (224, True)])
def test_one_image_size_rule_everywhere(side, ok):
  checks = {
      'count_macs': lambda: size.count_macs('asvit_seed', side),
      'describe': lambda: describe.format_table('asvit_seed', side),
      'search': lambda: reinforce.SearchConfig(image_size=side).validate(),
      'grow': lambda: grow.GrowConfig(image_size=side).validate(),
  }
  for name, check in checks.items():
    if ok:
      check()
    else:
      with pytest.raises(UserInputError, match='at least the tokenization stride 4'):
        check()
        pytest.fail(f'{name} accepted {side} px')
  # measure refuses before TensorFlow runs anything; a good size would start measuring
  if not ok:
    with pytest.raises(UserInputError, match='at least the tokenization stride 4'):
      measure.measure('asvit_seed', ['length'], image_size=side)


def test_padding_gives_ceil_tokens_at_every_stage():
  assert size.stage_grids(30, 4) == [(8, 8), (4, 4), (2, 2), (1, 1)]
  assert size.stage_grids(4, 4) == [(1, 1)] * 4


def test_the_ceiling_refuses_an_absurd_depth_at_once():
  start = time.perf_counter()
  with pytest.raises(UserInputError, match=r'1,062,402,298,376 parameters .* beyond the '
                                           r'256 GiB'):
    memory.check_buildable(HUGE_DEPTH)
  with pytest.raises(UserInputError, match='parameters'):
    measure.measure(HUGE_DEPTH, ['ntk'], image_size=32)
  assert time.perf_counter() - start < 1.0


def test_the_ceiling_refuses_an_absurd_image_size_and_keeps_real_ones():
  with pytest.raises(UserInputError, match=r'^`image_size` 100000 is too large .* the attention '
                                           r'scores of stage1 of one image alone take'):
    memory.check_buildable('asvit_large', 100000, name='`image_size`')
  with pytest.raises(UserInputError, match='too large'):
    reinforce.SearchConfig(image_size=100000).validate()
  with pytest.raises(UserInputError, match='too large'):
    grow.GrowConfig(image_size=100000).validate()
  with pytest.raises(UserInputError, match='beyond what any single accelerator holds'):
    grow.GrowConfig(max_params=10**12, target_params=10**9).validate()
  # every variant at its training size, and As-ViT Large at 1024 px (17 GiB of attention
  # scores for one image: big, but an accelerator holds it)
  for name in arch.variant_names():
    memory.check_buildable(name, 224)
  memory.check_buildable('asvit_large', 1024)
  scalars, what = memory.largest_activation(arch.as_topology('asvit_large'), 1024)
  assert what == 'the attention scores of stage1' and scalars == 4 * 4 * (128 * 128)**2


def test_the_ceiling_counts_the_windows_of_the_window_policy():
  large = arch.as_topology('asvit_large')
  # 4096 px: stage 1 is a 1024x1024 grid. `splits` (2 per side) attends within 512x512-token
  # windows: 4 windows x 4 heads x (512*512)^2 scores, 4 TiB, refused. `fixed` keeps the
  # 28x28 windows of 224 px: the grid padded to 1036, 37^2 windows x 4 heads x 784^2.
  scalars, what = memory.largest_activation(large, 4096)
  assert (scalars, what) == (4 * 4 * (512 * 512)**2, 'the attention scores of stage1')
  scalars, what = memory.largest_activation(large, 4096, window_policy='fixed')
  assert (scalars, what) == (37**2 * 4 * 784**2, 'the attention scores of stage1')
  with pytest.raises(UserInputError, match=r'^image_size 4096 is too large .* with splits '
                                           r'windows: the attention scores of stage1'):
    memory.check_buildable(large, 4096)
  memory.check_buildable(large, 4096, window_policy='fixed')
  # the reference size moves the fixed windows: those of 448 px are 56 tokens
  scalars, _ = memory.largest_activation(large, 4096, window_policy='fixed',
                                             window_reference_size=448)
  assert scalars == 19**2 * 4 * (56 * 56)**2
  # at the reference size both policies have the same windows, so the same count
  assert (memory.largest_activation(large, 224, window_policy='fixed')
          == memory.largest_activation(large, 224))


def test_arch_forms_are_the_same_for_every_command(tmp_path):
  run = tmp_path / 'run'
  run.mkdir()
  (run / 'seed.txt').write_text(arch.SEED + '\n')
  (tmp_path / 'large.txt').write_text('asvit_large\n')
  seed = arch.as_topology(arch.SEED)
  assert arch.resolve(arch.SEED) == seed
  assert arch.resolve(str(run)) == seed
  assert arch.resolve(f'@{run / "seed.txt"}') == seed
  assert arch.resolve(f'@{tmp_path / "large.txt"}') == arch.as_topology('asvit_large')
  assert run_flags.resolve_arch(str(run)) == seed.seed_string
  with pytest.raises(FileNotFoundError, match='does not exist'):
    arch.resolve(f'@{tmp_path / "missing.txt"}')
  with pytest.raises(UserInputError, match='unknown variant'):
    arch.resolve('asvit_huge')
