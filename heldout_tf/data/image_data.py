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
from typing import Optional, Tuple

import numpy as np

from heldout_tf.core import errors
from heldout_tf.core import npz

SPLITS = ("train", "test")
# The most classes a dataset may declare (ImageNet-21k has 21 843): a
# larger count is a mistake that would fail later as a huge model.
MAX_CLASSES = 100_000


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
  # Declared class names ([num_classes]; the report shows them), or None.
  class_names: Optional[Tuple[str, ...]] = None

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


def read_npz_arrays(path: str, keys, optional=(), text=()) -> dict:
  """The arrays `keys` (and those of `optional` present) of the `.npz` file
  `path`, through the kit's hardened reader (`heldout_tf.core.npz`: a regular
  file, plain numeric arrays only, never unpickled, sizes bounded by their
  headers before anything inflates); the optional `text` arrays, if
  present, hold strings. Shapes and values are checked by the caller."""
  with npz.Reader(path, DataError, os_error=errors.PathError,
                  max_total_bytes="auto") as reader:
    if not all(k in reader for k in keys):
      missing = [k for k in keys if k not in reader]
      raise DataError(f"{path}: no key {missing[0]!r} (has "
                      f"{sorted(reader.keys)}); expected {list(keys)}")
    arrays = {k: reader.read(k, kinds="biuf")
              for k in tuple(keys) + tuple(optional) if k in reader}
    arrays.update({k: reader.read(k, kinds="U") for k in text if k in reader})
    return arrays


# --------------------------------------------------------------- checking --


