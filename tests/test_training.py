"""The engines (`heldout_tf.training.engines`): the stacked engine trains the
group engine's runs, a pure function of (settings, block); the choice of
engine and of G; what each engine refuses."""

import dataclasses
import os

import numpy as np
import pytest
import tensorflow as tf

from heldout_tf import collection
from heldout_tf import models
from heldout_tf.collection import provenance
from heldout_tf.core import errors
from heldout_tf.core import sizes
from heldout_tf.data import image_data
from heldout_tf.data import sources
from heldout_tf.collection import checkpoints
from heldout_tf.training import engines
from heldout_tf.training import blocks as blocks_lib
from heldout_tf.training import recipes
from heldout_tf.training import settings as settings_lib
from heldout_tf.training import stacked
from heldout_tf.training import run_plan

N_TRAIN, N_TEST = 300, 100
# The group and stacked engines round at the same points; in float32 they
# differ only by accumulation order (batched vs one-model matmuls). In
# bfloat16 a value the two orders put on either side of a bfloat16 rounding
# boundary rounds 2^-8 apart, and training carries that on: ~2e-5 after
# these two epochs, bounded here by 5e-4.
TOLERANCE = {"float32": dict(rtol=1e-5, atol=1e-6),
             "bfloat16": dict(rtol=0, atol=5e-4)}


@pytest.fixture(scope="module")
def digits():
  """300 training and 100 test digits (28x28x1 uint8)."""
  return image_data.first_examples(sources.load("digits"), N_TRAIN,
                                   N_TEST)


def _settings(trainer="stacked", precision="float32", epochs=2,
              hidden=(64, 32), ratio=0.7, **changes):
  """MLP settings; `changes` of recipe fields go to the recipe, the others
  to the settings."""
  recipe_fields = recipes.get("mnist-mlp").config()
  recipe = recipes.get("mnist-mlp").replace(
      epochs=epochs, batch_size=32,
      **{k: v for k, v in changes.items() if k in recipe_fields})
  # 210-example subsets, batch 32: six full batches and a partial one.
  return settings_lib.TrainSettings(
      recipe, "mlp", ratio, seed=5, precision=precision,
      model_options={"hidden": hidden}, trainer=trainer,
      **{k: v for k, v in changes.items() if k not in recipe_fields})


# Every part of the update rule and the loss: Nesterov momentum, weight
# decay, label smoothing, a per-step (triangular) learning rate.
FULL_RULE = dict(nesterov=True, weight_decay=5e-4, label_smoothing=0.1,
                 schedule="triangular", peak_epoch=1)


def _both(data, size, **settings):
  """The group and the stacked engine of the same settings."""
  base = _settings(trainer="group", **settings)
  return (engines.make("group", base, data, size),
          engines.make("stacked", dataclasses.replace(base,
                                                      trainer="stacked"),
                       data, size))


def _values(result):
  return [v.numpy() for v in result.model.variables]


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_stacked_runs_equal_the_group_engines_runs(digits, precision):
  group, stack = _both(digits, 3, precision=precision, **FULL_RULE)
  runs = [3, 7, 11]
  expected = {r.run: (_values(r), r.subset, r.global_step)
              for r in group.train(runs)}
  results = stack.train(runs)
  assert [r.run for r in results] == runs
  for result in results:
    weights, subset, global_step = expected[result.run]
    np.testing.assert_array_equal(result.subset, subset)
    assert result.global_step == global_step == 2 * 7
    assert result.signals is None and result.resumed_from is None
    initial = run_plan.fresh_model(stack.settings, digits, result.run)
    for got, want, start in zip(_values(result), weights,
                                (v.numpy() for v in initial.variables)):
      assert got.dtype == np.float32
      assert not np.allclose(got, start)  # It did train.
      np.testing.assert_allclose(got, want, **TOLERANCE[precision])
  # Different runs learn different models.
  assert not np.allclose(_values(results[0])[0], _values(results[1])[0])


def test_runs_on_given_subsets_equal_the_group_engines(digits):
  group, stack = _both(digits, 2, epochs=1, ratio=1.0)
  keep = [np.arange(4, 300), np.arange(0, 296)]
  expected = [_values(r) for r in group.train([0, 1], subsets=keep)]
  for result, kept, weights in zip(stack.train([0, 1], subsets=keep), keep,
                                   expected):
    np.testing.assert_array_equal(result.subset, kept)
    for got, want in zip(_values(result), weights):
      np.testing.assert_allclose(got, want, **TOLERANCE["float32"])


