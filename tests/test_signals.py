"""Tests of heldout_tf.collection.signals and their recording by heldout_tf.
training.trainer: per-epoch signals against independent computations from
the saved per-epoch checkpoints."""

import dataclasses
import io
import os
import shutil
import tracemalloc
import zipfile

import numpy as np
import pytest
import tensorflow as tf

from heldout_tf.collection import checkpoints
from heldout_tf.core import errors
from heldout_tf.collection import runs as runs_lib
from heldout_tf.collection import signals
from heldout_tf.data import image_data
from heldout_tf.data import sources
from heldout_tf.core import seeds
from heldout_tf.training import settings as settings_lib
from heldout_tf.training import trainer as trainer_lib
from heldout_tf import models
from heldout_tf.training import recipes

N = 120
HIDDEN = (32, 16)
LR = 0.1


@pytest.fixture(scope="module")
def digits():
  data = image_data.first_examples(sources.load("digits"), N, 20)
  return data


def _settings(epochs=3, **changes):
  recipe = recipes.get("mnist-mlp").replace(epochs=epochs, batch_size=16,
                                             learning_rate=LR)
  return settings_lib.TrainSettings(
      recipe, "mlp", 0.7, seed=3, model_options={"hidden": HIDDEN},
      signals=True, **changes)


def _independent(module, images, labels):
  """Per example: (margin, lr * ||dloss/dW_last||^2, softmax) by autodiff."""
  x = tf.constant(image_data.as_float(images).reshape(len(images), -1))
  y = tf.constant(np.asarray(labels, np.int64))
  last = module.layers[-1]
  with tf.GradientTape() as tape:
    logits = module(x)
    losses = tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits)
  grads = tape.jacobian(losses, last.w)  # [n, hidden, classes]
  tracin = LR * tf.reduce_sum(grads**2, axis=[1, 2]).numpy()
  logits = logits.numpy().astype(np.float64)
  margin = np.array([logits[i, labels[i]] - np.max(np.delete(logits[i],
                                                              labels[i]))
                     for i in range(len(labels))])
  probs = tf.nn.softmax(logits).numpy()
  return margin, tracin, probs


def test_signals_match_gradient_tape_at_each_checkpoint(digits, tmp_path):
  """A run's recorded sums equal margins, TracIn terms and held-out
  probabilities computed independently (autodiff) from the checkpoint of
  every epoch it kept."""
  settings = _settings()
  trainer = trainer_lib.RunTrainer(settings, digits)
  module = models.build_model("mlp", 10, hidden=HIDDEN)
  models.check_output(module, "mlp", digits.image_shape, 10)
  images, labels = digits.train_images, digits.train_labels
  for run in (4, 9):
    result = trainer.train(run, trajectory_dir=str(tmp_path / str(run)))
    got = trainer.run_signals(result)
    subset = got.subset
    np.testing.assert_array_equal(
        subset, seeds.subset_indices(settings.seed, run, N, settings.ratio))
    margin_sum = np.zeros(len(subset))
    tracin_sum = np.zeros(len(subset))
    correct = np.zeros(len(subset), int)
    for epoch in range(1, settings.recipe.epochs + 1):
      prefix = os.path.join(tmp_path, str(run), f"ckpt-{epoch}")
      assert checkpoints.restore(module, prefix).path == prefix
      margin, tracin, probs = _independent(module, images, labels)
      margin_sum += margin[subset]
      tracin_sum += tracin[subset]
      correct += margin[subset] > 0
    np.testing.assert_allclose(got.tracin_sum, tracin_sum, rtol=1e-4,
                               atol=1e-6)
    np.testing.assert_allclose(got.margin_sum, margin_sum, rtol=1e-4,
                               atol=1e-4)
    np.testing.assert_array_equal(got.correct_epochs, correct)
    # Out-of-sample probabilities: the last checkpoint, on the complement.
    np.testing.assert_array_equal(got.heldout,
                                  np.setdiff1d(np.arange(N), subset))
    np.testing.assert_allclose(got.heldout_probs, probs[got.heldout],
                               atol=1e-5)
    assert tracin_sum.min() > 0 and np.ptp(margin_sum) > 0


