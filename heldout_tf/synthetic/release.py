"""Offline stand-ins for the released CIFAR data and runs.

Random images in the CIFAR pipeline, a tiny tfds
CIFAR dataset, and runs in the released layout (a checkpoint of a model with
random weights and non-trivial BatchNorm statistics, plus an aux_arrays.npz
whose correctness comes from that model). Nothing here touches the network.

  arrays = synthetic.random_cifar_arrays(n_train=48, n_test=32)
  dataset = synthetic.in_memory_dataset(arrays)
  model = models.build_model("small_inception", 10)
  path = synthetic.write_release_run(root, "synthetic-inception", 0.7, 0,
                                     model, "small_inception", arrays, seed=0)
  for r in reevaluation.evaluate_runs(synthetic.experiment("small_inception", 10),
                                    [path], dataset, "test"):
    ...
"""


import numpy as np
import tensorflow as tf

from heldout_tf.collection import checkpoints
from heldout_tf.data import pipelines
from heldout_tf import models
from heldout_tf import collection
from heldout_tf.collection import experiments

CIFAR_SHAPE = (32, 32, 3)


def experiment(arch: str = "small_inception", num_classes: int = 10,
               name: str = "synthetic-inception") -> experiments.Experiment:
  """A stand-in `experiments.Experiment` of `arch` with `num_classes`."""
  return experiments.Experiment(name, arch, num_classes, dataset="synthetic")


def random_cifar_arrays(n_train=48, n_test=32, num_classes=10, seed=0,
                        with_ids=False):
  """`{split: {'image': uint8 [n, 32, 32, 3], 'label': int64 [n]}}` of
  uniform noise and random labels (plus tfds-style 'id' strings)."""
  rng = np.random.default_rng(seed)
  arrays = {}
  for split, n in (("train", n_train), ("test", n_test)):
    arrays[split] = {
        "image": rng.integers(0, 256, (n,) + CIFAR_SHAPE, dtype=np.uint8),
        "label": rng.integers(0, num_classes, n).astype(np.int64),
    }
    if with_ids:
      arrays[split]["id"] = np.array([f"{split}_{i:05d}" for i in range(n)])
  return arrays


def in_memory_dataset(arrays, name="synthetic") -> pipelines.Dataset:
  """A `pipelines.Dataset` over `arrays` (see `random_cifar_arrays`), through
  the same pipeline as CIFAR evaluation (`pipelines.in_memory_dataset`:
  `uint8 / 255`, canonical index)."""
  return pipelines.in_memory_dataset(
      name, lambda split: arrays[split]["image"],
      lambda split: arrays[split]["label"])


def write_synthetic_cifar(data_dir, name="cifar10", num_classes=10,
                          n_train=48, n_test=32, seed=0):
  """Stores a tiny random `<name>:3.0.2` tfds dataset; returns its arrays."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  arrays = random_cifar_arrays(n_train, n_test, num_classes, seed,
                               with_ids=True)
  features = tfds.features.FeaturesDict(dict(
      id=tfds.features.Text(),
      image=tfds.features.Image(shape=CIFAR_SHAPE),
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


def predictions_correct(model, images, labels, batch_size=200):
  """Whether `model` classifies each uint8 image as its label (bool [n])."""
  correct = []
  for start in range(0, len(labels), batch_size):
    batch = tf.constant(images[start:start + batch_size], tf.float32) / 255.0
    logits = model(batch, is_training=False).numpy()
    correct.append(np.argmax(logits, -1) == labels[start:start + batch_size])
  return np.concatenate(correct) if correct else np.zeros(0, bool)


def write_release_run(root, experiment_name, ratio, run, model, arch, arrays,
                      seed, step=100, epoch=10):
  """Writes one run in the released layout: checkpoint + aux_arrays.npz.

  The model is randomised with `seed`; its subset holds `ratio` of the
  training examples; correctness comes from the model itself, so
  `reevaluation.evaluate_runs` finds every prediction matching. Returns the
  run directory.
  """
  randomize(model, arch, seed)
  n_train = len(arrays["train"]["label"])
  rng = np.random.default_rng(seed)
  subset = np.sort(rng.choice(n_train, int(ratio * n_train), replace=False))
  store = collection.Store(root, experiment_name, ratio)
  store.write_run(
      run, subset=subset,
      correct_train=predictions_correct(model, arrays["train"]["image"],
                                        arrays["train"]["label"]),
      correct_test=predictions_correct(model, arrays["test"]["image"],
                                       arrays["test"]["label"]),
      save_checkpoint=lambda directory: checkpoints.save(
          model, directory, step=step, epoch=epoch, global_step=step))
  path = store.run_dir(run)
  return path
