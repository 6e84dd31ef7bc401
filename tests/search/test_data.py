import numpy as np
import pytest
from PIL import Image

from asvit_tf.search import data


def test_image_folder_batch(tmp_path):
  rng = np.random.default_rng(0)
  (tmp_path / 'sub').mkdir()
  for name in ('a.png', 'sub/b.jpg'):
    Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(tmp_path / name)
  (tmp_path / 'notes.txt').write_text('not an image')
  batch = data.load_batch(str(tmp_path), image_size=32, batch_size=4, seed=0)
  assert batch.shape == (4, 32, 32, 3) and batch.dtype == np.float32
  assert -3 < batch.mean() < 3
  np.testing.assert_array_equal(batch, data.load_batch(str(tmp_path), image_size=32,
                                                       batch_size=4, seed=0))


def test_noise_default_and_bad_paths(tmp_path):
  assert data.load_batch('') is None
  with pytest.raises(FileNotFoundError, match='no such folder'):
    data.load_batch('/nonexistent/images')
  with pytest.raises(FileNotFoundError, match='`data_dir` .* does not exist'):
    data.load_batch('imagenet2012', data_dir=str(tmp_path / 'missing'))
  (tmp_path / 'x.png').write_text('')
  with pytest.raises(ValueError, match='is a file'):
    data.load_batch(str(tmp_path / 'x.png'))
  (tmp_path / 'empty').mkdir()
  with pytest.raises(ValueError, match='no image files'):
    data.load_batch(str(tmp_path / 'empty'))


def test_tfds_dataset_must_be_prepared(tmp_path):
  with pytest.raises(FileNotFoundError, match='not prepared'):
    data.load_batch('mnist', data_dir=str(tmp_path))
  with pytest.raises(ValueError, match='neither an image folder nor a known TFDS'):
    data.load_batch('no_such_dataset_xyz', data_dir=str(tmp_path))


def test_photo_crops_are_deterministic_by_seed(tmp_path, monkeypatch):
  """--data=photos: random crops of scikit-image's photos, the same batch for the same seed,
  another for another seed; normalised like the other batches."""
  a = data.load_batch('photos', image_size=48, batch_size=6, seed=3)
  assert a.shape == (6, 48, 48, 3) and a.dtype == np.float32
  np.testing.assert_array_equal(a, data.photo_batch(48, 6, seed=3))
  assert not np.array_equal(a, data.photo_batch(48, 6, seed=4))
  assert len({x.tobytes() for x in a}) == 6          # six different crops
  assert -1.5 < a.mean() < 1.5 and 0.3 < a.std() < 2.0   # natural images, ImageNet-normalised
  monkeypatch.chdir(tmp_path)
  (tmp_path / 'photos').mkdir()
  with pytest.raises(ValueError, match="give `data`='./photos' for the folder"):
    data.load_batch('photos', image_size=48, batch_size=2)
