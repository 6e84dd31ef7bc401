"""Does the residual merge (issue 21) change the complexity measures at initialisation?

  python benchmarks/residual_merge.py                        # 3 topologies, 64 px, 2 repeats
  python benchmarks/residual_merge.py --image_size=96 --repeats=5 --seed=1

For each topology, L^E (LayerNorm-free network, by hand) and κ_Θ (with LayerNorms, taps) of
the As-ViT with the plain merge and with the residual one, the same seed for both: the
same curves and noise images, but not the same weights (draws are seeded by variable index,
which the shortcut kernels shift), so a difference within the spread over repeats is noise.
Prints a Markdown table.
"""
from __future__ import annotations

import os
import sys
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

from asvit_tf import complexity  # noqa: E402
from asvit_tf import models  # noqa: E402
from benchmarks import _report  # noqa: E402

# The authors' seed and two other points of the search space, each at C=32.
TOPOLOGIES = ('8,2,3|4,1,2|4,1,4|4,1,6|32', '4,8,2|2,1,6|3,2,5|2,1,3|16',
              '6,4,5|3,2,3|4,1,2|3,1,4|64')

flags.DEFINE_list('topologies', list(TOPOLOGIES), 'Seed topology strings to measure.')
flags.DEFINE_integer('image_size', 64, 'Image side in pixels.')
flags.DEFINE_integer('repeats', 2, 'Initialisations per measure.')
flags.DEFINE_integer('seed', 0, 'Seed of weights, curves and noise images.')
FLAGS = flags.FLAGS


def factory(topology: str, merge: str):
  return lambda ln: models.AsViT(topology, num_classes=1, use_layer_norm=ln, merge=merge,
                                 name='measured')


def main(argv):
  del argv
  rows = []
  for topology in FLAGS.topologies:
    for merge in models.size.MERGES:
      start = time.perf_counter()
      length = complexity.length_distortion(factory(topology, merge), FLAGS.image_size,
                                            repeats=FLAGS.repeats, seed=FLAGS.seed)
      kappa = complexity.ntk_condition_number(factory(topology, merge), FLAGS.image_size,
                                              repeats=FLAGS.repeats, seed=FLAGS.seed)
      cell = topology.replace('|', '\\|')  # a bare | would split the Markdown cell
      rows.append((f'`{cell}`', merge,
                   f'{models.estimate_params(topology, 1000, merge=merge) / 1e6:.3f}',
                   f'{length.mean:.4g}', ' / '.join(f'{v:.4g}' for v in length.values),
                   f'{kappa.mean:.4g}', ' / '.join(f'{v:.4g}' for v in kappa.values)))
      print(f'{topology} {merge}: L^E {length.mean:.4g}, kappa {kappa.mean:.4g} '
            f'({time.perf_counter() - start:.0f} s)', flush=True)
  print(f'\n`{_report.command_line()}`\n')
  print(_report.markdown_table(('topology', 'merge', 'params (M)', 'L^E', 'per repeat',
                                'κ_Θ', 'per repeat'), rows))


if __name__ == '__main__':
  app.run(main)
