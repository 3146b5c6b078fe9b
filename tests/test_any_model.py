"""Any Sonnet module trains, evaluates and records signals: `is_training`
only where `__call__` names it, features of an `snt.Sequential`, one clear
line for a module that cannot work, a module found like `python -m`."""

import sys

import numpy as np
import pytest
import sonnet as snt
import tensorflow as tf

from heldout_tf import cli
from heldout_tf import models
from heldout_tf.cli import commands
from heldout_tf.collection import evaluation
from heldout_tf.core import errors
from heldout_tf.collection import exports


def sequential(num_classes=10):
  """The simplest user module: it takes only the images."""
  return snt.Sequential([snt.Flatten(), snt.Linear(16), tf.nn.relu,
                         snt.Linear(num_classes)])


def test_is_training_only_where_the_signature_names_it():
  assert not models.takes_is_training(sequential())
  assert not models.takes_is_training(snt.Linear(4))
  assert models.takes_is_training(snt.nets.MLP([4]))  # Dropout.
  for name in models.MODEL_NAMES:
    assert models.takes_is_training(models.build_model(name, 10)), name
  images = tf.ones((2, 8, 8, 1))
  model = sequential()
  logits = models.call(model, images, is_training=True)  # No TypeError.
  assert logits.shape == (2, 10)
  # Every call site goes through the helper: evaluation's compiled pass,
  # the checks, exports' inference function.
  np.testing.assert_array_equal(
      evaluation.compiled_forward(model)(images).numpy(), logits.numpy())
  models.check_output(model, "--model m:build", (8, 8, 1), 10)
  spec = exports.ModelSpec("e", "m:build", 10, "d", (8, 8, 1), "")
  np.testing.assert_array_equal(
      exports.inference_function(model, spec)(images).numpy(),
      logits.numpy())


def test_sequential_features_are_the_input_of_its_last_linear():
  model = sequential()
  images = tf.random.stateless_uniform((3, 8, 8, 1), seed=[1, 2])
  features, logits = models.features_and_logits(model, images)
  hidden = tf.nn.relu(model._layers[1](snt.flatten(images)))  # pylint: disable=protected-access
  np.testing.assert_allclose(features.numpy(), hidden.numpy(), rtol=1e-6)
  np.testing.assert_allclose(logits.numpy(), model(images).numpy(),
                             rtol=1e-6)
  models.check_output(model, "--model m:build", (8, 8, 1), 10, features=True)


class _Pooled(snt.Module):
  """A module with no features to offer."""

  def __init__(self, num_classes):
    super().__init__()
    self.head = snt.Linear(num_classes)

  def __call__(self, images):
    return self.head(tf.reduce_mean(images, axis=[1, 2]))


class _OwnFeatures(_Pooled):
  """The same, exposing its features (no is_training parameter)."""

  def features_and_logits(self, images):
    features = tf.reduce_mean(images, axis=[1, 2])
    return features, self.head(features)


def test_signals_say_what_a_module_must_expose():
  with pytest.raises(errors.UsageError, match=r"^--model m:f: the signals "
                     r"\(--signals\) need the model's features.*method "
                     r"features_and_logits\(images, is_training\).*"
                     r"snt.Sequential ending in an snt.Linear"):
    models.check_output(_Pooled(3), "--model m:f", (4, 4, 2), 3,
                        features=True)
  models.check_output(_Pooled(3), "--model m:f", (4, 4, 2), 3)  # Trains.
  own = _OwnFeatures(3)
  models.check_output(own, "--model m:f", (4, 4, 2), 3, features=True)
  features, _ = models.features_and_logits(own, tf.ones((2, 4, 4, 2)))
  assert features.shape == (2, 2)


class _Returns(snt.Module):
  """Returns what `make(images, logits)` makes of its logits."""

  def __init__(self, make, trainable=True):
    super().__init__()
    self.make, self.head = make, snt.Linear(3) if trainable else None

  def __call__(self, images):
    x = snt.flatten(images)
    logits = self.head(x) if self.head else tf.zeros([tf.shape(x)[0], 3])
    return self.make(images, logits)


@pytest.mark.parametrize("make,trainable,message", [
    (lambda x, y: y, False, "has no trainable variables"),
    (lambda x, y: tf.cast(y, tf.int32), True,
     r"returns int32 logits; expected logits \[2, 3\]"),
    (lambda x, y: y.numpy(), True,
     r"returns a numpy array float32\[2, 3\] for 2 images"),
    (lambda x, y: (y, y), True, r"returns a tuple of 2 for 2 images"),
])
def test_a_module_that_cannot_train_is_one_short_line(make, trainable,
                                                      message):
  with pytest.raises(errors.UsageError) as caught:
    models.check_output(_Returns(make, trainable), "--model m:f", (4, 4, 1),
                        3)
  text = str(caught.value)
  assert text.startswith("--model m:f: ") and "\n" not in text
  assert len(text) < 200 and "tf.Tensor(" not in text, text
  assert __import__("re").search(message, text), text


def test_model_options_are_checked_before_a_module_is_built():
  with pytest.raises(errors.UsageError, match=r"--model_options: 'bn_decay' "
                     r"must be a number in \(0, 1\), got 2"):
    models.build_model("resnet9", 10, bn_decay=2)
  with pytest.raises(errors.UsageError, match="'width' must be"):
    models.build_model("resnet9", 10, width=0)
  with pytest.raises(errors.UsageError, match="--model_options for mlp"):
    models.build_model("mlp", 10, depth=3)


def test_a_module_in_the_current_directory_is_found(tmp_path, monkeypatch,
                                                    capsys):
  # As `python -m` would: ./cwd_nets.py, named on the command line.
  (tmp_path / "cwd_nets.py").write_text(
      "import sonnet as snt\n"
      "def build(num_classes):\n"
      "  return snt.Sequential([snt.Flatten(), snt.Linear(num_classes)])\n")
  monkeypatch.chdir(tmp_path)
  sys.modules.pop("cwd_nets", None)
  assert str(tmp_path) not in sys.path and "" not in sys.path
  model = models.build_model("cwd_nets:build", 4)
  assert isinstance(model, snt.Sequential)
  assert str(tmp_path) not in sys.path  # Only while importing.
  sys.modules.pop("cwd_nets", None)
  np.savez(tmp_path / "d.npz",
           x_train=np.zeros((6, 4, 4), np.uint8), y_train=np.arange(6) % 2,
           x_test=np.zeros((2, 4, 4), np.uint8), y_test=np.arange(2))
  with pytest.raises(SystemExit) as exit_info:
    cli.run(commands.main, ["train", "--dataset", "npz:d.npz", "--model",
                            "cwd_nets:build", "--recipe", "mnist-mlp",
                            "--epochs", "1", "--num_runs", "2",
                            "--root", "runs", "--noprogress"])
  out, err = capsys.readouterr()
  assert exit_info.value.code == 0, err
  assert "trained 2 runs" in out