def test_forgetting_epoch_is_one_after_the_last_correct_epoch(
    digits, monkeypatch):
  """Scripted predictions: example j of the subset is right at the
  stages script[j] (0 = the end of the first phase, then the second
  phase's epochs 1..3)."""
  script = [{0, 1, 2, 3}, {0}, set(), {0, 2}, {1}]
  data = image_data.first_examples(digits, 7, 4)
  settings = dataclasses.replace(_settings(epochs=1), ratio=0.7,
                                 ssft_epochs=3)
  trainer = trainer_lib.RunTrainer(settings, data)
  subset = seeds.subset_indices(settings.seed, 0, 7, settings.ratio)
  assert len(subset) == len(script)
  stage = [0]

  def scripted(idx, chunk=512):
    del chunk
    labels = data.train_labels[idx]
    logits = np.zeros([len(idx), 10], np.float32)
    on_subset = np.array_equal(idx, subset)
    for j, label in enumerate(labels):
      right = on_subset and stage[0] in script[j]
      logits[j, label if right else (label + 1) % 10] = 1.0
    features = np.ones([len(idx), 2], np.float32)
    return features, logits

  def end_second_epoch(self, second, epoch):
    stage[0] = epoch + 1
    end(self, second, epoch)

  end = trainer_lib.RunTrainer.end_second_epoch
  monkeypatch.setattr(trainer, "features_and_logits", scripted)
  monkeypatch.setattr(trainer_lib.RunTrainer, "end_second_epoch",
                      end_second_epoch)
  got = trainer.run_signals(trainer.train(0))
  np.testing.assert_array_equal(got.forget_epoch, [4, 1, 0, 3, 2])
  assert got.ssft_epochs == 3


def _run_signals(n=6, subset=(0, 2, 3), value=1.0):
  subset = np.array(subset)
  heldout = np.setdiff1d(np.arange(n), subset)
  return signals.RunSignals(
      n_train=n, num_classes=3, epochs=2, learning_rate=LR, subset=subset,
      margin_sum=np.full(len(subset), value),
      correct_epochs=np.full(len(subset), 2, np.int32),
      tracin_sum=np.full(len(subset), 2 * value), heldout=heldout,
      heldout_probs=np.full([len(heldout), 3], 1 / 3, np.float32),
      ssft_epochs=1, forget_epoch=np.array([0, 1, 2], np.int32))


def _write_run(run_path, subset, n=6, n_test=2):
  """A run's aux_arrays.npz: trained on `subset` of `n` examples."""
  os.makedirs(run_path, exist_ok=True)
  subset = np.asarray(subset)
  removed = np.setdiff1d(np.arange(n), subset)
  runs_lib.write_aux(
      run_path, subsample_idx=subset,
      correctness={"train": np.ones(len(subset), bool),
                   "removed": np.zeros(len(removed), bool),
                   "test": np.ones(n_test, bool)},
      index={"train": subset, "removed": removed, "test": np.arange(n_test)})


def test_save_read_round_trip_and_rewrite_is_not_double_counted(tmp_path):
  path = str(tmp_path / "0" / signals.SIGNALS_FILENAME)
  _write_run(os.path.dirname(path), (0, 2, 3))
  first = _run_signals(value=1.0)
  first.save(path)
  back = signals.read_run_signals(os.path.dirname(path))
  for field in dataclasses.fields(signals.RunSignals):
    np.testing.assert_allclose(getattr(back, field.name),
                               getattr(first, field.name))
  # A resumed run rewrites its file: the totals count it once.
  _run_signals(value=3.0).save(path)
  totals = signals.load_totals([path], 6, 3, progress=False)
  assert totals.num_runs == 1
  np.testing.assert_array_equal(totals.n_in, [1, 0, 1, 1, 0, 0])
  np.testing.assert_array_equal(totals.margin_sum[[0, 2, 3]], 3.0)
  assert sorted(os.listdir(os.path.dirname(path))) == [
      runs_lib.AUX_FILENAME, signals.SIGNALS_FILENAME]  # No temporary left.


def test_bad_signals_files_name_file_and_key(tmp_path):
  path = str(tmp_path / "signals.npz")
  arrays = {f.name: getattr(_run_signals(), f.name)
            for f in dataclasses.fields(signals.RunSignals)}
  del arrays["tracin_sum"]
  np.savez(path, **arrays)
  with pytest.raises(signals.SignalsError, match="tracin_sum") as e:
    signals.read_run_signals(path)
  assert isinstance(e.value, errors.HeldoutError) and path in str(e.value)
  arrays["tracin_sum"] = np.zeros(5)
  np.savez(path, **arrays)
  with pytest.raises(signals.SignalsError, match="'tracin_sum' has shape"):
    signals.read_run_signals(path)
  with open(path, "wb") as f:
    f.write(b"PK\x03\x04 truncated")
  with pytest.raises(signals.SignalsError, match="cannot read"):
    signals.read_run_signals(path)
  with pytest.raises(signals.SignalsError, match="not found"):
    signals.read_run_signals(str(tmp_path / "none.npz"))
  totals = signals.Totals.zeros(7, 3)
  with pytest.raises(signals.SignalsError, match="n_train=6"):
    totals.add(_run_signals(), "run 0")


