"""Image-classification data as the kit holds it: `ImageData`, its errors
and checks.

  data = sources.load("cifar10")     # any source (heldout_tf.data.sources)
  data = image_data.first_examples(data, train_size=1000)
  image_data.check_ratio(data, 0.7)
  x = image_data.as_float(data.train_images)  # float32, uint8 / 255

Every source becomes one `ImageData`: uint8 images `[n, h, w, c]` and int64
labels in `[0, num_classes)`, train and test, in the dataset's own order.
An example's index (in `aux_arrays.npz`: `index_*`, `subsample_idx`) is its
position in that order; for tfds that is `tfds.load(..., shuffle_files=
False)` order, the order the released CIFAR runs use (`heldout_tf.data.
order` bridges it to the original CIFAR order).

`from_arrays` checks arrays from any source (dtype, shape, labels) and
`read_npz_arrays` reads an untrusted `.npz` file. Every module of the data
stage says what is wrong with data by the two errors defined here: bad data
is a `DataError` naming the file and key (or line), a dataset that is not
where it was looked for a `DatasetNotFoundError`.
"""

import dataclasses
import math

import numpy as np

from heldout_tf.core import errors
from heldout_tf.core import npz

SPLITS = ("train", "test")


class DataError(errors.HeldoutError, ValueError):
  """Bad data: wrong dtype or shape, labels out of range, too few examples,
  an undecodable image, a malformed ImageNet index map or tfds file (the
  message names the file and key or line)."""


class DatasetNotFoundError(errors.HeldoutError, FileNotFoundError):
  """A dataset (a prepared tfds dataset or split, TFRecord files, an
  ImageNet index map) is not where it was looked for."""


@dataclasses.dataclass
class ImageData:
  """Train and test images with labels, in the dataset's own order."""
  name: str  # e.g. 'cifar10', 'digits', 'my_data'
  description: str
  train_images: np.ndarray  # uint8 [n_train, h, w, c]
  train_labels: np.ndarray  # int64 [n_train], in [0, num_classes)
  test_images: np.ndarray  # uint8 [n_test, h, w, c]
  test_labels: np.ndarray  # int64 [n_test]
  num_classes: int

  @property
  def image_shape(self):
    """`(h, w, c)` of one image."""
    return tuple(int(d) for d in self.train_images.shape[1:])

  def images(self, split: str) -> np.ndarray:
    """uint8 `[n, h, w, c]` of `split` ('train' or 'test')."""
    return self.train_images if split == "train" else self.test_images

  def labels(self, split: str) -> np.ndarray:
    """int64 `[n]` of `split` ('train' or 'test')."""
    return self.train_labels if split == "train" else self.test_labels

  def fingerprint(self) -> str:
    """A short hash of every array: same data or not."""
    import hashlib  # pylint: disable=g-import-not-at-top
    digest = hashlib.sha256()
    for array in (self.train_images, self.train_labels, self.test_images,
                  self.test_labels):
      digest.update(str(array.shape).encode())
      digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


def as_float(images) -> np.ndarray:
  """uint8 images -> float32 in [0, 1] (`uint8 / 255.0`, as released)."""
  return np.asarray(images, np.float32) / np.float32(255.0)


def check_ratio(data: ImageData, ratio: float, where: str = "--ratios"):
  """Raises `DataError` when a run at `ratio` would train on no example or
  hold none out (for ratio < 1) of `data`'s training set."""
  n = len(data.train_labels)
  size = max(1, int(round(ratio * n))) if n else 0
  if n == 0 or (ratio < 1.0 and size >= n) or (ratio * n < 0.5):
    raise DataError(
        f"{data.name}: {n} training examples are too few for ratio {ratio} "
        f"({where}): a run would train on {size} and hold out {n - size}; "
        "it needs at least one of each")


def first_examples(data: ImageData, train_size: int = 0,
                   test_size: int = 0) -> ImageData:
  """`data` cut to its first `train_size` train / `test_size` test examples
  (0: all of that split); `data` itself when both are 0. (`data` may be any
  dataclass with ImageData's split fields, `name` and `description`.)

  Raises:
    errors.UsageError: a size is larger than its split (names --train_size
      or --test_size).
  """
  sizes = {"train": len(data.train_labels), "test": len(data.test_labels)}
  for split, size in (("train", train_size), ("test", test_size)):
    if size < 0:
      raise errors.UsageError(f"--{split}_size must be >= 0, got {size}")
    if size > sizes[split]:
      raise errors.UsageError(
          f"--{split}_size {size} is larger than the {sizes[split]} "
          f"{split} examples of {data.name}")
  if not (train_size or test_size):
    return data
  n_train, n_test = train_size or sizes["train"], test_size or sizes["test"]
  return dataclasses.replace(
      data, train_images=data.train_images[:n_train],
      train_labels=data.train_labels[:n_train],
      test_images=data.test_images[:n_test],
      test_labels=data.test_labels[:n_test],
      description=data.description +
      f", first {n_train} train / {n_test} test examples")


