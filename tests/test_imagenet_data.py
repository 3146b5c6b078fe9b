"""ImageNet from a prepared tfds imagenet2012 directory plus an index map."""

import io
import os
import shutil

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from heldout_tf.data import imagenet as imagenet_lib
from heldout_tf.data import pipelines
from heldout_tf import synthetic

# Stored order differs from index order; the map gives each file its index.
SPLITS = {
    "train": (["n01440764_3.JPEG", "n01440764_1.JPEG", "n01443537_7.JPEG"],
              [0, 0, 1], [2, 0, 1]),
    "validation": (["ILSVRC2012_val_00000004.JPEG",
                    "ILSVRC2012_val_00000001.JPEG",
                    "ILSVRC2012_val_00000003.JPEG",
                    "ILSVRC2012_val_00000002.JPEG"],
                   [17, 999, 5, 17], [3, 0, 2, 1]),
}


def write_map(path, lines):
  with open(path, "w", encoding="utf-8") as f:
    f.write("".join(line + "\n" for line in lines))
  return str(path)


def map_lines(splits=None):
  return [f"{split},{name},{index}"
          for split, (names, _, indices) in (splits or SPLITS).items()
          for name, index in zip(names, indices)]


@pytest.fixture(scope="module")
def imagenet(tmp_path_factory):
  """`(tfds data_dir, index map, TFRecord dir)` holding the same images."""
  root = tmp_path_factory.mktemp("imagenet")
  tfds_dir, records_dir = str(root / "tfds"), str(root / "records")
  os.makedirs(records_dir)
  tfds_splits = {}
  for seed, (split, (names, labels, indices)) in enumerate(SPLITS.items()):
    # Odd and portrait sizes exercise the crop window.
    images = synthetic.random_jpegs(len(names), seed=seed,
                                           shape=(257, 193, 3))
    tfds_splits[split] = (images, labels, names)
    synthetic.write_imagenet_records(
        os.path.join(records_dir, f"{split}-00000-of-00001"), labels,
        indices, images=images)
  synthetic.write_imagenet_tfds(tfds_dir, tfds_splits)
  index_map = write_map(root / "index.csv",
                        ["split,file_name,index"] + map_lines())
  return tfds_dir, index_map, records_dir


@pytest.fixture(autouse=True)
def no_downloads(monkeypatch):
  """Reading a prepared dataset must never try to download or prepare it."""

  def refuse(*args, **kwargs):
    raise AssertionError(f"tfds download attempted: {args} {kwargs}")

  monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare",
                      refuse)
  monkeypatch.setattr(tfds.download.DownloadManager, "download", refuse)


def examples(dataset, split):
  ds, n = dataset.split(split)
  return list(ds.as_numpy_iterator()), n


@pytest.mark.parametrize("split,tfds_split", [("train", "train"),
                                              ("test", "validation")])
def test_tfds_examples_match_indexed_records(imagenet, split, tfds_split):
  tfds_dir, index_map, records_dir = imagenet
  from_tfds, n = examples(pipelines.load("imagenet", tfds_dir, index_map=index_map),
                          split)
  from_records, _ = examples(pipelines.load("imagenet", records_dir), split)
  _, labels, indices = SPLITS[tfds_split]
  assert n == len(from_tfds) == len(labels)
  # Stored (file) order, each example with its mapped index and its label.
  assert [ex["index"] for ex in from_tfds] == indices
  assert [ex["label"] for ex in from_tfds] == labels
  for mine, theirs in zip(from_tfds, from_records):
    assert mine["index"] == theirs["index"]
    assert mine["image"].shape == (224, 224, 3)
    np.testing.assert_array_equal(mine["image"], theirs["image"])


@pytest.mark.parametrize("where", ["", "imagenet2012", "imagenet2012/5.1.0"])
def test_finds_the_tfds_version_directory(imagenet, where):
  tfds_dir = imagenet[0]
  expected = os.path.join(tfds_dir, "imagenet2012", "5.1.0")
  assert imagenet_lib.find_tfds_dir(os.path.join(tfds_dir, where)) == expected


def test_highest_prepared_version_is_used(imagenet, tmp_path):
  versions = tmp_path / "imagenet2012"
  shutil.copytree(os.path.join(imagenet[0], "imagenet2012", "5.1.0"),
                  versions / "5.0.0")
  shutil.copytree(versions / "5.0.0", versions / "10.0.0")
  os.remove(versions / "10.0.0" / "dataset_info.json")  # Not prepared.
  os.makedirs(versions / "incomplete.X1Y2_5.1.0")
  assert imagenet_lib.find_tfds_dir(str(tmp_path)) == str(versions / "5.0.0")


def test_other_tfds_datasets_are_not_imagenet(cifar10, tmp_path):
  assert imagenet_lib.find_tfds_dir(cifar10[0]) is None
  assert imagenet_lib.find_tfds_dir(
      os.path.join(cifar10[0], "cifar10", "3.0.2")) is None
  assert imagenet_lib.find_tfds_dir(str(tmp_path / "absent")) is None


def test_tfds_without_index_map_is_an_error(imagenet):
  with pytest.raises(ValueError, match=r"imagenet2012/5\.1\.0 is a tfds "
                     r"imagenet2012 dataset: it needs an index map"):
    pipelines.load("imagenet", imagenet[0])


def test_index_map_without_tfds_is_an_error(imagenet):
  _, index_map, records_dir = imagenet
  with pytest.raises(ValueError, match="only used with a tfds imagenet2012"):
    pipelines.load("imagenet", records_dir, index_map=index_map)
  with pytest.raises(ValueError, match="applies only to ImageNet"):
    pipelines.load("cifar10:3.0.2", index_map=index_map)