def _files(store, runs):
  """{(run, name): bytes} of every file the runs wrote."""
  out = {}
  for run in runs:
    run_dir = store.run_dir(run)
    for where, _, names in os.walk(run_dir):
      for name in names:
        with open(os.path.join(where, name), "rb") as f:
          out[(run, os.path.relpath(os.path.join(where, name), run_dir))] = (
              f.read())
  return out


def test_a_block_is_a_pure_function_of_settings_and_block(digits, tmp_path):
  """The same canonical block trains to the same bytes, whole or one run
  at a time, by a new block trainer each time."""
  settings = _settings()
  source = provenance.DataSource("unused")
  whole = collection.Store(str(tmp_path / "whole"), "tiny-mlp", 0.7)
  blocks = blocks_lib.ModelBlocks(settings, source, 3, data=digits)
  assert isinstance(blocks.trainer, stacked.StackedTrainer)
  assert blocks.train_block(whole, [0, 1, 2]) == [0, 1, 2]
  parts = collection.Store(str(tmp_path / "parts"), "tiny-mlp", 0.7)
  assert blocks_lib.ModelBlocks(settings, source, 3, data=digits
                                  ).train_block(parts, [1]) == [1]
  again = blocks_lib.ModelBlocks(settings, source, 3, data=digits)
  assert again.train_block(parts, [0, 1, 2]) == [0, 2]
  expected = _files(whole, range(3))
  assert sorted(name for _, name in expected)[:4] == [
      "aux_arrays.npz", "aux_arrays.npz", "aux_arrays.npz",
      "checkpoints/ckpt-2.data-00000-of-00001"]
  assert _files(parts, range(3)) == expected
  # And the block trainer's engine trains the same block to the same
  # weights in memory.
  first = [_values(r) for r in blocks.trainer.train([0, 1, 2])]
  for result, weights in zip(again.trainer.train([0, 1, 2]), first):
    for got, want in zip(_values(result), weights):
      assert got.tobytes() == want.tobytes()


def test_bfloat16_rounds_the_matmuls_but_keeps_float32_weights(digits):
  fp32 = engines.make("stacked", _settings(), digits, 2).train([0, 1])
  bf16 = engines.make("stacked", _settings(precision="bfloat16"), digits,
                      2).train([0, 1])
  for a, b in zip(fp32, bf16):
    for x, y in zip(_values(a), _values(b)):
      assert y.dtype == np.float32
      # Master weights are not bfloat16 values: updates stay float32.
      assert not np.array_equal(y, y.astype(tf.bfloat16.as_numpy_dtype)
                                .astype(np.float32))
      # Same run, different rounding: close but not equal (~1e-3 apart
      # on average after two epochs; the largest gaps on a few biases).
      assert not np.allclose(x, y, rtol=1e-5, atol=1e-6)
      assert np.abs(x - y).mean() < 0.01 and np.abs(x - y).max() < 0.1


def test_results_are_mlps_in_the_checkpoint_layout(digits, tmp_path):
  engine = engines.make("stacked", _settings(hidden=models.MLP_HIDDEN,
                                             epochs=1), digits, 2)
  results = engine.train([4, 9])
  for result in results:
    assert isinstance(result.model, models.MLP)
    assert [tuple(v.shape) for v in result.model.variables] == [
        (512,), (784, 512), (256,), (512, 256), (10,), (256, 10)]
  result = results[1]
  prefix = checkpoints.save(result.model, str(tmp_path), step=1, epoch=1)
  restored = models.ensure_built(models.build_model("mlp", 10), "mlp")
  checkpoints.restore(restored, prefix)
  for a, b in zip(restored.variables, result.model.variables):
    np.testing.assert_array_equal(a.numpy(), b.numpy())
  images = image_data.as_float(digits.test_images)
  predicted = np.argmax(restored(tf.constant(images)).numpy(), -1)
  np.testing.assert_array_equal(engine.correctness(result, "test"),
                                predicted == digits.test_labels)


