"""Input pipelines exactly as the released runs were evaluated.

  dataset = pipelines.load("cifar10:3.0.2", data_dir)   # or 'imagenet'
  ds, n = dataset.split("test")    # {'image', 'label', 'index'} examples
  dataset = pipelines.in_memory_dataset(data.name, data.images, data.labels)

Every example carries its `index`: its position in the dataset's canonical
order, the same index `aux_arrays.npz` uses.

- CIFAR-10/100: `tfds.load(name, batch_size=-1, shuffle_files=False)`
  (`heldout_tf.data.tfds.load_split`), images `uint8 / 255.0`, no mean/std
  normalisation. `heldout_tf.data.order` maps the tfds order to the
  original CIFAR order.
- ImageNet: indexed TFRecords, or a prepared tfds `imagenet2012` plus an
  index map (`heldout_tf.data.imagenet`).
- Arrays in memory (a new collection's `ImageData`, synthetic arrays):
  `array_split`, the same examples as CIFAR's.

Errors are `heldout_tf.data.image_data.DatasetNotFoundError` (a
FileNotFoundError: nothing prepared where it was looked for),
`image_data.DataError` (a ValueError: bad data or index map, naming file
and line) and `errors.UsageError` (arguments that do not fit together).
"""

import dataclasses
from typing import Callable, Optional

import numpy as np
import tensorflow as tf

from heldout_tf.core import errors
from heldout_tf.data import image_data
from heldout_tf.data import imagenet
from heldout_tf.data import tfds as tfds_lib


@dataclasses.dataclass
class Dataset:
  """A dataset whose splits yield `{'image', 'label', 'index'}` examples."""
  name: str
  make_split: Callable  # split -> (unbatched tf.data.Dataset, n or None)
  _splits: dict = dataclasses.field(default_factory=dict, repr=False)

  def split(self, split: str):
    """Returns `(tf.data.Dataset of examples, number of examples or None)`.

    Each split is opened once and reused (CIFAR splits live in memory).
    """
    if split not in image_data.SPLITS:
      raise errors.UsageError(
          f"split must be 'train' or 'test', got {split!r}")
    if split not in self._splits:
      self._splits[split] = self.make_split(split)
    return self._splits[split]

  def batches(self, split: str, batch_size: int):
    """`(batched examples, number of examples or None)` of `split`."""
    ds, n = self.split(split)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE), n


def load(dataset: str, data_dir: Optional[str] = None,
         download: bool = False, index_map: Optional[str] = None) -> Dataset:
  """Opens `dataset` ('cifar10:3.0.2', 'cifar100:3.0.2' or 'imagenet').

  For CIFAR, `data_dir` is the tfds data directory (tfds' default when None);
  with `download=False` a missing dataset is an error, never a download.
  For ImageNet, `data_dir` and `index_map` are as in
  `heldout_tf.data.imagenet.split_reader`.
  """
  if dataset == "imagenet":
    return Dataset(dataset, imagenet.split_reader(data_dir, index_map))
  if index_map:
    raise errors.UsageError(
        f"An index map applies only to ImageNet, not {dataset}.")
  return Dataset(dataset,
                 lambda split: cifar_split(dataset, split, data_dir, download))


def cifar_split(name: str, split: str, data_dir: Optional[str] = None,
                download: bool = False):
  """Evaluation examples of a CIFAR split, with their canonical index:
  `array_split` of the whole tfds split."""
  arrays = tfds_lib.load_split(name, split, data_dir, download)
  return array_split(arrays["image"], arrays["label"])


def array_split(images, labels):
  """`(examples, n)`: evaluation examples of one split held in memory, as
  the released CIFAR pipeline makes them.

  `images` are uint8 `[n, h, w, c]` and become float32 `uint8 / 255.0` (no
  mean/std normalisation), `labels` integers `[n]` become int64, and each
  example's `index` is its position, 0..n-1.

  Raises:
    image_data.DataError: images are not uint8, or labels not one integer
      per image.
  """
  images, labels = check_arrays(images, labels)
  n = len(labels)
  ds = tf.data.Dataset.from_tensor_slices({
      "image": images,
      "label": labels,
      "index": np.arange(n, dtype=np.int64),
  }).map(lambda ex: dict(ex, image=scaled(ex["image"])))
  return ds, n


def scaled(images):
  """float32 `uint8 / 255.0`: the released CIFAR pipeline's scaling."""
  return tf.cast(images, tf.float32) / 255.0


def check_arrays(images, labels):
  """`(images, int64 labels)` of one split held in memory, checked:
  `image_data.DataError` unless the images are uint8 and the labels one
  integer per image."""
  images, labels = np.asarray(images), np.asarray(labels)
  if images.dtype != np.uint8:
    raise image_data.DataError(
        f"evaluation images must be uint8 (scaled here by 1/255), got "
        f"{images.dtype}")
  if (labels.shape != images.shape[:1] or
      not np.issubdtype(labels.dtype, np.integer)):
    raise image_data.DataError(
        f"evaluation labels must be integers [{len(images)}], one per "
        f"image, got {labels.dtype}{list(labels.shape)}")
  return images, labels.astype(np.int64)


def in_memory_dataset(name: str, images: Callable, labels: Callable
                      ) -> Dataset:
  """A `Dataset` of arrays in memory, through `array_split`: `images(split)`
  gives a split's uint8 images `[n, h, w, c]`, `labels(split)` its labels
  `[n]` (e.g. an `ImageData`'s `images` and `labels` methods)."""
  return Dataset(name, lambda split: array_split(images(split), labels(split)))
