"""The AP-vs-steps curve of a detection run: a Markdown table and a PNG plot.

Reads the TensorBoard summaries that Model Garden writes under MODEL_DIR (`validation/`: box
AP, AP50, mask AP, mask AP50 at every evaluation; `train/`: the training loss) and prints a
table with one row per evaluation; with --png, plots box and mask AP50 and AP against steps.

Usage: python benchmarks/detection_curve.py --model_dir=/tmp/asvit_det_nuclei \
           --png=docs/detection_nuclei_curve.png
"""
from __future__ import annotations

import argparse
import glob
import os
import sys
from typing import Dict, List

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

EVAL_TAGS = ('AP50', 'AP', 'mask_AP50', 'mask_AP')


def read_scalars(event_dir: str) -> Dict[str, Dict[int, float]]:
  """{tag: {step: value}} of the scalar summaries in an event directory."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  out: Dict[str, Dict[int, float]] = {}
  for path in sorted(glob.glob(os.path.join(event_dir, 'events.out.tfevents.*'))):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        if value.HasField('tensor'):
          number = float(tf.make_ndarray(value.tensor))
        elif value.HasField('simple_value'):
          number = float(value.simple_value)
        else:
          continue
        out.setdefault(value.tag, {})[int(event.step)] = number
  return out


def curve_rows(model_dir: str) -> List[Dict[str, float]]:
  """One row per evaluation: step, the training loss logged at that step, and EVAL_TAGS."""
  evals = read_scalars(os.path.join(model_dir, 'validation'))
  train = read_scalars(os.path.join(model_dir, 'train'))
  if 'AP50' not in evals:
    raise FileNotFoundError(f'no evaluation summaries (AP50) under {model_dir}/validation')
  loss = train.get('training_loss', {})
  rows = []
  for step in sorted(evals['AP50']):
    row = {'step': step, 'training_loss': loss.get(step, float('nan'))}
    row.update({tag: evals.get(tag, {}).get(step, float('nan')) for tag in EVAL_TAGS})
    rows.append(row)
  return rows


def markdown(rows: List[Dict[str, float]]) -> str:
  lines = ['| step | training loss | box AP50 | box AP | mask AP50 | mask AP |',
           '|-----:|--------------:|---------:|-------:|----------:|--------:|']
  for r in rows:
    lines.append(f"| {r['step']} | {r['training_loss']:.3f} | {r['AP50']:.3f} | {r['AP']:.3f} "
                 f"| {r['mask_AP50']:.3f} | {r['mask_AP']:.3f} |")
  return '\n'.join(lines)


def plot(rows: List[Dict[str, float]], path: str, title: str) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  steps = [r['step'] for r in rows]
  fig, ax = plt.subplots(figsize=(6, 3.8), dpi=120)
  for tag, style in (('AP50', 'o-'), ('AP', 'o--'), ('mask_AP50', 's-'), ('mask_AP', 's--')):
    ax.plot(steps, [r[tag] for r in rows], style, label=tag.replace('_', ' '))
  ax.axhline(0.3, color='gray', lw=0.8, ls=':', label='target box AP50 0.3')
  ax.set_xlabel('training step')
  ax.set_ylabel('COCO AP on the 4 held-out tiles')
  ax.set_ylim(0, 1)
  ax.set_title(title, fontsize=9)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8, loc='upper left')
  fig.tight_layout()
  fig.savefig(path)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--model_dir', required=True)
  parser.add_argument('--png', default='', help='write the plot here')
  parser.add_argument('--title', default='Cascade Mask R-CNN, tiny As-ViT, stardist nuclei')
  args = parser.parse_args(argv)
  rows = curve_rows(args.model_dir)
  print(markdown(rows))
  if args.png:
    plot(rows, args.png, args.title)
    print(f'wrote {args.png}')


if __name__ == '__main__':
  try:
    main()
  except FileNotFoundError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