def test_grouping_changes_no_model_beyond_float_tolerance(digits):
  settings = _settings(epochs=1)
  together = engines.make("stacked", settings, digits, 4).train([0, 1, 2, 3])
  apart = engines.make("stacked", settings, digits, 2).train([2, 0])
  for a, b in ((together[2], apart[0]), (together[0], apart[1])):
    for x, y in zip(_values(a), _values(b)):
      np.testing.assert_allclose(x, y, **TOLERANCE["float32"])


def test_trained_models_learn_and_on_step_counts_every_step(digits):
  engine = engines.make("stacked", _settings(epochs=5), digits, 2)
  seen = []
  results = engine.train([0, 1], on_step=lambda *s: seen.append(s))
  assert seen == [(i, 35) for i in range(1, 36)]
  for result in results:
    correct = engine.correctness(result, "train")
    assert correct[result.subset].mean() > 0.8, correct[result.subset].mean()
    test = engine.correctness(result, "test").mean()
    assert test > 0.6, test  # Chance: 0.1.


def test_the_stacked_engine_refuses_what_it_cannot_train(digits):
  for changes, what in ((dict(flip=True), "augmentation"),
                        (dict(precision="float16"), "precision float16"),
                        (dict(ratio=0.5, signals=True), "signals"),
                        (dict(trajectory_runs=1), "trajectories")):
    with pytest.raises(errors.UsageError, match=f"stacked engine .*{what}"):
      _settings(**changes)
  with pytest.raises(errors.UsageError, match="model 'resnet9'"):
    settings_lib.TrainSettings(recipes.get("mnist-mlp"), "resnet9", 0.7,
                               trainer="stacked")
  with pytest.raises(errors.UsageError, match="engine must be one of"):
    _settings(trainer="keras")
  with pytest.raises(errors.UsageError, match="differs from the settings"):
    engines.make("stacked", _settings(trainer="group"), digits, 2)
  with pytest.raises(errors.UsageError, match="engine 'stacked'"):
    stacked.StackedTrainer(_settings(trainer="group"), digits, 2)
  engine = engines.make("stacked", _settings(epochs=1), digits, 2)
  with pytest.raises(errors.UsageError, match="1 to 2 runs"):
    engine.train([0, 1, 2])
  with pytest.raises(errors.UsageError, match="all of one length"):
    engine.train([0, 1], subsets=[np.arange(10), np.arange(11)])
  with pytest.raises(errors.UsageError, match="no trajectories"):
    engine.train([0], trajectory_dirs=["somewhere"])


def test_choose_takes_stacked_wherever_it_can():
  assert engines.choose(_settings(trainer="group"))[0] == "stacked"
  name, why = engines.choose(settings_lib.TrainSettings(
      recipes.get("resnet9"), "resnet9", 0.7))
  assert name == "group" and "model 'resnet9'" in why and "augmentation" in (
      why)
  name, why = engines.choose(_settings(trainer="group", signals=True,
                                       ratio=0.5))
  assert name == "group" and "signals" in why


def test_default_group_size_asks_sizes_for_the_memory(digits, monkeypatch):
  settings = _settings()
  assert engines.default_group_size("group", settings, digits) == 1
  per_model = engines.bytes_per_model(settings, digits)
  monkeypatch.setattr(sizes, "available_memory", lambda: 4 * 5 * per_model)
  assert engines.default_group_size("stacked", settings, digits) == 5
  monkeypatch.setattr(sizes, "available_memory", lambda: 1)
  assert engines.default_group_size("stacked", settings, digits) == 1
  monkeypatch.setattr(sizes, "available_memory", lambda: 1 << 50)
  assert engines.default_group_size("stacked", settings, digits) == 32
  # A bfloat16 group also holds bfloat16 copies of weights and gradients.
  assert engines.bytes_per_model(_settings(precision="bfloat16"),
                                 digits) > per_model
  with pytest.raises(errors.UsageError, match="engine must be one of"):
    engines.default_group_size("keras", settings, digits)


def test_the_engine_is_recorded_only_when_not_group():
  assert "trainer" not in _settings(trainer="group").config()
  assert _settings().config()["trainer"] == "stacked"


def test_choosing_an_engine_needs_no_tensorflow(imports_tensorflow):
  assert not imports_tensorflow(
      "from heldout_tf.training import engines, recipes, settings\n"
      "s = settings.TrainSettings(recipes.get('mnist-mlp'), 'mlp', 0.7)\n"
      "assert engines.choose(s)[0] == 'stacked'\n"
      "assert engines.ENGINES == ('group', 'stacked')")