def read_npz_arrays(path: str, keys, optional=()) -> dict:
  """The arrays `keys` (and those of `optional` present) of the `.npz` file
  `path`, through the kit's hardened reader (`heldout_tf.core.npz`: a regular
  file, plain numeric arrays only, never unpickled, sizes bounded by their
  headers before anything inflates). Shapes and values are checked by the
  caller."""
  with npz.Reader(path, DataError, os_error=errors.PathError,
                  max_total_bytes="auto") as reader:
    if not all(k in reader for k in keys):
      missing = [k for k in keys if k not in reader]
      raise DataError(f"{path}: no key {missing[0]!r} (has "
                      f"{sorted(reader.keys)}); expected {list(keys)}")
    return {k: reader.read(k, kinds="biuf")
            for k in tuple(keys) + tuple(optional) if k in reader}


# --------------------------------------------------------------- checking --


def _image_array(images: np.ndarray, where: str, key: str) -> np.ndarray:
  """uint8 `[n, h, w, c]` from `[n, h, w, c]`, `[n, h, w]` or flat."""
  if images.dtype != np.uint8:
    raise DataError(f"{where}: key {key!r} must be uint8 images (0..255), "
                    f"got {images.dtype}")
  if images.ndim == 3:
    return images[..., None]
  if images.ndim == 2:
    d = images.shape[1]
    for channels in (1, 3):
      side = math.isqrt(d // channels) if d % channels == 0 else 0
      if side and side * side * channels == d:
        return images.reshape(len(images), side, side, channels)
    raise DataError(f"{where}: key {key!r} holds flat images of {d} values: "
                    "not s*s (grey) or 3*s*s (RGB); store them as "
                    "[n, h, w, c]")
  if images.ndim != 4 or images.shape[-1] < 1:
    raise DataError(f"{where}: key {key!r} must be images [n, h, w, c], "
                    f"[n, h, w] or flat [n, d], got shape "
                    f"{list(images.shape)}")
  return images


def from_arrays(name, where, image_key, label_key, x_train, y_train, x_test,
                y_test, num_classes=None) -> ImageData:
  """`ImageData` of the arrays, every dtype, shape and label checked.

  Images are uint8 `[n, h, w, c]`, `[n, h, w]` (one channel) or flat
  `[n, d]` (`d` = s*s grey or 3*s*s RGB); labels integers `[n]` in
  `[0, num_classes)` (`num_classes` None: the largest label + 1). Errors
  name `where` (a file, or a tfds dataset) and the key: `x_train` when
  `image_key` is 'x', else '<image_key> (train)' (likewise for labels).
  """
  x, y = {}, {}
  for split, images, labels in (("train", x_train, y_train),
                                ("test", x_test, y_test)):
    ikey = (f"{image_key}_{split}" if image_key == "x"
            else f"{image_key} ({split})")
    lkey = (f"{label_key}_{split}" if label_key == "y"
            else f"{label_key} ({split})")
    x[split] = _image_array(np.asarray(images), where, ikey)
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
      raise DataError(f"{where}: key {lkey!r} must be integer labels [n], "
                      f"got {labels.dtype}{list(labels.shape)}")
    if len(labels) != len(x[split]):
      raise DataError(f"{where}: key {lkey!r} has {len(labels)} labels for "
                      f"{len(x[split])} images ({ikey!r})")
    if len(labels) == 0:
      raise DataError(f"{where}: key {ikey!r} holds no examples")
    y[split] = labels.astype(np.int64)
  if x["train"].shape[1:] != x["test"].shape[1:]:
    raise DataError(
        f"{where}: train images are {list(x['train'].shape[1:])} but test "
        f"images {list(x['test'].shape[1:])} (keys {image_key}_train, "
        f"{image_key}_test)")
  largest = int(max(y["train"].max(), y["test"].max()))
  if num_classes is None:
    num_classes = largest + 1
  for split in SPLITS:
    bad = (y[split] < 0) | (y[split] >= num_classes)
    if bad.any():
      first = int(np.flatnonzero(bad)[0])
      lkey = f"{label_key}_{split}" if label_key == "y" else label_key
      raise DataError(
          f"{where}: key {lkey!r} has labels outside [0, {num_classes}) "
          f"({int(bad.sum())} of them, first: example {first} = "
          f"{int(y[split][first])})")
  if num_classes < 2:
    raise DataError(f"{where}: labels name {num_classes} class; need >= 2")
  return ImageData(name, f"{where} ({len(y['train'])} train / "
                   f"{len(y['test'])} test)", x["train"], y["train"],
                   x["test"], y["test"], int(num_classes))