def test_index_map_format(tmp_path):
  path = tmp_path / "map.tsv"
  path.write_bytes(b"\xef\xbb\xbftrain\ta.JPEG\t1\n\n"
                   b"validation , b.JPEG , 1\r\ntrain,c.JPEG,0\n")
  index_map = imagenet_lib.read_index_map(str(path))
  names, indices = index_map.splits["train"]
  assert list(names) == ["a.JPEG", "c.JPEG"] and list(indices) == [1, 0]
  names, indices = index_map.splits["validation"]
  assert list(names) == ["b.JPEG"] and list(indices) == [1]
  table = index_map.table("train")
  np.testing.assert_array_equal(
      table.lookup(tf.constant(["c.JPEG", "a.JPEG", "b.JPEG"])), [0, 1, -1])


@pytest.mark.parametrize("lines,message", [
    (["train,a.JPEG"], r"map.csv:1: expected split,file_name,index, got "
     r"'train,a.JPEG'"),
    (["train,a.JPEG,0", "train,b.JPEG,1,2"], "map.csv:2: expected"),
    (["split,file_name,index", "val,a.JPEG,0"],
     "map.csv:2: split must be 'train' or 'validation', got 'val'"),
    (["train,a.JPEG,zero"], "map.csv:1: index must be an integer >= 0, got "
     "'zero'"),
    (["train,a.JPEG,-1"], "map.csv:1: index must be an integer >= 0"),
    (["train,,3"], "map.csv:1: empty file name"),
    (["train,a.JPEG,0", "", "validation,a.JPEG,0"],
     "map.csv:3: file name 'a.JPEG' is already on line 1"),
    (["validation,a.JPEG,0", "train,b.JPEG,0", "validation,c.JPEG,1",
      "validation,d.JPEG,0"],
     "map.csv:4: validation index 0 is already on line 1"),
])
def test_bad_index_map_names_file_and_line(tmp_path, lines, message):
  path = write_map(tmp_path / "map.csv", lines)
  with pytest.raises(ValueError, match=message):
    imagenet_lib.read_index_map(path)


def test_unreadable_index_maps(tmp_path):
  path = tmp_path / "map.csv"
  path.write_bytes(b"train,a.JPEG,0\ntrain,\xff\xfe.JPEG,1\n")
  with pytest.raises(ValueError, match="map.csv:2: not UTF-8 text"):
    imagenet_lib.read_index_map(str(path))
  with pytest.raises(FileNotFoundError,
                     match="ImageNet index map .*absent.csv does not exist"):
    imagenet_lib.read_index_map(str(tmp_path / "absent.csv"))


def test_file_names_missing_from_the_map_are_named(imagenet, tmp_path):
  tfds_dir = imagenet[0]
  names, labels, indices = SPLITS["validation"]
  renamed = ["x" + name for name in names[:2]] + names[2:]
  index_map = write_map(tmp_path / "map.csv", map_lines(
      {"validation": (renamed, labels, indices)}))
  ds, _ = pipelines.load("imagenet", tfds_dir, index_map=index_map).split("test")
  with pytest.raises(tf.errors.InvalidArgumentError) as raised:
    list(ds)
  assert (f"ImageNet index map {index_map} has no validation line for file "
          "names") in raised.value.message
  assert f"file names {names[0]}, {names[1]}]" in raised.value.message


def test_map_shorter_than_the_split_is_an_error(imagenet, tmp_path):
  names, labels, indices = SPLITS["validation"]
  index_map = write_map(tmp_path / "map.csv", map_lines(
      {"validation": (names[:3], labels, indices)}))
  dataset = pipelines.load("imagenet", imagenet[0], index_map=index_map)
  with pytest.raises(ValueError, match=f"ImageNet index map {index_map} has "
                     "3 validation lines but .* has 4 validation examples"):
    dataset.split("test")
  with pytest.raises(ValueError, match="has 0 train lines"):
    dataset.split("train")


def encode(pixels, image_format, **kwargs):
  buf = io.BytesIO()
  Image.fromarray(pixels).convert(kwargs.pop("mode", "RGB")).save(
      buf, format=image_format, **kwargs)
  return buf.getvalue()


@pytest.mark.parametrize("shape", [(300, 400, 3), (257, 193, 3)])
def test_png_and_jpeg_of_the_same_pixels_preprocess_alike(shape):
  jpeg = synthetic.random_jpegs(1, seed=3, shape=shape)[0]
  pixels = tf.io.decode_jpeg(jpeg).numpy()  # What the JPEG decodes to.
  from_jpeg = imagenet_lib.eval_image(jpeg).numpy()
  from_png = imagenet_lib.eval_image(encode(pixels, "PNG")).numpy()
  assert from_png.shape == (224, 224, 3)
  np.testing.assert_allclose(from_png, from_jpeg, atol=1e-5)
  # Grayscale PNGs get three channels; CMYK JPEGs come back as RGB.
  gray = imagenet_lib.eval_image(encode(pixels, "PNG", mode="L")).numpy()
  assert gray.shape == (224, 224, 3)
  cmyk = imagenet_lib.eval_image(
      encode(pixels, "JPEG", mode="CMYK", quality=100)).numpy()
  assert np.abs(cmyk - from_jpeg).mean() < 0.2


def test_preprocessing_works_inside_tf_data():
  jpeg = synthetic.random_jpegs(1, seed=4)[0]
  png = encode(tf.io.decode_jpeg(jpeg).numpy(), "PNG")
  out = list(tf.data.Dataset.from_tensor_slices([jpeg, png]).map(
      imagenet_lib.eval_image).as_numpy_iterator())
  np.testing.assert_allclose(out[0], out[1], atol=1e-5)
