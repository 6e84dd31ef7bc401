"""The forms of `asvit grow --arch` (a seed, a variant, a scaled topology, @file, a dir)."""
import logging

import pytest

from asvit_tf.cli import run_flags

SEED = '8,2,3|4,1,2|4,1,4|4,1,6|32'


def test_resolve_arch_forms(tmp_path):
  (tmp_path / 'seed.txt').write_text('7,2,3|4,1,2|4,1,4|4,1,6|32\n')
  assert run_flags.resolve_arch(f'@{tmp_path}/seed.txt') == '7,2,3|4,1,2|4,1,4|4,1,6|32'
  assert run_flags.resolve_arch(str(tmp_path)) == '7,2,3|4,1,2|4,1,4|4,1,6|32'
  with pytest.raises(FileNotFoundError, match='has the search finished'):
    run_flags.resolve_arch(f'@{tmp_path}/missing.txt')
  with pytest.raises(ValueError, match='H must be divisible by 8'):
    run_flags.resolve_arch('8,2,3|4,1,2|4,1,4|4,1,6|30')
  with pytest.raises(ValueError, match='--arch is required'):
    run_flags.resolve_arch(' ')
  (tmp_path / 'empty').mkdir()
  (tmp_path / 'empty' / 'seed.txt').write_text('\n')
  with pytest.raises(ValueError, match='is empty'):
    run_flags.resolve_arch(str(tmp_path / 'empty'))


@pytest.mark.parametrize('arch', ['asvit_large', '8,2,3,5|4,1,2,2|4,1,4,5|4,1,6,2|32,180',
                                  '8,2,3|4,1,2|4,1,4|4,1,6|32,64'])
def test_a_scaled_arch_says_only_its_seed_part_is_used(arch, caplog):
  with caplog.at_level(logging.WARNING):
    assert run_flags.resolve_arch(arch) == SEED
  warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
  assert len(warnings) == 1 and f'only its seed part {SEED} is used' in warnings[0]


@pytest.mark.parametrize('arch', [SEED, 'asvit_seed', '8,2,3,1|4,1,2,1|4,1,4,1|4,1,6,1|32,32'])
def test_a_seed_arch_is_used_silently(arch, caplog):
  with caplog.at_level(logging.WARNING):
    assert run_flags.resolve_arch(arch) == SEED
  assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
