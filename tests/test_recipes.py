"""Recipes as data: the papers' settings, schedules, provenance."""

import numpy as np
import pytest

from heldout_tf.core import errors
from heldout_tf.training import recipes


def test_mnist_recipe_is_the_papers_mnist_setup():
  # DESIGN.md: SGD momentum 0.9, lr 0.1, batch 128, 10 epochs.
  recipe = recipes.get("mnist-mlp")
  assert (recipe.epochs, recipe.batch_size, recipe.learning_rate) == (
      10, 128, 0.1)
  assert recipe.momentum == 0.9 and recipe.schedule == "constant"
  assert not recipe.augments


def test_resnet9_recipe_is_datamodels():
  r = recipes.get("resnet9")
  assert (r.epochs, r.batch_size, r.learning_rate, r.peak_epoch) == (
      24, 512, 0.5, 5)
  assert (r.momentum, r.nesterov, r.weight_decay, r.label_smoothing) == (
      0.9, True, 5e-4, 0.1)
  assert (r.flip, r.translate, r.cutout) == (True, 2, 4)


def test_triangular_schedule_peaks_at_the_peak_epoch():
  r = recipes.get("resnet9")
  rates = r.learning_rates(35_000)  # 69 steps per epoch.
  steps = r.steps_per_epoch(35_000)
  assert steps == 69 and len(rates) == 24 * 69
  assert rates[0] == 0.0
  assert rates[5 * steps] == pytest.approx(0.5)
  assert rates.argmax() == 5 * steps
  assert np.all(np.diff(rates[:5 * steps]) > 0)
  assert np.all(np.diff(rates[5 * steps:]) < 0)
  assert rates[-1] == pytest.approx(0.5 / (19 * 69), rel=1e-5)


def test_every_setting_says_where_it_comes_from():
  for recipe in recipes.RECIPES.values():
    for key in ("epochs", "batch_size", "learning_rate", "momentum"):
      assert recipe.sources[key].startswith(("paper:", "ours:")), (
          recipe.name, key)
  released = recipes.get("released")
  assert released.sources["translate"].startswith("paper:")
  assert released.sources["epochs"].startswith("ours:")


def test_replace_marks_changes_as_ours():
  quick = recipes.get("resnet9").replace(epochs=2)
  assert quick.epochs == 2 and quick.sources["epochs"].startswith("ours:")
  assert quick.sources["batch_size"].startswith("paper:")
  with pytest.raises(errors.UsageError, match="no setting 'epoch'"):
    recipes.get("resnet9").replace(epoch=2)


def test_fewer_epochs_squeeze_the_schedule():
  # --epochs 2 on the released recipe (40 epochs peaking at 8) is the same
  # schedule in 2 epochs: up to the peak rate at 0.4, down to 0 at the end
  # (it used to ramp to the peak at epoch 2 and never decay).
  released = recipes.get("released")
  short = released.replace(epochs=2)
  assert short.peak_epoch == pytest.approx(0.4)
  rates = short.learning_rates(1000)  # 8 steps per epoch at batch 128.
  assert rates.max() == pytest.approx(released.learning_rate, rel=0.2)
  assert int(np.argmax(rates)) == 3  # Step 3.2 of 16.
  assert rates[-1] < 0.1 * rates.max()
  np.testing.assert_allclose(
      short.learning_rates(1000),
      np.interp(np.arange(16) / 8, [0, 0.4, 2], [0, released.learning_rate,
                                                   0]), rtol=1e-6)
  # An explicit peak wins; a constant schedule has none to move.
  assert released.replace(epochs=2, peak_epoch=1.0).peak_epoch == 1.0
  assert recipes.get("mnist-mlp").replace(epochs=3).peak_epoch == 0.0


def test_a_user_module_needs_a_recipe():
  assert recipes.for_model("", "small_inception").name == "released"
  assert recipes.for_model("", "mlp").name == "mnist-mlp"
  assert recipes.for_model("resnet9", "my_nets:build").name == "resnet9"
  with pytest.raises(errors.UsageError, match=r"--model my_nets:build is "
                     r"your own module: pass --recipe, one of mnist-mlp: .*; "
                     r"released: .*; resnet9: "):
    recipes.for_model("", "my_nets:build")


def test_bad_names_and_values():
  with pytest.raises(errors.UsageError, match="--recipe 'fast': unknown"):
    recipes.get("fast")
  with pytest.raises(errors.UsageError, match=r"epochs must be in \[1, "):
    recipes.get("resnet9").replace(epochs=0)
  with pytest.raises(errors.UsageError, match="schedule must be one of"):
    recipes.get("resnet9").replace(schedule="cosine")


@pytest.mark.parametrize("key, value, message", [
    ("epochs", 1e9, "must be an integer, got 1000000000.0"),
    ("epochs", 1.5, "must be an integer, got 1.5"),
    ("epochs", 10**9, "must be in [1, 10000]"),
    ("learning_rate", "0.1", "must be a number"),
    ("flip", 1, "must be true or false"),
    ("momentum", 1.0, "must be in [0, 1)"),
    ("schedule", "cosine", "must be one of constant, triangular"),
    ("peak", 1, "has no setting 'peak'"),
])
def test_a_recorded_recipe_is_checked_like_the_flags(key, value, message):
  recorded = recipes.get("resnet9").config()
  recorded[key] = value
  with pytest.raises(errors.ConfigError) as e:
    recipes.from_config(recorded, "c.json")
  assert str(e.value).startswith("c.json: key 'recipe")
  assert message in str(e.value)
  assert recipes.from_config(recipes.get("resnet9").config()) == (
      recipes.get("resnet9"))
