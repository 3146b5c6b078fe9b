"""Input pipelines: canonical indices, scaling, augmentation, ImageNet."""

import numpy as np
import pytest
import tensorflow as tf

from heldout_tf import data
from heldout_tf import errors
from heldout_tf import synthetic


def test_cifar_examples_in_canonical_order(cifar10):
  data_dir, arrays = cifar10
  ds, n = data.load("cifar10:3.0.2", data_dir).split("train")
  examples = list(ds.as_numpy_iterator())
  assert n == len(examples) == len(arrays["train"]["label"])
  for i, ex in enumerate(examples):
    assert ex["index"] == i
    np.testing.assert_array_equal(ex["image"],
                                  arrays["train"]["image"][i] / np.float32(255))
    assert ex["label"] == arrays["train"]["label"][i]


def test_missing_dataset_is_an_error_not_a_download(tmp_path):
  with pytest.raises(FileNotFoundError, match="not prepared in"):
    data.load("cifar100:3.0.2", str(tmp_path)).split("test")


def test_cifar_augment_pads_crops_and_flips():
  image = tf.reshape(tf.range(32 * 32 * 3, dtype=tf.float32), (32, 32, 3))
  seen = set()
  for s in range(20):
    out = data.cifar_augment(image, seed=tf.constant([s, 0]))
    assert out.shape == (32, 32, 3)
    np.testing.assert_array_equal(
        out, data.cifar_augment(image, seed=tf.constant([s, 0])))
    seen.add(out.numpy().tobytes())
  assert len(seen) > 10
  # Every output is a window of the zero-padded (possibly flipped) image.
  padded = np.pad(image.numpy(), [(4, 4), (4, 4), (0, 0)])
  out = data.cifar_augment(image, seed=tf.constant([3, 1])).numpy()
  windows = [p[y:y + 32, x:x + 32] for p in (padded, padded[:, ::-1])
             for y in range(9) for x in range(9)]
  assert any(np.array_equal(out, w) for w in windows)


def test_imagenet_indexed_records(tmp_path):
  synthetic.write_imagenet_records(
      str(tmp_path / "validation-00000-of-00001"), labels=[0, 1, 2],
      indices=[100, 101, 102])
  ds, n = data.load("imagenet", str(tmp_path)).split("test")
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
    data.load("imagenet")
  with pytest.raises(FileNotFoundError, match="No TFRecord files match"):
    data.load("imagenet", str(tmp_path)).split("train")


def test_data_errors_derive_from_the_kit_error_base(tmp_path):
  with pytest.raises(data.DatasetNotFoundError) as raised:
    data.load("cifar100:3.0.2", str(tmp_path)).split("test")
  assert isinstance(raised.value, errors.HeldoutError)
  bad_map = tmp_path / "map.csv"
  bad_map.write_text("validation,a.JPEG,first\n")
  with pytest.raises(data.DataError, match="map.csv:1: index must be"):
    data.read_index_map(str(bad_map))
  with pytest.raises(errors.UsageError, match="split must be"):
    data.load("cifar10:3.0.2", str(tmp_path)).split("validation")