def _image_array(images: np.ndarray, where: str, key: str) -> np.ndarray:
  """uint8 `[n, h, w, c]` from `[n, h, w, c]`, `[n, h, w]` or flat."""
  if images.dtype != np.uint8:
    raise DataError(f"{where}: key {key!r} must be uint8 images (0..255), "
                    f"got {images.dtype}")
  if images.ndim == 3:
    images = images[..., None]
  elif images.ndim == 2:
    d = images.shape[1]
    for channels in (1, 3):
      side = math.isqrt(d // channels) if d % channels == 0 else 0
      if side and side * side * channels == d:
        return images.reshape(len(images), side, side, channels)
    raise DataError(f"{where}: key {key!r} holds flat images of {d} values: "
                    "not s*s (grey) or 3*s*s (RGB); store them as "
                    "[n, h, w, c]")
  if images.ndim != 4:
    raise DataError(f"{where}: key {key!r} must be images [n, h, w, c], "
                    f"[n, h, w] or flat [n, d], got shape "
                    f"{list(images.shape)}")
  if not all(images.shape[1:]):
    raise DataError(f"{where}: key {key!r} holds empty images (shape "
                    f"{list(images.shape)}): every image needs height, "
                    "width and channels")
  return images


def _shown(values) -> str:
  """Integers as runs: [0..9, 12] -> '0-9, 12' (at most 8 runs shown)."""
  values = sorted(set(int(v) for v in values))
  runs = []
  for v in values:
    if runs and v == runs[-1][1] + 1:
      runs[-1][1] = v
    else:
      runs.append([v, v])
  text = [f"{a}" if a == b else f"{a}-{b}" for a, b in runs[:8]]
  more = f", ... ({len(values)} in all)" if len(runs) > 8 else ""
  return ", ".join(text) + more


def _labels(labels, where: str, key: str, image_key: str, n_images: int
            ) -> np.ndarray:
  """int64 `[n]` of integer labels, or `DataError` naming `key`; values
  are compared as Python integers (a uint64 label is never shown as a
  negative one)."""
  labels = np.asarray(labels)
  if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
    raise DataError(f"{where}: key {key!r} must be integer labels [n], "
                    f"got {labels.dtype}{list(labels.shape)}")
  if len(labels) != n_images:
    raise DataError(f"{where}: key {key!r} has {len(labels)} labels for "
                    f"{n_images} images ({image_key!r})")
  if len(labels) == 0:
    raise DataError(f"{where}: key {image_key!r} holds no examples")
  low, high = int(labels.min()), int(labels.max())
  if low < 0 or high >= MAX_CLASSES:
    bad = (labels < 0) if low < 0 else (labels >= MAX_CLASSES)
    first = int(np.flatnonzero(bad)[0])
    raise DataError(f"{where}: key {key!r} has labels outside [0, "
                    f"{MAX_CLASSES}) ({int(bad.sum())} of them, first: "
                    f"example {first} = {int(labels[first])})")
  return labels.astype(np.int64)


def _declared(num_classes, class_names, where: str):
  """`(num_classes, class_names)` as declared (either may be None),
  checked against each other and `MAX_CLASSES`."""
  if num_classes is not None:
    num_classes = int(num_classes)
    if not 2 <= num_classes <= MAX_CLASSES:
      raise DataError(f"{where}: key 'num_classes' is {num_classes}: it "
                      f"must be in 2..{MAX_CLASSES}")
  if class_names is not None:
    class_names = tuple(str(c) for c in class_names)
    if num_classes is None:
      num_classes = len(class_names)
    if len(class_names) != num_classes:
      raise DataError(f"{where}: key 'class_names' names "
                      f"{len(class_names)} classes, 'num_classes' is "
                      f"{num_classes}")
  return num_classes, class_names


def from_arrays(name, where, image_key, label_key, x_train, y_train, x_test,
                y_test, num_classes=None, class_names=None,
                every_class_trained: bool = True) -> ImageData:
  """`ImageData` of the arrays, every dtype, shape and label checked.

  Images are uint8 `[n, h, w, c]`, `[n, h, w]` (one channel) or flat
  `[n, d]` (`d` = s*s grey or 3*s*s RGB); labels integers `[n]` in
  `[0, num_classes)`. Classes are the declared ones (`num_classes`, or
  one per `class_names`): then a class may have no example. Undeclared,
  they are 0..the largest label, and each must have a training example
  and each test label must be one a training example has (a gap, e.g.
  0-9 and 12, is a mistake more often than not: `DataError` naming the
  empty classes and how to declare them); `every_class_trained=False`
  skips that check (a source that has no way to declare classes, e.g. a
  tfds dataset whose labels are plain integers). Errors name `where` (a file,
  or a tfds dataset) and the key: `x_train` when `image_key` is 'x', else
  '<image_key> (train)' (likewise for labels).
  """
  x, y, lkeys = {}, {}, {}
  for split, images, labels in (("train", x_train, y_train),
                                ("test", x_test, y_test)):
    ikey = (f"{image_key}_{split}" if image_key == "x"
            else f"{image_key} ({split})")
    lkeys[split] = (f"{label_key}_{split}" if label_key == "y"
                    else f"{label_key} ({split})")
    x[split] = _image_array(np.asarray(images), where, ikey)
    y[split] = _labels(labels, where, lkeys[split], ikey, len(x[split]))
  if x["train"].shape[1:] != x["test"].shape[1:]:
    raise DataError(
        f"{where}: train images are {list(x['train'].shape[1:])} but test "
        f"images {list(x['test'].shape[1:])} (keys {image_key}_train, "
        f"{image_key}_test)")
  num_classes, class_names = _declared(num_classes, class_names, where)
  declared = num_classes is not None
  if not declared and every_class_trained:
    trained = np.unique(y["train"])
    empty = np.setdiff1d(np.arange(trained[-1] + 1), trained)
    if len(empty):
      raise DataError(
          f"{where}: class{'es' if len(empty) > 1 else ''} "
          f"{_shown(empty)} ha{'ve' if len(empty) > 1 else 's'} no training "
          f"example (key "
          f"{lkeys['train']!r} holds {_shown(trained)}); to train a "
          f"{trained[-1] + 1}-class model anyway declare the classes (an "
          "npz file: a scalar 'num_classes' or 'class_names')")
    unseen = np.setdiff1d(np.unique(y["test"]), trained)
    if len(unseen):
      raise DataError(
          f"{where}: key {lkeys['test']!r} has labels no training example "
          f"has: {_shown(unseen)} (training labels: {_shown(trained)}); "
          "declare the classes (an npz file: a scalar 'num_classes' or "
          "'class_names') to keep them")
  if not declared:
    num_classes = int(max(y["train"].max(), y["test"].max())) + 1
  for split in SPLITS:
    bad = y[split] >= num_classes
    if bad.any():
      first = int(np.flatnonzero(bad)[0])
      raise DataError(
          f"{where}: key {lkeys[split]!r} has labels outside [0, "
          f"{num_classes}) ({int(bad.sum())} of them, first: example "
          f"{first} = {int(y[split][first])})")
  if num_classes < 2:
    raise DataError(f"{where}: labels name {num_classes} class; need >= 2")
  return ImageData(name, f"{where} ({len(y['train'])} train / "
                   f"{len(y['test'])} test)", x["train"], y["train"],
                   x["test"], y["test"], int(num_classes), class_names)
