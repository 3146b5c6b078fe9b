"""Tests of heldout_tf.training: grouped training equals training alone."""

import numpy as np
import pytest
import tensorflow as tf

from heldout_tf import checkpoints
from heldout_tf import models
from heldout_tf import training
from mnist_example import data as data_lib

N_EXAMPLES = 300


@pytest.fixture(scope="module")
def digits():
  """300 training digits and their labels."""
  arrays = data_lib.load_digits()
  return (arrays["train_images"][:N_EXAMPLES],
          arrays["train_labels"][:N_EXAMPLES])


def _config(**kwargs):
  # 210-example subsets, batch 32: six full batches and a partial one.
  defaults = dict(ratio=0.7, epochs=2, batch_size=32, seed=5)
  defaults.update(kwargs)
  return training.TrainConfig(**defaults)


def test_subsets_and_shuffles_are_functions_of_seed_and_run():
  config = _config()
  a = training.subset_indices(config, 3, 1000)
  np.testing.assert_array_equal(a, training.subset_indices(config, 3, 1000))
  assert len(a) == 700 and len(np.unique(a)) == 700
  assert np.all(np.diff(a) > 0) and a.min() >= 0 and a.max() < 1000
  assert not np.array_equal(a, training.subset_indices(config, 4, 1000))
  assert not np.array_equal(
      a, training.subset_indices(_config(seed=6), 3, 1000))
  first = training.epoch_order(config, 3, 0, a)
  np.testing.assert_array_equal(np.sort(first), a)
  assert not np.array_equal(first, training.epoch_order(config, 3, 1, a))
  steps = list(training.batches(config, 3, 1000))
  assert len(steps) == config.epochs * config.steps_per_epoch(1000)
  np.testing.assert_array_equal(np.concatenate(steps[:len(steps) // 2]),
                                first)


def test_init_has_sonnet_linear_distribution():
  params = training.init_params(_config(), 0, 784)
  assert [p.shape for p in params] == [(784, 512), (512,), (512, 256),
                                       (256,), (256, 10), (10,)]
  w = params[0]
  std = 1 / np.sqrt(784)
  assert np.abs(w).max() <= 2 * std + 1e-6  # Truncated at two stddevs.
  # A normal truncated at +-2 sigma has std 0.8796 sigma.
  assert abs(w.std() / std - 0.8796) < 0.01
  assert not np.any(params[1])
  other = training.init_params(_config(), 1, 784)
  assert not np.allclose(params[0], other[0])
  np.testing.assert_array_equal(params[2],
                                training.init_params(_config(), 0, 784)[2])


def test_group_trained_model_equals_the_model_trained_alone(digits):
  images, labels = digits
  config = _config()
  trainer = training.EnsembleTrainer(images, labels, config)
  result = trainer.train([3, 7, 11])
  # Results keep the `[G, in, out]` layout of sonnet weights, whatever the
  # layout inside the step.
  assert [p.shape for p in result.params] == [
      (3, 784, 512), (3, 512), (3, 512, 256), (3, 256), (3, 256, 10), (3, 10)]
  alone = training.train_alone(images, labels, config, 7)
  initial = training.init_params(config, 7, 784)
  for grouped, single, init in zip(result.model_params(1),
                                   training.module_params(alone), initial):
    assert not np.allclose(single, init)  # It did train.
    np.testing.assert_allclose(grouped, single, rtol=1e-4, atol=2e-5)
  np.testing.assert_array_equal(result.subsets[1],
                                training.subset_indices(config, 7, len(labels)))
  logits = alone(tf.constant(images)).numpy()
  np.testing.assert_array_equal(trainer.predict(result, images)[1],
                                np.argmax(logits, axis=-1))


def test_grouping_does_not_change_the_models(digits):
  images, labels = digits
  config = _config(epochs=1)
  trainer = training.EnsembleTrainer(images, labels, config)
  together = trainer.train([0, 1, 2, 3])
  split = trainer.train([2, 0])
  for a, b in zip(together.model_params(2), split.model_params(0)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-5)
  for a, b in zip(together.model_params(0), split.model_params(1)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-5)
  # Different runs learn different models.
  assert not np.allclose(together.params[0][0], together.params[0][1])


def test_trained_model_learns(digits):
  images, labels = digits
  trainer = training.EnsembleTrainer(images, labels, _config(epochs=5))
  result = trainer.train([0, 1])
  accuracy = (trainer.predict(result, images) == labels[None]).mean(axis=1)
  assert np.all(accuracy > 0.85), accuracy


def test_module_checkpoint_roundtrip(tmp_path):
  config = _config()
  params = training.init_params(config, 2, 784)
  module = training.build_module(config, params)
  prefix = checkpoints.save(module, str(tmp_path), step=2, epoch=2)
  restored = models.ensure_built(models.build_model("mlp", 10), "mlp")
  checkpoints.restore(restored, prefix)
  for a, b in zip(training.module_params(restored), params):
    np.testing.assert_array_equal(a, b)


def test_on_step_reports_every_step(digits):
  images, labels = digits
  trainer = training.EnsembleTrainer(images, labels, _config(epochs=1))
  seen = []
  trainer.train([0], on_step=lambda done, total: seen.append((done, total)))
  total = trainer.total_steps()
  assert seen == [(i, total) for i in range(1, total + 1)]


def test_bad_inputs_are_refused(digits):
  images, labels = digits
  with pytest.raises(ValueError, match="labels must have shape"):
    training.EnsembleTrainer(images, labels[:-1], _config())
  with pytest.raises(ValueError, match="ratio"):
    _config(ratio=1.5)
  trainer = training.EnsembleTrainer(images, labels, _config())
  with pytest.raises(ValueError, match="distinct"):
    trainer.train([1, 1])


def test_auto_group_size_is_bounded():
  config = _config()
  size = training.auto_group_size(config)
  assert 1 <= size <= training.MAX_GROUP_SIZE
  assert training.auto_group_size(config, cap=3) <= 3
  assert training.auto_group_size(config, memory_fraction=1e-12) == 1
