"""The image batch for κ_Θ: a TFDS data set, a folder of images, 'photos' (random crops of
photos shipped with scikit-image), or None (Gaussian noise).

Images are resized (shorter side to `image_size`, centre crop) and normalised with the
ImageNet mean and standard deviation, so they are on the scale of the N(0, 1) default.
Nothing is downloaded: a TFDS data set must already be prepared in `data_dir`.
"""
from __future__ import annotations

import os
from typing import List, Optional

import numpy as np

from asvit_tf import seeding
from asvit_tf.errors import UserInputError

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.gif', '.webp', '.tif', '.tiff')
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def _looks_like_path(data: str) -> bool:
  return data.startswith(('/', './', '../', '~')) or data in ('.', '..')


def _preprocess(image: np.ndarray, image_size: int) -> np.ndarray:
  from PIL import Image  # pylint: disable=g-import-not-at-top
  img = Image.fromarray(np.asarray(image, np.uint8)).convert('RGB')
  w, h = img.size
  scale = image_size / min(w, h)
  img = img.resize((max(image_size, round(w * scale)), max(image_size, round(h * scale))),
                   Image.BILINEAR)
  w, h = img.size
  left, top = (w - image_size) // 2, (h - image_size) // 2
  img = img.crop((left, top, left + image_size, top + image_size))
  x = np.asarray(img, np.float32) / 255.0
  return (x - MEAN) / STD


def list_images(folder: str) -> List[str]:
  files = []
  for root, dirs, names in os.walk(folder):
    dirs.sort()
    files += [os.path.join(root, n) for n in sorted(names)
              if n.lower().endswith(IMAGE_EXTENSIONS)]
  return files


def _folder_batch(folder: str, image_size: int, batch_size: int, seed: int) -> np.ndarray:
  from PIL import Image  # pylint: disable=g-import-not-at-top
  files = list_images(folder)
  if not files:
    raise UserInputError(f'`data` {folder} holds no image files ({", ".join(IMAGE_EXTENSIONS)})')
  rng = seeding.rng(seed, seeding.FOLDER_PICKS)
  picks = rng.choice(len(files), size=batch_size, replace=len(files) < batch_size)
  batch = []
  for i in picks:
    try:
      with Image.open(files[i]) as img:
        batch.append(_preprocess(np.asarray(img.convert('RGB')), image_size))
    except OSError as e:
      raise UserInputError(f'cannot read image {files[i]}: {e}') from None
  return np.stack(batch)


# Natural photos shipped inside scikit-image (read from the installed files, no network).
PHOTOS = ('astronaut', 'chelsea', 'coffee', 'rocket')


def photo_batch(image_size: int = 224, batch_size: int = 16, seed: int = 0) -> np.ndarray:
  """[batch_size, image_size, image_size, 3] float32 random crops of `PHOTOS`, normalised as
  the other batches: each a square of 50-100 % of its photo's shorter side at a random
  place, resized to `image_size`. The same seed gives the same batch."""
  try:
    from skimage import data as skimage_data  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise UserInputError("`data` 'photos' needs scikit-image (pip install 'asvit-tf[data]')"
                         ) from None
  photos = [getattr(skimage_data, name)() for name in PHOTOS]
  rng = seeding.rng(seed, seeding.PHOTO_CROPS)
  batch = []
  for _ in range(batch_size):
    photo = photos[rng.integers(len(photos))]
    h, w = photo.shape[:2]
    side = int(rng.integers(min(h, w) // 2, min(h, w) + 1))
    top, left = int(rng.integers(h - side + 1)), int(rng.integers(w - side + 1))
    batch.append(_preprocess(photo[top:top + side, left:left + side], image_size))
  return np.stack(batch)


def _tfds_batch(name: str, data_dir: Optional[str], image_size: int,
                batch_size: int) -> np.ndarray:
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  try:
    builder = tfds.builder(name, data_dir=data_dir or None)
  except Exception as e:  # pylint: disable=broad-except
    raise UserInputError(f'`data` {name!r} is neither an image folder nor a known TFDS data set '
                         f'({type(e).__name__})') from None
  if not builder.is_prepared():
    where = data_dir or builder.data_dir
    raise FileNotFoundError(f'TFDS data set {name!r} is not prepared under {where} '
                            '(nothing is downloaded: prepare it or pass `data_dir`)')
  split = 'train' if 'train' in builder.info.splits else next(iter(builder.info.splits))
  ds = builder.as_dataset(split=split, shuffle_files=False).take(batch_size)
  key = 'image'
  batch = []
  for example in tfds.as_numpy(ds):
    if key not in example:
      raise UserInputError(f'TFDS data set {name!r} has no "image" feature')
    batch.append(_preprocess(example[key], image_size))
  if not batch:
    raise UserInputError(f'TFDS data set {name!r} split {split!r} is empty')
  while len(batch) < batch_size:
    batch.append(batch[len(batch) % len(batch)])
  return np.stack(batch)


def load_batch(data: str, data_dir: str = '', image_size: int = 224, batch_size: int = 16,
               seed: int = 0) -> Optional[np.ndarray]:
  """[batch_size, image_size, image_size, 3] float32 images, or None for Gaussian noise."""
  data = (data or '').strip()
  if data_dir and not os.path.isdir(os.path.expanduser(data_dir)):
    raise FileNotFoundError(f'`data_dir` {data_dir} does not exist')
  if not data:
    return None
  if data == 'photos':
    if os.path.isdir(data):
      raise UserInputError("`data` 'photos' names scikit-image's photos, and ./photos is a folder "
                         "too: give `data`='./photos' for the folder")
    return photo_batch(image_size, batch_size, seed)
  path = os.path.expanduser(data)
  if os.path.isdir(path):
    return _folder_batch(path, image_size, batch_size, seed)
  if os.path.exists(path):
    raise UserInputError(f'`data` {data} is a file; give a folder of images or a TFDS name')
  if _looks_like_path(data):
    raise FileNotFoundError(f'`data` {data}: no such folder')
  return _tfds_batch(data, os.path.expanduser(data_dir) if data_dir else None, image_size,
                     batch_size)
