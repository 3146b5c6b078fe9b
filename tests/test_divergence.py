"""A run whose loss or weights go non-finite is never recorded as finished:
both engines stop it after the epoch, naming the run and the epoch."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from heldout_tf import collection
from heldout_tf import synthetic
from heldout_tf.collection import layout
from heldout_tf.data import image_data
from heldout_tf.training import recipes
from heldout_tf.training import settings as settings_lib
from heldout_tf.training import stacked
from heldout_tf.training import steps
from heldout_tf.training import trainer as trainer_lib
from heldout_tf.training import workflow

ROOT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A user model whose logits turn NaN while `POISONED` is set (an edit of
# the module between two calls that keeps its variables).
POISON_MODULE = """
import sonnet as snt
import tensorflow as tf
POISONED = False
class Net(snt.Module):
  def __init__(self, num_classes):
    super().__init__()
    self.head = snt.Linear(num_classes)
  def __call__(self, images, is_training=False):
    logits = self.head(snt.flatten(images))
    return logits * float("nan") if POISONED else logits
def build(num_classes):
  return Net(num_classes)
"""


def _tiny(n_train=60, n_test=20, seed=0):
  arrays = synthetic.random_cifar_arrays(n_train, n_test, seed=seed)
  return image_data.ImageData(
      "tiny", "tiny", arrays["train"]["image"][..., :8, :8, :1],
      arrays["train"]["label"], arrays["test"]["image"][..., :8, :8, :1],
      arrays["test"]["label"], 10)


def _settings(trainer="group", precision="float32", learning_rate=0.05,
              epochs=2, model="mlp"):
  recipe = recipes.get("mnist-mlp").replace(epochs=epochs, batch_size=16,
                                             learning_rate=learning_rate)
  return settings_lib.TrainSettings(recipe, model, 0.7, precision=precision,
                                    trainer=trainer,
                                    model_options={"hidden": [16]})


@pytest.mark.parametrize("trainer,precision", [
    ("group", "float32"), ("group", "bfloat16"), ("group", "float16"),
    ("stacked", "float32"), ("stacked", "bfloat16")])
def test_a_huge_learning_rate_stops_the_run_in_its_first_epoch(
    trainer, precision):
  data = _tiny()
  settings = _settings(trainer, precision, learning_rate=1e30)
  from heldout_tf.training import engines  # pylint: disable=g-import-not-at-top
  engine = engines.make(trainer, settings, data, 2)
  with pytest.raises(steps.DivergedError) as info:
    engine.train([3, 4])
  message = str(info.value)
  assert message.startswith("run 3 diverged in epoch 1 of 2: its ")
  assert "--learning_rate (this run's is 1e+30)" in message
  assert ("--precision float32" in message) == (precision != "float32")
  assert "\n" not in message
  # float16: loss scaling skips the steps whose gradients overflow, so the
  # weights stay finite; the loss does not.
  if precision == "float16":
    assert "its loss became non-finite" in message
  # The engine trains sane settings afterwards (its notes were reset).
  engine = engines.make(trainer, _settings(trainer, precision), data, 2)
  assert len(engine.train([3, 4])) == 2


def test_a_model_with_batch_norm_is_checked_too():
  arrays = synthetic.random_cifar_arrays(24, 8, seed=0)
  data = image_data.ImageData(
      "tiny", "tiny", arrays["train"]["image"], arrays["train"]["label"],
      arrays["test"]["image"], arrays["test"]["label"], 10)

  def settings(learning_rate):
    recipe = recipes.get("resnet9").replace(epochs=1, batch_size=8,
                                             learning_rate=learning_rate)
    return settings_lib.TrainSettings(recipe, "resnet9", 0.7,
                                      model_options={"width": 0.125})

  # Integer variables (the batch-norm counters) are not checked; a sane
  # run passes.
  assert trainer_lib.RunTrainer(settings(0.1), data).train(0).run == 0
  with pytest.raises(steps.DivergedError, match="run 1 diverged in epoch 1 "
                     "of 1"):
    trainer_lib.RunTrainer(settings(1e30), data).train(1)


def test_loss_scaling_that_absorbs_an_overflow_is_not_a_divergence():
  data = _tiny()
  run_trainer = trainer_lib.RunTrainer(_settings(precision="float16"), data)
  plan = run_trainer.begin(0)
  run_trainer.state.loss_scale.assign(3e38)  # The scaled loss overflows.
  run_trainer.compiled_step(*plan.step_inputs(0, 0))
  assert run_trainer.state.loss_scale.numpy() == pytest.approx(1.5e38)
  run_trainer.check_finite(plan, 0)  # Absorbed: no error.


def test_weights_gone_non_finite_are_caught_even_with_a_finite_loss():
  data = _tiny()
  run_trainer = trainer_lib.RunTrainer(_settings(), data)
  plan = run_trainer.begin(5)
  run_trainer.model.variables[0].assign(
      tf.fill(run_trainer.model.variables[0].shape, np.inf))
  with pytest.raises(steps.DivergedError,
                     match="run 5 diverged in epoch 2 of 2: its weights"):
    run_trainer.end_epoch(plan, 1)


def test_a_model_gone_nan_keeps_the_finished_runs_and_records_nothing_of_it(
    tmp_path, monkeypatch):
  (tmp_path / "poison_nets.py").write_text(POISON_MODULE)
  monkeypatch.syspath_prepend(str(tmp_path))
  import poison_nets  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 3, 60)
  data = tmp_path / "d.npz"
  np.savez(data, x_train=rng.integers(0, 255, (40, 8, 8, 1), np.uint8),
           y_train=labels[:40],
           x_test=rng.integers(0, 255, (20, 8, 8, 1), np.uint8),
           y_test=labels[40:])
  root = tmp_path / "root"

  def options(num_runs):
    return workflow.Options(dataset=f"npz:{data}", model="poison_nets:build",
                            recipe="mnist-mlp", epochs=2, batch_size=8,
                            num_runs=(num_runs,), root=str(root),
                            precision="float32", trainer="group",
                            progress=False)

  workflow.make(options(2), say=lambda *_: None)
  store = collection.Store(str(root), "d-build", 0.7)
  before = {r: open(os.path.join(store.run_dir(r), layout.AUX_FILENAME),
                    "rb").read() for r in (0, 1)}
  monkeypatch.setattr(poison_nets, "POISONED", True)
  with pytest.raises(steps.DivergedError) as info:
    workflow.make(options(4), say=lambda *_: None)
  assert str(info.value).startswith(
      f"{store.path}: run 2 diverged in epoch 1 of 2: its loss")
  assert store.finished_runs() == [0, 1]
  assert before == {r: open(os.path.join(store.run_dir(r),
                                         layout.AUX_FILENAME), "rb").read()
                    for r in (0, 1)}
  # Nothing of run 2: no checkpoint, no partial checkpoint of a bad epoch.
  run2 = store.run_dir(2)
  assert not os.path.exists(run2) or not any(
      files for _, _, files in os.walk(run2))


def _train_digits(root, learning_rate: str):
  """`heldout train` on 300 of the digits, 2 runs of 2 epochs at
  `learning_rate`, in a fresh process."""
  env = dict(os.environ, PYTHONPATH=ROOT_DIR)
  return subprocess.run(
      [sys.executable, "-m", "heldout_tf.cli.train", "--dataset", "digits",
       "--train_size", "300", "--test_size", "50", "--model", "mlp",
       "--epochs", "2", "--num_runs", "2", "--learning_rate", learning_rate,
       "--precision", "float32", "--root", str(root), "--noprogress"],
      capture_output=True, text=True, env=env, cwd=ROOT_DIR, timeout=300)


def test_the_command_exits_non_zero_with_one_error_line(tmp_path):
  out = _train_digits(tmp_path, "1e30")
  assert out.returncode == 1, out.stderr
  last = out.stderr.strip().splitlines()[-1]
  assert last.startswith("error: ") and "run 0 diverged in epoch 1 of 2" in last
  assert "Traceback" not in out.stderr
  store = collection.Store(str(tmp_path), "digits-mlp", 0.7)
  assert not store.finished_runs() and not store.has_work()
  assert "mean test accuracy" not in out.stdout
  # The corrected call: nothing was trained under the recorded config, so
  # it is replaced (saying so) rather than refused.
  out = _train_digits(tmp_path, "0.05")
  assert out.returncode == 0, out.stderr
  assert (f"{store.config_path}: replaced (nothing was trained under it; "
          "recipe.learning_rate: on disk 1e+30, now 0.05)") in (
              out.stdout + out.stderr)
  assert store.finished_runs() == [0, 1]
  # Once a run is finished the config is the collection's: refused.
  out = _train_digits(tmp_path, "0.07")
  assert out.returncode != 0 and "made with other settings" in out.stderr


def test_stacked_engine_names_the_diverged_model_of_the_block():
  data = _tiny()
  engine = stacked.StackedTrainer(_settings("stacked"), data, 3)
  results = engine.train([0, 1, 2])  # Sane: all finite.
  assert len(results) == 3
  # A stack whose second model's weights went non-finite.
  stack = engine._stacks[3]  # pylint: disable=protected-access
  values = stack.params[0].numpy()
  values[1, 0, 0] = np.nan
  stack.params[0].assign(values)
  with pytest.raises(steps.DivergedError, match="run 7 diverged in epoch 2 "
                     "of 2: its weights"):
    engine._check_finite(stack, [6, 7, 8], 1)  # pylint: disable=protected-access
