"""Offline ImageNet stand-ins: random JPEGs as indexed TFRecords or as a tiny
tfds `imagenet2012`.

  images = imagenet.random_jpegs(6)
  imagenet.write_imagenet_records(path, labels, indices, images=images)
  imagenet.write_imagenet_tfds(data_dir, {"validation": (images, labels,
                                                         file_names)})
"""

import io
import os

import numpy as np
from PIL import Image
import tensorflow as tf
import tensorflow_datasets as tfds


def random_jpegs(n, seed=0, shape=(300, 400, 3)):
  """`n` JPEG-encoded images of uniform noise."""
  rng = np.random.default_rng(seed)
  images = []
  for _ in range(n):
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(
        buf, format="JPEG")
    images.append(buf.getvalue())
  return images


def write_imagenet_records(path, labels, indices, seed=0, images=None):
  """Indexed ImageNet-style TFRecords of `images` (encoded; default: random
  300x400 JPEGs)."""
  if images is None:
    images = random_jpegs(len(labels), seed)
  with tf.io.TFRecordWriter(path) as writer:
    for encoded, label, index in zip(images, labels, indices):
      feature = {
          "image/encoded": tf.train.Feature(
              bytes_list=tf.train.BytesList(value=[encoded])),
          "label": tf.train.Feature(
              int64_list=tf.train.Int64List(value=[int(label)])),
          "index": tf.train.Feature(
              int64_list=tf.train.Int64List(value=[int(index)])),
      }
      writer.write(tf.train.Example(features=tf.train.Features(
          feature=feature)).SerializeToString())


def write_imagenet_tfds(data_dir, splits, version="5.1.0"):
  """Stores a tiny tfds `imagenet2012` (features as tfds' own: encoded JPEG
  `image`, `label`, `file_name`); returns its version directory.

  `splits` maps a tfds split name to `(images, labels, file_names)`; the
  examples are stored in that order.
  """
  features = tfds.features.FeaturesDict({
      "image": tfds.features.Image(encoding_format="jpeg"),
      "label": tfds.features.ClassLabel(num_classes=1000),
      "file_name": tfds.features.Text(),
  })
  split_datasets = {
      split: tf.data.Dataset.from_tensor_slices({
          "image": list(images), "label": np.array(labels, np.int64),
          "file_name": list(file_names)})
      for split, (images, labels, file_names) in splits.items()}
  tfds.dataset_builders.store_as_tfds_dataset(
      name="imagenet2012", version=version, features=features,
      data_dir=data_dir, split_datasets=split_datasets,
      disable_shuffling=True)
  return os.path.join(data_dir, "imagenet2012", version)