def test_signals_copied_from_another_run_are_refused(tmp_path):
  for run, subset in ((0, (0, 2, 3)), (3, (1, 4, 5))):
    _write_run(str(tmp_path / str(run)), subset)
    _run_signals(subset=subset).save(signals.signals_path(
        str(tmp_path / str(run))))
  paths = [str(tmp_path / r) for r in ("0", "3")]
  assert signals.load_totals(paths, 6, 3, progress=False).num_runs == 2
  # Run 0's file copied over run 3's: same sizes, other examples.
  shutil.copy(signals.signals_path(paths[0]), signals.signals_path(paths[1]))
  with pytest.raises(signals.SignalsError,
                     match="3/signals.npz: not the signals of its run.*"
                     r"\(other examples\); was it copied from another run"):
    signals.load_totals(paths, 6, 3, progress=False)
  # Settings of another collection (here: epochs) are refused too.
  _run_signals(subset=(1, 4, 5)).save(signals.signals_path(paths[1]))
  other = dataclasses.replace(_run_signals(subset=(1, 4, 5)), epochs=3)
  other.save(signals.signals_path(paths[1]))
  with pytest.raises(signals.SignalsError, match="differ from"):
    signals.load_totals(paths, 6, 3, progress=False)
  # And sizes other than the data's.
  with pytest.raises(signals.SignalsError, match="'n_train' is 6, but the "
                     "runs have 7"):
    signals.load_totals(paths[:1], 7, 3, progress=False)


@pytest.mark.parametrize("key,value,message", [
    ("n_train", np.float64(np.nan), "'n_train' has dtype float64, expected "
     "integer"),
    ("learning_rate", np.float64(np.nan), "'learning_rate' is nan, must be"),
    ("epochs", np.array("three"), "'epochs' has dtype <U5, expected integer"),
    ("num_classes", np.int64(0), "'num_classes' is 0, must be in"),
    ("epochs", np.array([2, 2]), r"'epochs' has shape \(2,\), expected "
     r"\(\)"),
    ("correct_epochs", np.array([0, 3, 1], np.int16),
     "'correct_epochs' must be in 0..2, has 3"),
])
def test_bad_metadata_is_a_signals_error(tmp_path, key, value, message):
  path = str(tmp_path / "signals.npz")
  _run_signals().save(path)
  with np.load(path) as npz:
    arrays = dict(npz)
  arrays[key] = value
  np.savez(path, **arrays)
  with pytest.raises(signals.SignalsError, match=message) as e:
    signals.read_run_signals(path)
  assert str(e.value).startswith(path)


def test_a_compressed_bomb_is_refused_before_it_inflates(tmp_path):
  # 18 000 x 4 000 float32 probabilities: 288 MB of zeros in ~0.3 MB.
  n, classes = 60_000, 4_000
  subset = np.arange(42_000)
  arrays = dict(n_train=n, num_classes=classes, epochs=1,
                learning_rate=0.1, ssft_epochs=0, subset=subset,
                margin_sum=np.zeros(42_000),
                correct_epochs=np.zeros(42_000, np.int16),
                tracin_sum=np.zeros(42_000),
                heldout=np.arange(42_000, n), forget_epoch=np.zeros(0),
                heldout_probs=np.zeros([18_000, classes], np.float32))
  path = str(tmp_path / "signals.npz")
  with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
    for key, value in arrays.items():
      buffer = io.BytesIO()
      np.save(buffer, np.asarray(value))
      zf.writestr(f"{key}.npy", buffer.getvalue())
  del arrays
  assert os.path.getsize(path) < 2 << 20
  tracemalloc.start()
  try:
    with pytest.raises(signals.SignalsError, match="more than the"):
      signals.read_run_signals(path)
    # Loading for scores expects the data's 10 classes: refused at once.
    with pytest.raises(signals.SignalsError, match="'num_classes' is 4000"):
      signals.load_totals([path], n, 10, progress=False)
    peak = tracemalloc.get_traced_memory()[1]
  finally:
    tracemalloc.stop()
  assert peak < 32 << 20


def test_tracin_terms_formula_and_margins():
  features = np.array([[3.0, 4.0]])  # ||a||^2 = 25
  logits = np.array([[0.0, 0.0]])  # p = (1/2, 1/2); label 0: ||p-y||^2 = 1/2
  np.testing.assert_allclose(signals.tracin_terms(features, logits, [0], 0.1),
                             [0.1 * 25 * 0.5])
  np.testing.assert_allclose(
      signals.margins(np.array([[1.0, 5.0, 2.0], [4.0, 1.0, 3.0]]), [0, 0]),
      [-4.0, 1.0])
