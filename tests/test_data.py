"""Evaluation pipelines: canonical indices, scaling, ImageNet records, the
tfds <-> original CIFAR order."""

import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from heldout_tf.core import errors
from heldout_tf.data import image_data
from heldout_tf.data import imagenet
from heldout_tf.data import order as order_lib
from heldout_tf.data import pipelines
from heldout_tf.data import tfds as tfds_lib
from heldout_tf import synthetic


def test_cifar_examples_in_canonical_order(cifar10):
  data_dir, arrays = cifar10
  ds, n = pipelines.load("cifar10:3.0.2", data_dir).split("train")
  examples = list(ds.as_numpy_iterator())
  assert n == len(examples) == len(arrays["train"]["label"])
  for i, ex in enumerate(examples):
    assert ex["index"] == i
    np.testing.assert_array_equal(ex["image"],
                                  arrays["train"]["image"][i] / np.float32(255))
    assert ex["label"] == arrays["train"]["label"][i]


def test_missing_dataset_is_an_error_not_a_download(tmp_path):
  with pytest.raises(FileNotFoundError, match="not prepared in"):
    pipelines.load("cifar100:3.0.2", str(tmp_path)).split("test")


def test_arrays_in_memory_must_be_uint8_images_with_a_label_each():
  images = np.zeros((3, 2, 2, 1), np.uint8)
  ds, n = pipelines.array_split(images + 51, np.array([2, 0, 1], np.int32))
  examples = list(ds.as_numpy_iterator())
  assert n == 3 and [ex["index"] for ex in examples] == [0, 1, 2]
  assert [ex["label"] for ex in examples] == [2, 0, 1]
  assert examples[0]["label"].dtype == np.int64
  np.testing.assert_array_equal(examples[1]["image"],
                                np.full((2, 2, 1), 0.2, np.float32))
  with pytest.raises(image_data.DataError, match="must be uint8 .* float32"):
    pipelines.array_split(images.astype(np.float32), [0, 1, 2])
  with pytest.raises(image_data.DataError, match=r"integers \[3\].*\[2\]"):
    pipelines.array_split(images, [0, 1])
  with pytest.raises(image_data.DataError, match="float64"):
    pipelines.array_split(images, [0.0, 1.0, 2.0])


def test_tfds_reader_names_what_is_missing(cifar10, tmp_path):
  data_dir, arrays = cifar10
  loaded = tfds_lib.load_split("cifar10:3.0.2", "test", data_dir)
  np.testing.assert_array_equal(loaded["image"], arrays["test"]["image"])
  with pytest.raises(image_data.DatasetNotFoundError,
                     match="'cifar10:3.0.2' has no split 'validation' in "):
    tfds_lib.load_split("cifar10:3.0.2", "validation", data_dir)
  with pytest.raises(image_data.DatasetNotFoundError,
                     match="'cifar10' split 'validation' is not prepared in "
                     ".*: pass --data_dir pointing at a prepared tfds"):
    tfds_lib.builder("cifar10", data_dir, split="validation")
  assert tfds_lib.builder("cifar10", data_dir, split="test").name == "cifar10"
  with pytest.raises(image_data.DatasetNotFoundError,
                     match="'cifar10' is not prepared in .*: do this"):
    tfds_lib.builder("cifar10", str(tmp_path), remedy="do this")
  assert tfds_lib.class_names("cifar10", data_dir) == [
      str(c) for c in range(10)]


def test_imagenet_indexed_records(tmp_path):
  synthetic.write_imagenet_records(
      str(tmp_path / "validation-00000-of-00001"), labels=[0, 1, 2],
      indices=[100, 101, 102])
  ds, n = pipelines.load("imagenet", str(tmp_path)).split("test")
  assert n is None
  examples = list(ds.as_numpy_iterator())
  assert [ex["index"] for ex in examples] == [100, 101, 102]
  assert [ex["label"] for ex in examples] == [0, 1, 2]
  image = examples[0]["image"]
  assert image.shape == (224, 224, 3)
  # Normalised by the ImageNet mean/std: uniform noise lands around 0.
  assert -2.5 < image.min() < -1.0 and 2.0 < image.max() < 3.0


def test_imagenet_needs_data_dir(tmp_path):
  with pytest.raises(ValueError, match="ImageNet needs --data_dir"):
    pipelines.load("imagenet")
  with pytest.raises(FileNotFoundError, match="No TFRecord files match"):
    pipelines.load("imagenet", str(tmp_path)).split("train")


