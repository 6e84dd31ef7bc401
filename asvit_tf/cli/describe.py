"""`asvit describe ARCH [--image_size=224] [--num_classes=1000] [--stride=4] [--merge=plain]`.

Prints a per-part table of an As-ViT topology: token grid, width, heads, attention window,
blocks, parameters and multiply-accumulates (with `--merge=residual`, a row per merging's
shortcut). Needs no TensorFlow. The numbers follow
`asvit_tf.validation` (image sides >= the stride; a network beyond any accelerator's memory
is refused).
"""
from __future__ import annotations

from absl import flags

from asvit_tf import arch as arch_lib
from asvit_tf import validation
from asvit_tf.errors import UserInputError
from asvit_tf.models import memory
from asvit_tf.models import size

ARCH_ARGUMENT = 'ARCH'


def define_flags():
  """Defines the flags of this command (the dispatcher calls it before parsing)."""
  flags.DEFINE_integer('image_size', 224, 'Image side in pixels (>= --stride).')
  flags.DEFINE_integer('num_classes', 1000, 'Classes of the classification head.')
  flags.DEFINE_integer('stride', 4, 'Tokenization stride of the patch embedding.')
  flags.DEFINE_string('merge', 'plain', 'Patch merging between stages: plain (As-ViT) or '
                      'residual (plus a pooled, projected shortcut, as in ViT-ResNAS).')


FLAGS = flags.FLAGS


def format_table(arch, image_size: int = 224, num_classes: int = 1000, stride: int = 4,
                 merge: str = 'plain') -> str:
  """The table; errors name the arguments as fields (the command line shows their flags)."""
  topo = arch_lib.as_topology(arch)
  size.check_merge(merge, '`merge`')
  num_classes = validation.integer('`num_classes`', num_classes)
  stride = validation.integer('`stride`', stride)
  memory.check_buildable(topo, image_size, num_classes, stride, '`image_size`')
  parts = size.cost_breakdown(topo, image_size, num_classes, stride, merge=merge)
  header = ('part', 'grid', 'width', 'heads', 'window', 'blocks', 'params', 'MACs')
  rows = []
  for p in parts:
    rows.append((p.name, f'{p.grid[0]}x{p.grid[1]}', str(p.width), str(p.heads or '-'),
                 str(p.window or '-'), str(p.blocks or '-'), f'{p.params / 1e6:.3f} M',
                 f'{p.macs / 1e9:.4f} G'))
  total_p, total_m = sum(p.params for p in parts), sum(p.macs for p in parts)
  rows.append(('total', '', '', '', '', str(topo.num_blocks), f'{total_p / 1e6:.3f} M',
               f'{total_m / 1e9:.4f} G'))
  widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
  line = lambda r: '  '.join(v.rjust(w) if i else v.ljust(w)
                             for i, (v, w) in enumerate(zip(r, widths)))
  merged = '' if merge == 'plain' else f', {merge} merge'
  out = [f'{topo}  ({image_size}x{image_size}, stride {stride}, {num_classes} classes{merged})',
         line(header), line(tuple('-' * w for w in widths))]
  out += [line(r) for r in rows]
  return '\n'.join(out)


def main(argv):
  if len(argv) != 2:
    raise UserInputError(f'describe takes one ARCH: {arch_lib.arch_help()}')
  print(format_table(arch_lib.resolve(argv[1]), FLAGS.image_size, FLAGS.num_classes,
                     FLAGS.stride, merge=FLAGS.merge))
