"""Input pipelines exactly as the released runs were trained and evaluated.

Every example carries its `index`: its position in the dataset's canonical
order, the same index `aux_arrays.npz` uses.

- CIFAR-10/100: `tfds.load(name, batch_size=-1, shuffle_files=False)`, images
  `uint8 / 255.0`, no mean/std normalisation.
- ImageNet: user-built TFRecords with features `image/encoded`, `label`,
  `index`; centre crop with padding 32, 224x224, mean/std normalisation.
"""

import dataclasses
import glob
import os
from typing import Optional

import numpy as np
import tensorflow as tf

CIFAR_PAD = 4
IMAGENET_SIZE = 224
IMAGENET_CROP_PADDING = 32
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET_SPLIT_FILES = {"train": "train-*", "test": "validation-*"}


@dataclasses.dataclass
class Dataset:
  """A dataset whose splits yield `{'image', 'label', 'index'}` examples."""
  name: str
  make_split: callable  # split -> (unbatched tf.data.Dataset, num_examples)
  _splits: dict = dataclasses.field(default_factory=dict, repr=False)

  def split(self, split: str):
    """Returns `(tf.data.Dataset of examples, number of examples or None)`.

    Each split is opened once and reused (CIFAR splits live in memory).
    """
    if split not in ("train", "test"):
      raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if split not in self._splits:
      self._splits[split] = self.make_split(split)
    return self._splits[split]

  def batches(self, split: str, batch_size: int):
    ds, n = self.split(split)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE), n


def load(dataset: str, data_dir: Optional[str] = None,
         download: bool = False) -> Dataset:
  """Opens `dataset` ('cifar10:3.0.2', 'cifar100:3.0.2' or 'imagenet').

  For CIFAR, `data_dir` is the tfds data directory (tfds' default when None);
  with `download=False` a missing dataset is an error, never a download.
  For ImageNet, `data_dir` holds indexed TFRecords `train-*` / `validation-*`.
  """
  if dataset == "imagenet":
    if not data_dir:
      raise ValueError("ImageNet needs --data_dir: a directory of indexed "
                       "TFRecords (train-*, validation-*) with features "
                       "image/encoded, label, index.")
    return Dataset(dataset, lambda split: imagenet_split(data_dir, split))
  return Dataset(dataset,
                 lambda split: cifar_split(dataset, split, data_dir, download))


def load_tfds_arrays(name: str, split: str, data_dir=None, download=False):
  """The whole split as numpy arrays, in canonical (unshuffled) order."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  try:
    arrays = tfds.load(name, split=split, batch_size=-1, shuffle_files=False,
                       data_dir=data_dir, download=download)
  except (tfds.core.DatasetNotFoundError, AssertionError, FileNotFoundError) as e:
    where = data_dir or "the default tfds data_dir (~/tensorflow_datasets)"
    raise FileNotFoundError(
        f"tfds dataset {name!r} split {split!r} is not prepared in {where}. "
        "Pass --data_dir pointing at a prepared tfds directory, or --download "
        f"where a network is available. ({type(e).__name__}: {e})") from e
  return tfds.as_numpy(arrays)


def cifar_split(name: str, split: str, data_dir=None, download=False):
  """Evaluation examples of a CIFAR split, with their canonical index."""
  arrays = load_tfds_arrays(name, split, data_dir, download)
  n = len(arrays["label"])
  ds = tf.data.Dataset.from_tensor_slices({
      "image": arrays["image"],
      "label": arrays["label"].astype(np.int64),
      "index": np.arange(n, dtype=np.int64),
  }).map(lambda ex: dict(ex, image=tf.cast(ex["image"], tf.float32) / 255.0))
  return ds, n


def cifar_augment(image, seed=None):
  """Training augmentation: pad 4, random 32x32 crop, random left-right flip.

  `image` is a float [32, 32, 3] image; `seed` an optional stateless seed
  (shape [2]) to make the augmentation reproducible.
  """
  shape = tf.shape(image)
  padded = tf.pad(image, [[CIFAR_PAD, CIFAR_PAD], [CIFAR_PAD, CIFAR_PAD],
                          [0, 0]], mode="CONSTANT")
  if seed is None:
    cropped = tf.image.random_crop(padded, shape)
    return tf.image.random_flip_left_right(cropped)
  seeds = tf.random.experimental.stateless_split(seed, 2)
  cropped = tf.image.stateless_random_crop(padded, shape, seed=seeds[0])
  return tf.image.stateless_random_flip_left_right(cropped, seed=seeds[1])


def imagenet_split(data_dir: str, split: str):
  """Evaluation examples of indexed ImageNet TFRecords in `data_dir`."""
  pattern = os.path.join(data_dir, IMAGENET_SPLIT_FILES[split])
  files = sorted(glob.glob(pattern))
  if not files:
    raise FileNotFoundError(f"No TFRecord files match {pattern}")
  features = {
      "image/encoded": tf.io.FixedLenFeature([], tf.string),
      "label": tf.io.FixedLenFeature([], tf.int64),
      "index": tf.io.FixedLenFeature([], tf.int64),
  }

  def parse(record):
    ex = tf.io.parse_single_example(record, features)
    return {"image": imagenet_eval_image(ex["image/encoded"]),
            "label": ex["label"], "index": ex["index"]}

  ds = tf.data.TFRecordDataset(files)
  # The number of records is unknown without reading them all.
  return ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE), None


def imagenet_eval_image(encoded):
  """Decode, centre crop (padding 32), resize to 224, mean/std normalise."""
  shape = tf.io.extract_jpeg_shape(encoded)
  height, width = shape[0], shape[1]
  crop = tf.cast(
      IMAGENET_SIZE / (IMAGENET_SIZE + IMAGENET_CROP_PADDING) *
      tf.cast(tf.minimum(height, width), tf.float32), tf.int32)
  top = (height - crop + 1) // 2
  left = (width - crop + 1) // 2
  image = tf.image.decode_and_crop_jpeg(encoded, [top, left, crop, crop],
                                        channels=3)
  image = tf.image.resize(image, [IMAGENET_SIZE, IMAGENET_SIZE],
                          method="bicubic")
  image = image / 255.0
  return (image - IMAGENET_MEAN) / IMAGENET_STD
