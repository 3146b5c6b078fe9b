"""Tests of heldout_tf.training.ensemble: grouped training equals training alone."""

import numpy as np
import pytest
import sonnet as snt
import tensorflow as tf

from heldout_tf.models import checkpoints
from heldout_tf.core import errors
from heldout_tf import models
from heldout_tf.core import sizes
from heldout_tf.training import ensemble
from mnist_example import data as data_lib

N_EXAMPLES = 300


@pytest.fixture(scope="module")
def digits():
  """300 training digits and their labels."""
  data = data_lib.load("digits")
  return data.train_images[:N_EXAMPLES], data.train_labels[:N_EXAMPLES]


def _config(**kwargs):
  # 210-example subsets, batch 32: six full batches and a partial one.
  defaults = dict(ratio=0.7, epochs=2, batch_size=32, seed=5)
  defaults.update(kwargs)
  return ensemble.TrainConfig(**defaults)


def test_subsets_and_shuffles_are_functions_of_seed_and_run():
  config = _config()
  a = ensemble.subset_indices(config, 3, 1000)
  np.testing.assert_array_equal(a, ensemble.subset_indices(config, 3, 1000))
  assert len(a) == 700 and len(np.unique(a)) == 700
  assert np.all(np.diff(a) > 0) and a.min() >= 0 and a.max() < 1000
  assert not np.array_equal(a, ensemble.subset_indices(config, 4, 1000))
  assert not np.array_equal(
      a, ensemble.subset_indices(_config(seed=6), 3, 1000))
  first = ensemble.epoch_order(config, 3, 0, a)
  np.testing.assert_array_equal(np.sort(first), a)
  assert not np.array_equal(first, ensemble.epoch_order(config, 3, 1, a))
  steps = list(ensemble.batches(config, 3, 1000))
  assert len(steps) == config.epochs * config.steps_per_epoch(1000)
  np.testing.assert_array_equal(np.concatenate(steps[:len(steps) // 2]),
                                first)


def test_init_has_sonnet_linear_distribution():
  params = ensemble.init_params(_config(), 0, 784)
  assert [p.shape for p in params] == [(784, 512), (512,), (512, 256),
                                       (256,), (256, 10), (10,)]
  w = params[0]
  std = 1 / np.sqrt(784)
  assert np.abs(w).max() <= 2 * std + 1e-6  # Truncated at two stddevs.
  # A normal truncated at +-2 sigma has std 0.8796 sigma.
  assert abs(w.std() / std - 0.8796) < 0.01
  assert not np.any(params[1])
  other = ensemble.init_params(_config(), 1, 784)
  assert not np.allclose(params[0], other[0])
  np.testing.assert_array_equal(params[2],
                                ensemble.init_params(_config(), 0, 784)[2])


# Group and alone round at the same points (`ensemble.mlp_forward`), so in
# both precisions they differ only by float32 accumulation order: one
# tolerance for both. (A bfloat16 run differs from the float32 run by ~1e-2.)
@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_group_trained_model_equals_the_model_trained_alone(digits, precision):
  images, labels = digits
  config = _config(precision=precision)
  trainer = ensemble.EnsembleTrainer(images, labels, config)
  result = trainer.train([3, 7, 11])
  # Results keep the `[G, in, out]` layout of sonnet weights, whatever the
  # layout inside the step.
  assert [p.shape for p in result.params] == [
      (3, 784, 512), (3, 512), (3, 512, 256), (3, 256), (3, 256, 10), (3, 10)]
  assert all(p.dtype == np.float32 for p in result.params)
  alone = ensemble.train_alone(images, labels, config, 7)
  initial = ensemble.init_params(config, 7, 784)
  for grouped, single, init in zip(result.model_params(1),
                                   ensemble.module_params(alone), initial):
    assert not np.allclose(single, init)  # It did train.
    np.testing.assert_allclose(grouped, single, rtol=1e-4, atol=2e-5)
  np.testing.assert_array_equal(result.subsets[1],
                                ensemble.subset_indices(config, 7, len(labels)))
  logits = alone(tf.constant(images)).numpy()
  agree = trainer.predict(result, images)[1] == np.argmax(logits, axis=-1)
  if precision == "float32":
    assert agree.all()
  else:  # Predicted in bfloat16, compared with the float32 module.
    assert agree.mean() > 0.97


def test_bfloat16_rounds_the_matmuls_but_keeps_float32_weights(digits):
  images, labels = digits
  runs = [0, 1]
  fp32 = ensemble.EnsembleTrainer(images, labels, _config()).train(runs)
  bf16 = ensemble.EnsembleTrainer(
      images, labels, _config(precision="bfloat16")).train(runs)
  for a, b in zip(fp32.params, bf16.params):
    assert b.dtype == np.float32
    # Master weights are not bfloat16 values: updates stay float32.
    assert not np.array_equal(b, b.astype(tf.bfloat16.as_numpy_dtype)
                              .astype(np.float32))
    # Same run, different rounding: close but not equal.
    assert not np.allclose(a, b, rtol=1e-4, atol=2e-5)
    np.testing.assert_allclose(a, b, atol=0.05)


def test_grouping_does_not_change_the_models(digits):
  images, labels = digits
  config = _config(epochs=1)
  trainer = ensemble.EnsembleTrainer(images, labels, config)
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
  trainer = ensemble.EnsembleTrainer(images, labels, _config(epochs=5))
  result = trainer.train([0, 1])
  accuracy = (trainer.predict(result, images) == labels[None]).mean(axis=1)
  assert np.all(accuracy > 0.85), accuracy


def test_module_checkpoint_roundtrip(tmp_path):
  config = _config()
  params = ensemble.init_params(config, 2, 784)
  module = ensemble.build_module(config, params)
  prefix = checkpoints.save(module, str(tmp_path), step=2, epoch=2)
  restored = models.ensure_built(models.build_model("mlp", 10), "mlp")
  checkpoints.restore(restored, prefix)
  for a, b in zip(ensemble.module_params(restored), params):
    np.testing.assert_array_equal(a, b)


def test_on_step_reports_every_step(digits):
  images, labels = digits
  trainer = ensemble.EnsembleTrainer(images, labels, _config(epochs=1))
  seen = []
  trainer.train([0], on_step=lambda done, total: seen.append((done, total)))
  total = trainer.total_steps()
  assert seen == [(i, total) for i in range(1, total + 1)]


def test_bad_inputs_are_refused(digits):
  images, labels = digits
  with pytest.raises(errors.UsageError, match="labels must have shape"):
    ensemble.EnsembleTrainer(images, labels[:-1], _config())
  with pytest.raises(errors.UsageError, match="ratio"):
    _config(ratio=1.5)
  with pytest.raises(errors.UsageError, match="precision"):
    _config(precision="float16")
  trainer = ensemble.EnsembleTrainer(images, labels, _config())
  with pytest.raises(errors.UsageError, match="distinct"):
    trainer.train([1, 1])
  with pytest.raises(errors.UsageError, match=r"subsets must be integer \[2"):
    trainer.train([1, 2], subsets=np.zeros([3, 10], np.int64))
  with pytest.raises(errors.UsageError, match="300 training examples"):
    trainer.train([1, 2], subsets=np.full([2, 10], 300))
  with pytest.raises(errors.UsageError, match="init must be stacked"):
    trainer.train([1, 2], init=ensemble.init_params(_config(), 1, 784))
  with pytest.raises(errors.UsageError, match="epochs"):
    trainer.train([1], epochs=0)


def test_auto_group_size_is_bounded():
  config = _config()
  size = ensemble.auto_group_size(config)
  assert 1 <= size <= ensemble.MAX_GROUP_SIZE
  assert ensemble.auto_group_size(config, cap=3) <= 3
  assert ensemble.auto_group_size(config, memory_fraction=1e-12) == 1


def test_auto_group_size_asks_sizes_for_the_memory(monkeypatch):
  config = _config()
  per_model = ensemble.bytes_per_model(config)
  monkeypatch.setattr(sizes, "available_memory", lambda: 4 * 5 * per_model)
  assert ensemble.auto_group_size(config) == 5
  assert ensemble.auto_group_size(config, cap=3) == 3
  # A bfloat16 group also holds bfloat16 copies of weights and gradients.
  assert ensemble.bytes_per_model(_config(precision="bfloat16")) > per_model


def _stack(per_run_params):
  return [np.stack(layer) for layer in zip(*per_run_params)]


def test_train_defaults_equal_explicit_subsets_init_and_epochs(digits):
  images, labels = digits
  config = _config(epochs=1)
  trainer = ensemble.EnsembleTrainer(images, labels, config)
  runs = [4, 9]
  default = trainer.train(runs)
  explicit = trainer.train(
      runs, first_epoch=0, epochs=config.epochs,
      subsets=np.stack([ensemble.subset_indices(config, r, len(labels))
                        for r in runs]),
      init=_stack([ensemble.init_params(config, r, 784) for r in runs]))
  for a, b in zip(default.params, explicit.params):
    np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(default.subsets, explicit.subsets)


def _reference_phase(images, labels, config, run, params, subset, epoch):
  """One epoch of a plain sonnet momentum loop from `params` on `subset`."""
  module = ensemble.build_module(config, params)
  optimizer = snt.optimizers.Momentum(config.learning_rate, config.momentum)
  order = ensemble.epoch_order(config, run, epoch, subset)
  for start in range(0, len(order), config.batch_size):
    idx = order[start:start + config.batch_size]
    with tf.GradientTape() as tape:
      loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
          labels[idx], module(images[idx])))
    variables = module.trainable_variables
    optimizer.apply(tape.gradient(loss, variables), variables)
  return ensemble.module_params(module)


