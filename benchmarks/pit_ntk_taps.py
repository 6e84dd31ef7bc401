"""κ_Θ of one ViT-Bench-101 PiT (224 px, 16 Gaussian images, 5 repeats) in this process, after
a warm-up (a tiny PiT at 32 px, same method and mode: what a correlate worker's earlier
networks leave behind). Prints one JSON line: CPU-s and wall-s of the measure, the 1-minute
load average, peak RSS (`ru_maxrss`) and the values. Run one process per line of a comparison
(docs/benchmarks.md, "κ_Θ of PiTs by taps"), e.g.

  python benchmarks/pit_ntk_taps.py --record=84 --method=vmap --mode=auto
"""
import json
import os
import resource
import time

from absl import app
from absl import flags

from asvit_tf import correlate
from asvit_tf.complexity import ntk
from asvit_tf.correlate import table
from asvit_tf.models import pit
from asvit_tf.models import pit_size

_RECORD = flags.DEFINE_integer('record', 59, 'index of the PiT in the ViT-Bench-101 table')
_METHOD = flags.DEFINE_enum('method', 'auto', list(ntk.METHODS), 'per-image gradients by')
_MODE = flags.DEFINE_enum('mode', 'auto', ['auto', 'eager', 'graph'], 'eager or traced')
_REPEATS = flags.DEFINE_integer('repeats', 5, 'independent initialisations')


def main(argv):
  del argv
  arch = table.read_table(correlate.PIT_C100, 'pit')[_RECORD.value].network
  # Eager, the whole batch in one pass, as mode='auto' runs it eagerly.
  chunk = {'chunk_size': None} if _MODE.value == 'eager' else {}
  kwargs = dict(method=_METHOD.value, mode=_MODE.value, **chunk)
  ntk.ntk_condition_number(pit.pit_factory(pit_size.PitArch(8, 2, (1, 1, 1), (1, 2, 2)), 32),
                           32, repeats=2, batch_size=4, **kwargs)
  cpu, wall = time.process_time(), time.perf_counter()
  result = ntk.ntk_condition_number(pit.pit_factory(arch, 224), 224, repeats=_REPEATS.value,
                                    seed=0, batch_size=16, **kwargs)
  cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
  print(json.dumps({
      'arch': str(arch), 'macs': pit_size.count_macs(arch), 'method': _METHOD.value,
      'mode': _MODE.value, 'cpu_s': round(cpu, 2), 'wall_s': round(wall, 2),
      'load1': os.getloadavg()[0],
      'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
      'values': result.values}), flush=True)


if __name__ == '__main__':
  app.run(main)
