"""Every source a new collection trains on, loaded as one `ImageData`.

  data = sources.load("cifar10", data_dir="~/tensorflow_datasets")
  data = sources.load("npz:my_data.npz")
  data = sources.load("mnist")    # tfds MNIST if prepared, else the
                                  # embedded digits (heldout_tf.data.mnist)

Sources (a `--dataset` value):
- a tfds name (`cifar10`, `cifar100:3.0.2`, any dataset with `image` and
  `label` features and `train` / `test` splits), read from `data_dir`
  through `heldout_tf.data.tfds`, never downloaded unless `download=True`;
- `npz:FILE`: arrays `x_train`, `y_train`, `x_test`, `y_test`; images uint8
  `[n, h, w, c]`, `[n, h, w]` (one channel) or flat `[n, d]` with `d` =
  s*s (one channel) or 3*s*s (RGB); labels integers `[n]`; optionally a
  scalar `num_classes` and / or `class_names` (strings `[num_classes]`)
  declaring the classes (undeclared: 0..the largest label, each with a
  training example);
- `mnist`: `heldout_tf.data.mnist.load('auto')`: tfds MNIST when prepared in
  `data_dir` (or `download=True`), else the embedded offline digits;
- `digits`: `heldout_tf.data.mnist.load('digits')`, the embedded offline
  digits (4 000 train / 1 000 test), whatever `data_dir`.

Every array is checked (`image_data.from_arrays`): bad data is an
`image_data.DataError` naming the file and key, a tfds dataset that is not
prepared an `image_data.DatasetNotFoundError`.
"""

import os
from typing import Optional

import numpy as np

from heldout_tf.core import errors
from heldout_tf.data import image_data
from heldout_tf.data import mnist
from heldout_tf.data import tfds as tfds_lib

NPZ_PREFIX = "npz:"
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
# Sources `heldout_tf.data.mnist` loads, and the dataset it is asked for.
MNIST_SOURCES = {"mnist": "auto", "digits": "digits"}
MAX_NAME_LENGTH = 100  # Characters of one class name.


def load(source: str, data_dir: Optional[str] = None,
         download: bool = False) -> image_data.ImageData:
  """Loads `source`: 'mnist', 'digits', 'npz:FILE' or a tfds dataset name."""
  if not source:
    raise errors.UsageError("--dataset must not be empty")
  if source.startswith(NPZ_PREFIX):
    return load_npz(npz_file(source))
  if source in MNIST_SOURCES:
    return mnist.load(MNIST_SOURCES[source], data_dir, download)
  return load_tfds(source, data_dir, download)


def npz_file(source: str) -> str:
  """The FILE of an `npz:FILE` source ('~' expanded); `errors.UsageError`
  naming --dataset when it names no file."""
  path = source[len(NPZ_PREFIX):]
  if not path.strip():
    raise errors.UsageError(
        f"--dataset {source!r} names no file: expected npz:FILE, a .npz "
        "file holding x_train, y_train, x_test and y_test")
  return os.path.expanduser(path)


def load_tfds(name: str, data_dir: Optional[str] = None,
              download: bool = False) -> image_data.ImageData:
  """A tfds image-classification dataset ('train' and 'test' splits, features
  'image' and 'label'), in `shuffle_files=False` order."""
  arrays = {}
  for split in image_data.SPLITS:
    loaded = tfds_lib.load_split(name, split, data_dir, download)
    for key in ("image", "label"):
      if key not in loaded:
        raise image_data.DataError(
            f"tfds dataset {name!r}: no {key!r} feature (has "
            f"{sorted(loaded)}); an image classification dataset is needed")
    arrays[split] = (loaded["image"], loaded["label"])
  names = tfds_lib.class_names(name, data_dir)
  where = data_dir or tfds_lib.DEFAULT_DATA_DIR_TEXT
  train, test = arrays["train"], arrays["test"]
  data = image_data.from_arrays(
      name.split(":")[0], f"tfds {name} in {where}", "image", "label",
      train[0], train[1], test[0], test[1], None, names or None,
      every_class_trained=False)  # Its label feature is its declaration.
  data.description = (f"tfds {name} ({len(data.train_labels)} train / "
                      f"{len(data.test_labels)} test)")
  return data


def load_npz(path: str) -> image_data.ImageData:
  """Arrays `x_train`, `y_train`, `x_test`, `y_test` (and optionally a
  scalar `num_classes` and strings `class_names`) of the `.npz` file
  `path`."""
  path = npz_file(NPZ_PREFIX + path)
  arrays = image_data.read_npz_arrays(path, NPZ_KEYS,
                                      optional=("num_classes",),
                                      text=("class_names",))
  num_classes = arrays.get("num_classes")
  if num_classes is not None:
    if num_classes.shape != () or not np.issubdtype(num_classes.dtype,
                                                    np.integer):
      raise image_data.DataError(
          f"{path}: key 'num_classes' must be an integer scalar, got "
          f"{num_classes.dtype}{list(num_classes.shape)}")
    num_classes = int(num_classes)
  names = arrays.get("class_names")
  if names is not None and (names.ndim != 1 or not all(
      0 < len(str(c)) <= MAX_NAME_LENGTH for c in names)):
    raise image_data.DataError(
        f"{path}: key 'class_names' must be names [num_classes], each 1 to "
        f"{MAX_NAME_LENGTH} characters, got {names.dtype}{list(names.shape)}")
  name = os.path.splitext(os.path.basename(path))[0]
  return image_data.from_arrays(
      name, path, "x", "y", arrays["x_train"], arrays["y_train"],
      arrays["x_test"], arrays["y_test"], num_classes,
      None if names is None else [str(c) for c in names])