def test_second_phase_starts_from_init_on_given_subsets(digits):
  images, labels = digits
  images = images.reshape(len(images), -1)
  config = _config(epochs=1)
  trainer = ensemble.EnsembleTrainer(images, labels, config)
  runs = [2, 5]
  first = trainer.train(runs)
  # Phase 2: each run's held-out complement, fresh shuffles (epoch 1),
  # momentum back at zero.
  complements = np.stack([np.setdiff1d(np.arange(len(labels)), s)[:80]
                          for s in first.subsets])
  steps = []
  second = trainer.train(runs, init=first, subsets=complements,
                         first_epoch=1, epochs=1,
                         on_step=lambda done, total: steps.append(total))
  assert steps == [3, 3, 3]  # ceil(80 / 32) steps, their own total.
  np.testing.assert_array_equal(second.subsets, complements)
  for g, run in enumerate(runs):
    expected = _reference_phase(images, labels, config, run,
                                first.model_params(g), complements[g], 1)
    for got, want in zip(second.model_params(g), expected):
      np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-5)
  # Stacked arrays work as init too.
  again = trainer.train(runs, init=first.params, subsets=complements,
                        first_epoch=1, epochs=1)
  for a, b in zip(second.params, again.params):
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_on_epoch_end_sees_each_epochs_models(digits, precision):
  images, labels = digits
  config = _config(epochs=2, precision=precision)
  trainer = ensemble.EnsembleTrainer(images, labels, config)
  runs = [1, 6]
  seen = []

  def on_epoch_end(epoch, view):
    features, logits = view.features_and_logits(images[:70])
    seen.append((epoch, view.params(), features, logits))

  result = trainer.train(runs, on_epoch_end=on_epoch_end)
  assert [s[0] for s in seen] == [0, 1]
  one_epoch = trainer.train(runs, epochs=1)
  for a, b in zip(seen[0][1], one_epoch.params):
    np.testing.assert_array_equal(a, b)
  _, params, features, logits = seen[1]
  for a, b in zip(params, result.params):
    assert a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
  assert features.shape == (2, 70, 256) and features.dtype == np.float32
  assert logits.shape == (2, 70, 10) and logits.dtype == np.float32
  assert np.all(features >= 0)
  np.testing.assert_array_equal(np.argmax(logits, -1),
                                trainer.predict(result, images[:70]))
  # The logits are the last layer applied to the penultimate features (up
  # to the bfloat16 rounding of its matmul).
  w, b = result.params[-2], result.params[-1]
  expected = np.einsum("gnh,gho->gno", features, w) + b[:, None, :]
  tolerance = 1e-4 if precision == "float32" else 2e-2
  np.testing.assert_allclose(logits, expected, rtol=tolerance, atol=tolerance)
  # The hidden features are those of the float32 module, up to precision.
  module = ensemble.build_module(config, result.model_params(1))
  hidden = tf.nn.relu(module.layers[1](tf.nn.relu(module.layers[0](
      images[:70].reshape(70, -1))))).numpy()
  np.testing.assert_allclose(features[1], hidden,
                             atol=1e-4 if precision == "float32" else 0.1)
  empty_features, empty_logits = ensemble.GroupView(
      trainer._group(2), runs).features_and_logits(images[:0])
  assert empty_features.shape == (2, 0, 256)
  assert empty_logits.shape == (2, 0, 10)
  assert trainer.predict(result, images[:0]).shape == (2, 0)