def test_data_errors_derive_from_the_kit_error_base(tmp_path):
  with pytest.raises(image_data.DatasetNotFoundError) as raised:
    pipelines.load("cifar100:3.0.2", str(tmp_path)).split("test")
  assert isinstance(raised.value, errors.HeldoutError)
  bad_map = tmp_path / "map.csv"
  bad_map.write_text("validation,a.JPEG,first\n")
  with pytest.raises(image_data.DataError, match="map.csv:1: index must be"):
    imagenet.read_index_map(str(bad_map))
  with pytest.raises(errors.UsageError, match="split must be"):
    pipelines.load("cifar10:3.0.2", str(tmp_path)).split("validation")


def write_cifar_with_ids(data_dir, ids, seed=0, name="cifar10"):
  """A tfds `<name>:3.0.2` whose train examples carry the given `id`s."""
  rng = np.random.default_rng(seed)
  n = len(ids)
  labels = rng.integers(0, 10, n).astype(np.int64)
  split = {"id": np.array(ids),
           "image": rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
           "label": labels}
  features = tfds.features.FeaturesDict({
      "id": tfds.features.Text(),
      "image": tfds.features.Image(shape=(32, 32, 3)),
      "label": tfds.features.ClassLabel(num_classes=10)})
  tfds.dataset_builders.store_as_tfds_dataset(
      name=name, version="3.0.2", features=features, data_dir=str(data_dir),
      split_datasets={"train": tf.data.Dataset.from_tensor_slices(split)},
      disable_shuffling=True)
  return labels



# ------------------------------------------------------ tfds <-> original


N_TRAIN = 48


@pytest.fixture(scope="module")
def shuffled_cifar(tmp_path_factory):
  """`(data_dir, original, labels)`: tfds example k is original example
  original[k]."""
  data_dir = tmp_path_factory.mktemp("tfds")
  original = np.random.default_rng(7).permutation(N_TRAIN)
  labels = write_cifar_with_ids(data_dir, [f"train_{i}" for i in original])
  return str(data_dir), original, labels



def test_order_mapping_from_shuffled_ids_is_cached(shuffled_cifar,
                                                   monkeypatch):
  data_dir, original, _ = shuffled_cifar
  order = order_lib.tfds_original_order("cifar10:3.0.2", "train", data_dir)
  np.testing.assert_array_equal(order, original)
  cache = os.path.join(data_dir, "heldout_tf_cache",
                       "cifar10-3.0.2-train-order.npy")
  np.testing.assert_array_equal(np.load(cache), original)

  def no_reading(*args, **kwargs):
    raise AssertionError("read the dataset despite the cache")
  monkeypatch.setattr(tfds.core.DatasetBuilder, "as_dataset", no_reading)
  np.testing.assert_array_equal(
      order_lib.tfds_original_order("cifar10", "train", data_dir), original)


def test_stale_cache_is_rebuilt(shuffled_cifar, tmp_path):
  data_dir, original, _ = shuffled_cifar
  cache = os.path.join(data_dir, "heldout_tf_cache",
                       "cifar10-3.0.2-train-order.npy")
  order_lib.tfds_original_order("cifar10", "train", data_dir)
  np.save(cache, np.arange(N_TRAIN))  # Wrong but well formed... and newer,
  info = os.path.join(data_dir, "cifar10", "3.0.2", "dataset_info.json")
  os.utime(cache, (0, 0))  # ... so make it older than the dataset.
  np.testing.assert_array_equal(
      order_lib.tfds_original_order("cifar10", "train", data_dir), original)
  assert os.path.getmtime(cache) >= os.path.getmtime(info)


def test_unprepared_dataset_is_a_clear_error(tmp_path):
  with pytest.raises(image_data.DatasetNotFoundError,
                     match="'cifar100' split 'train' is not prepared in"):
    order_lib.tfds_original_order("cifar100", "train", str(tmp_path))
  assert not os.path.exists(tmp_path / "downloads")  # Nothing fetched.


def test_bad_ids_are_an_error(tmp_path):
  write_cifar_with_ids(tmp_path, ["train_0", "train_1", "train_1"])
  with pytest.raises(image_data.DataError, match="not train_0 .. "
                     "train_2"):
    order_lib.tfds_original_order("cifar10", "train", str(tmp_path))
  with pytest.raises(image_data.DataError, match="id 'test_3'"):
    order_lib.parse_ids([b"train_1", b"test_3"], "train", "here")
