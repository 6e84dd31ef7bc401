"""A tiny COCO-format instance-segmentation set from the fluorescence nuclei in `stardist`.

The `stardist` wheel ships `stardist/data/images/img2d.tif` (512x512 uint16 nuclei, from the
2018 Kaggle Data Science Bowl) and `mask2d.tif` (its label image: 125 nuclei, 0 = background).
We read the two files by path (importing `stardist` would pull csbdeep/numba; install it with
`pip install --no-deps stardist==0.9.2`), normalise the image to uint8 RGB, cut both into
non-overlapping tiles (training crops may overlap: `--train_stride`), and write per tile one
JPEG plus COCO annotations (bbox, polygon segmentation, one category `nucleus` with id 1).
The last `val_tiles` tiles, taken from the bottom-right of the image, are the validation
split. Model Garden's COCO TFRecord tool
(`official.vision.data.create_coco_tf_record`) then converts each split.

Output layout under OUT:
  images/{train,val}_NNNN.jpg   instances_{train,val}.json
  tfrecord/{train,val}-00000-of-00001.tfrecord

Usage:  python -m asvit_tf.garden.data.make_nuclei_coco --out_dir=/tmp/asvit_nuclei_coco
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import io
import json
import os
import subprocess
import sys
import zipfile
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from asvit_tf.errors import UserInputError

CATEGORY = {'id': 1, 'name': 'nucleus', 'supercategory': 'cell'}
_IMAGE = 'stardist/data/images/img2d.tif'
_LABELS = 'stardist/data/images/mask2d.tif'
INSTALL_HINT = 'pip install --no-deps stardist==0.9.2'


@dataclasses.dataclass(frozen=True)
class NucleiCoco:
  """Paths of a written data set."""
  out_dir: str
  train_json: str
  val_json: str
  train_pattern: str  # TFRecord file patterns ('' when not converted)
  val_pattern: str
  num_train: int
  num_val: int
  num_train_instances: int
  num_val_instances: int


def read_stardist_nuclei(wheel: Optional[str] = None) -> Tuple[np.ndarray, np.ndarray]:
  """(image, labels): the stardist 2-D nuclei image and its instance label image.

  Both are [512, 512] uint16. Read from the installed package's files (found without
  importing it) or, with `wheel`, from a downloaded `stardist-*.whl`.
  """
  if wheel:
    with zipfile.ZipFile(wheel) as z:
      return tuple(np.array(Image.open(io.BytesIO(z.read(p)))) for p in (_IMAGE, _LABELS))
  spec = importlib.util.find_spec('stardist')
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError(f'the stardist package is not installed; run `{INSTALL_HINT}` '
                            'or pass the wheel file')
  root = os.path.dirname(list(spec.submodule_search_locations)[0])
  arrays = []
  for rel in (_IMAGE, _LABELS):
    path = os.path.join(root, rel)
    if not os.path.exists(path):
      raise FileNotFoundError(f'{path} is missing from the installed stardist package')
    arrays.append(np.array(Image.open(path)))
  return arrays[0], arrays[1]


def to_rgb8(image: np.ndarray, low: float = 1.0, high: float = 99.8) -> np.ndarray:
  """Percentile-normalised uint8 RGB [H, W, 3] of a single-channel image of any dtype."""
  lo, hi = np.percentile(image, [low, high])
  scaled = np.clip((image.astype(np.float64) - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
  gray = np.round(scaled * 255).astype(np.uint8)
  return np.repeat(gray[..., None], 3, axis=-1)


def mask_polygons(mask: np.ndarray) -> List[List[float]]:
  """COCO polygons [[x0, y0, x1, y1, ...], ...] of a binary mask [H, W].

  Marching squares at 0.5 on the zero-padded mask: vertices sit on pixel-edge midpoints, so
  the polygon follows the pixel outline and only cuts its corners. Coordinates are COCO's
  (pixel (r, c) covers [c, c+1] x [r, r+1]).
  """
  import contourpy  # a matplotlib dependency
  padded = np.pad(mask.astype(np.float64), 1)
  lines = contourpy.contour_generator(z=padded, line_type='Separate').lines(0.5)
  polygons = []
  for line in lines:  # [N, 2] of (col, row) in padded index coordinates
    if len(line) < 4:
      continue
    xy = line[:-1] if np.allclose(line[0], line[-1]) else line
    xy = xy - 1.0 + 0.5  # undo the padding, then index -> COCO coordinates
    polygons.append([round(float(v), 2) for v in xy.reshape(-1)])
  return polygons


def _polygon_area(poly: Sequence[float]) -> float:
  x, y = np.asarray(poly[0::2]), np.asarray(poly[1::2])
  return float(0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


def instance_annotations(labels: np.ndarray, image_id: int, first_id: int,
                         min_area: int = 16) -> List[Dict]:
  """COCO annotations of every label in `labels` [H, W] with at least `min_area` pixels.

  Nuclei cut by a tile border keep the part inside the tile (their box is the part's box).
  """
  anns = []
  for value in np.unique(labels):
    if value == 0:
      continue
    mask = labels == value
    if mask.sum() < min_area:
      continue
    polygons = mask_polygons(mask)
    if not polygons:
      continue
    rows, cols = np.nonzero(mask)
    x0, y0 = int(cols.min()), int(rows.min())
    bbox = [float(x0), float(y0), float(cols.max() + 1 - x0), float(rows.max() + 1 - y0)]
    anns.append({'id': first_id + len(anns), 'image_id': image_id,
                 'category_id': CATEGORY['id'], 'segmentation': polygons,
                 'area': float(sum(_polygon_area(p) for p in polygons)), 'bbox': bbox,
                 'iscrowd': 0})
  return anns


def tile_origins(height: int, width: int, tile: int) -> List[Tuple[int, int]]:
  """Top-left corners of the non-overlapping `tile` x `tile` tiles, row by row."""
  if tile < 16 or tile > min(height, width):
    raise UserInputError(f'tile size {tile} must be between 16 and {min(height, width)}')
  return [(r, c) for r in range(0, height - tile + 1, tile)
          for c in range(0, width - tile + 1, tile)]


def training_origins(height: int, width: int, tile: int, stride: int,
                     val_origins: Sequence[Tuple[int, int]]) -> List[Tuple[int, int]]:
  """Top-left corners of the `tile` x `tile` training crops every `stride` pixels, row by
  row, leaving out every crop that overlaps a validation tile (so no validation pixel is
  trained on). `stride == tile` gives the non-overlapping tiles."""
  if not 1 <= stride <= tile:
    raise UserInputError(f'train_stride {stride} must be between 1 and the tile size {tile}')
  crops = [(r, c) for r in range(0, height - tile + 1, stride)
           for c in range(0, width - tile + 1, stride)]
  return [(r, c) for r, c in crops
          if all(r + tile <= vr or vr + tile <= r or c + tile <= vc or vc + tile <= c
                 for vr, vc in val_origins)]


def write_coco(out_dir: str, tile: int = 128, val_tiles: int = 4,
               wheel: Optional[str] = None,
               train_stride: Optional[int] = None) -> Tuple[str, str, int, int, int, int]:
  """Writes images/ and instances_{train,val}.json; returns the json paths and counts.

  `train_stride` (default: the tile size) spaces the training crops; below the tile size
  they overlap, which gives more (correlated) training images from the one image.
  """
  image, labels = read_stardist_nuclei(wheel)
  rgb = to_rgb8(image)
  origins = tile_origins(*labels.shape, tile)
  if not 1 <= val_tiles < len(origins):
    raise UserInputError(f'val_tiles={val_tiles} must be in [1, {len(origins) - 1}] for '
                         f'{len(origins)} tiles of {tile} px')
  os.makedirs(os.path.join(out_dir, 'images'), exist_ok=True)
  val_origins = origins[-val_tiles:]
  splits = {'train': training_origins(*labels.shape, tile, train_stride or tile, val_origins),
            'val': val_origins}
  paths, counts = [], []
  next_ann = 1
  image_id = 1
  for split, split_origins in splits.items():
    images, anns = [], []
    for r, c in split_origins:
      name = f'{split}_{image_id:04d}.jpg'
      Image.fromarray(rgb[r:r + tile, c:c + tile]).save(
          os.path.join(out_dir, 'images', name), quality=95)
      images.append({'id': image_id, 'file_name': name, 'height': tile, 'width': tile})
      new = instance_annotations(labels[r:r + tile, c:c + tile], image_id, next_ann)
      anns += new
      next_ann += len(new)
      image_id += 1
    path = os.path.join(out_dir, f'instances_{split}.json')
    with open(path, 'w') as f:
      json.dump({'info': {'description': 'stardist 2-D nuclei (DSB 2018), tiled'},
                 'licenses': [], 'images': images, 'annotations': anns,
                 'categories': [CATEGORY]}, f)
    paths.append(path)
    counts += [len(images), len(anns)]
  return paths[0], paths[1], counts[0], counts[2], counts[1], counts[3]


def converter_command(image_dir: str, annotations_json: str, output_prefix: str,
                      python: str = sys.executable) -> List[str]:
  """The command line of Model Garden's COCO TFRecord tool for one split (one shard)."""
  return [python, '-m', 'official.vision.data.create_coco_tf_record', '--logtostderr',
          f'--image_dir={image_dir}', f'--object_annotations_file={annotations_json}',
          f'--output_file_prefix={output_prefix}', '--num_shards=1', '--include_masks=true',
          '--num_processes=0']


def convert_splits(image_dir: str, splits: Dict[str, str], record_dir: str) -> Dict[str, str]:
  """Converts {split: instances json} to `record_dir/split-*.tfrecord`; returns the patterns.

  The conversions are independent processes and run side by side.
  """
  os.makedirs(record_dir, exist_ok=True)
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get('TF_CPP_MIN_LOG_LEVEL', '2'))
  procs = {}
  for split, annotations_json in splits.items():
    prefix = os.path.join(record_dir, split)
    procs[split] = (prefix, subprocess.Popen(
        converter_command(image_dir, annotations_json, prefix), env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
  patterns = {}
  for split, (prefix, proc) in procs.items():
    _, err = proc.communicate()
    if proc.returncode:
      raise RuntimeError(f'create_coco_tf_record failed on {splits[split]}:\n{err[-2000:]}')
    patterns[split] = prefix + '-*'
  return patterns


def make_nuclei_coco(out_dir: str, tile: int = 128, val_tiles: int = 4,
                     convert: bool = True, wheel: Optional[str] = None,
                     train_stride: Optional[int] = None) -> NucleiCoco:
  """Builds the tiled COCO set under `out_dir` and (with `convert`) its TFRecords.

  `train_stride`: see `write_coco` (default: non-overlapping training tiles).
  """
  train_json, val_json, n_train, n_val, i_train, i_val = write_coco(
      out_dir, tile, val_tiles, wheel, train_stride)
  train_pattern = val_pattern = ''
  if convert:
    patterns = convert_splits(os.path.join(out_dir, 'images'),
                              {'train': train_json, 'val': val_json},
                              os.path.join(out_dir, 'tfrecord'))
    train_pattern, val_pattern = patterns['train'], patterns['val']
  return NucleiCoco(out_dir, train_json, val_json, train_pattern, val_pattern, n_train, n_val,
                    i_train, i_val)


def main(argv: Optional[Sequence[str]] = None) -> NucleiCoco:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--out_dir', default='/tmp/asvit_nuclei_coco')
  parser.add_argument('--tile', type=int, default=128, help='tile side in pixels')
  parser.add_argument('--val_tiles', type=int, default=4)
  parser.add_argument('--train_stride', type=int, default=None,
                      help='pixels between training crops (default: the tile size, no '
                      'overlap); smaller strides give overlapping crops')
  parser.add_argument('--wheel', default=None, help='read from this stardist wheel file')
  parser.add_argument('--no_convert', action='store_true', help='skip the TFRecord step')
  args = parser.parse_args(argv)
  data = make_nuclei_coco(args.out_dir, args.tile, args.val_tiles, not args.no_convert,
                          args.wheel, args.train_stride)
  print(f'train: {data.num_train} images, {data.num_train_instances} nuclei -> '
        f'{data.train_pattern or data.train_json}')
  print(f'val:   {data.num_val} images, {data.num_val_instances} nuclei -> '
        f'{data.val_pattern or data.val_json}')
  return data


if __name__ == '__main__':
  try:
    main()
  except (ValueError, FileNotFoundError) as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
