"""Small offline stand-ins for the released data and runs, built in tests."""

import io
import os

import numpy as np
from PIL import Image
import tensorflow as tf
import tensorflow_datasets as tfds

from heldout_tf import checkpoints
from heldout_tf import models
from heldout_tf import runs

CIFAR_FEATURES = dict(
    id=tfds.features.Text(),
    image=tfds.features.Image(shape=(32, 32, 3)),
)


def write_synthetic_cifar(data_dir, name="cifar10", num_classes=10,
                          n_train=48, n_test=32, seed=0):
  """Stores a tiny random `<name>:3.0.2` tfds dataset; returns its arrays."""
  rng = np.random.default_rng(seed)
  arrays = {}
  for split, n in (("train", n_train), ("test", n_test)):
    arrays[split] = {
        "id": np.array([f"{split}_{i:05d}" for i in range(n)]),
        "image": rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
        "label": rng.integers(0, num_classes, n).astype(np.int64),
    }
  features = tfds.features.FeaturesDict(
      dict(CIFAR_FEATURES,
           label=tfds.features.ClassLabel(num_classes=num_classes)))
  tfds.dataset_builders.store_as_tfds_dataset(
      name=name, version="3.0.2", features=features, data_dir=data_dir,
      split_datasets={s: tf.data.Dataset.from_tensor_slices(a)
                      for s, a in arrays.items()},
      disable_shuffling=True)
  return arrays


def randomize(model, arch, seed):
  """Gives `model` random weights and non-trivial BatchNorm statistics."""
  models.ensure_built(model, arch)
  rng = np.random.default_rng(seed)
  for var in model.trainable_variables:
    if var.shape.rank == 1:  # Biases, BatchNorm offsets and scales.
      base = 1.0 if "scale" in var.name else 0.0
      value = base + 0.1 * rng.standard_normal(var.shape)
    else:
      value = rng.standard_normal(var.shape) / np.sqrt(np.prod(var.shape[:-1]))
    var.assign(value)
  # Two training-mode passes move every BatchNorm's moving statistics (and
  # their EMA counters) away from their initial values.
  for _ in range(2):
    model(rng.uniform(size=(8,) + models.input_shape(arch)).astype(np.float32),
          is_training=True)
  return model


def predictions_correct(model, images, labels):
  logits = model(tf.constant(images, tf.float32) / 255.0, is_training=False)
  return np.argmax(logits.numpy(), -1) == labels


def write_release_run(root, experiment, ratio, run, model, arch, arrays,
                      seed, step=100, epoch=10):
  """Writes one run in the released layout: checkpoint + aux_arrays.npz.

  The model is randomised with `seed`; its subset holds `ratio` of the
  training examples; correctness comes from the model itself.
  """
  randomize(model, arch, seed)
  path = runs.run_dir(root, experiment, ratio, run)
  checkpoints.save(model, os.path.join(path, runs.CHECKPOINTS_DIRNAME),
                   step=step, epoch=epoch, global_step=step)
  n_train = len(arrays["train"]["label"])
  rng = np.random.default_rng(seed)
  subset = np.sort(rng.choice(n_train, int(ratio * n_train), replace=False))
  removed = np.setdiff1d(np.arange(n_train), subset)
  train_ok = predictions_correct(model, arrays["train"]["image"],
                                 arrays["train"]["label"])
  test_ok = predictions_correct(model, arrays["test"]["image"],
                                arrays["test"]["label"])
  runs.write_aux(
      path,
      correctness={"train": train_ok[subset], "removed": train_ok[removed],
                   "test": test_ok},
      index={"train": subset, "removed": removed,
             "test": np.arange(len(test_ok))},
      subsample_idx=subset)
  return path


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
