"""TracIn train x test from trajectory checkpoints (heldout_tf.estimates.
tracin): the factorised scores against the last layer's real gradients, the
group effects against the dense scores, the learning rates against the
trainer's own self-influence, and TracIn as a method of `heldout lds`."""

import os

import numpy as np
import pytest
import tensorflow as tf

from heldout_tf import synthetic
from heldout_tf import cli
from heldout_tf import estimates
from heldout_tf import models
from heldout_tf.cli import lds as lds_cli
from heldout_tf.cli import train
from heldout_tf.collection import checkpoints
from heldout_tf.collection import layout
from heldout_tf.collection import signals as signals_lib
from heldout_tf.estimates import attributions
from heldout_tf.estimates import lds
from heldout_tf.estimates import tracin
from heldout_tf.training import recipes
from heldout_tf.training import workflow

EXPERIMENT = "d-mlp"
N_TRAIN, N_TEST, CLASSES = 40, 16, 3
TRAJECTORY_RUNS, NUM_RUNS, EPOCHS = 2, 14, 3


def _npz(path, seed=0):
  """Three classes of 8x8 images whose brightness gives the class."""
  return synthetic.brightness_npz(path, N_TRAIN, N_TEST, CLASSES, seed)


@pytest.fixture(scope="module")
def made(tmp_path_factory):
  """A group-engine MLP collection whose first runs keep their
  trajectories and signals; the ResNet-9 recipe's triangular schedule
  gives every epoch its own learning rate."""
  tmp = tmp_path_factory.mktemp("tracin")
  data = _npz(tmp / "d.npz")
  root = str(tmp / "runs")
  options = train.parse_args(
      ["--dataset", "npz:" + data, "--model", "mlp", "--recipe", "resnet9",
       "--epochs", str(EPOCHS), "--batch_size", "8", "--ratios", "0.5",
       "--num_runs", str(NUM_RUNS), "--trajectory_runs",
       str(TRAJECTORY_RUNS), "--signals", "--precision", "float32",
       "--root", root, "--noprogress"])
  workflow.make(options, say=lambda *_: None)
  return root, data


def _last_layer_gradients(model, images, labels):
  """float64 [n, d * classes]: d(cross-entropy)/dW of the last layer, one
  example at a time, by autodiff."""
  weights = model.layers[-1].w
  out = []
  for image, label in zip(images, labels):
    with tf.GradientTape() as tape:
      logits = model(tf.constant(image[None].astype(np.float32) / 255.0))
      loss = tf.nn.sparse_softmax_cross_entropy_with_logits(
          tf.constant([int(label)]), logits)
    out.append(tape.gradient(loss, weights).numpy().ravel())
  return np.asarray(out, np.float64)


def test_scores_are_the_sum_of_last_layer_gradient_products(made):
  root, data = made
  method = tracin.from_collection(root, EXPERIMENT)
  assert method.runs == [(0.5, r) for r in range(TRAJECTORY_RUNS)]
  assert method.num_checkpoints == TRAJECTORY_RUNS * EPOCHS
  # By hand: each checkpoint restored, each example's gradient with
  # respect to the last layer's weights by autodiff, summed over the
  # checkpoints with the rate of each epoch's last step, averaged over runs.
  loaded = np.load(data)
  recipe = recipes.get("resnet9").replace(
      epochs=EPOCHS, batch_size=8, peak_epoch=5 * EPOCHS / 24)
  size = N_TRAIN // 2
  steps = -(-size // 8)
  rates = recipe.learning_rates(size)
  model = models.build_model("mlp", CLASSES)
  models.ensure_built(model, shape=(8, 8, 1))
  want = np.zeros([N_TEST, N_TRAIN])
  for run in range(TRAJECTORY_RUNS):
    run_dir = layout.run_dir(root, EXPERIMENT, 0.5, run)
    for epoch in range(1, EPOCHS + 1):
      checkpoints.restore(
          model, os.path.join(run_dir, "trajectory", f"ckpt-{epoch}"))
      g_train = _last_layer_gradients(model, loaded["x_train"],
                                      loaded["y_train"])
      g_test = _last_layer_gradients(model, loaded["x_test"],
                                     loaded["y_test"])
      want += rates[epoch * steps - 1] * g_test @ g_train.T
  want /= TRAJECTORY_RUNS
  assert len(set(np.round(rates[steps - 1::steps], 6))) == EPOCHS
  got = method.scores(slice(0, N_TEST))
  np.testing.assert_allclose(got, want, rtol=1e-4,
                             atol=1e-5 * np.abs(want).max())
  np.testing.assert_allclose(method.scores(slice(3, 7)), got[3:7])
  # The group effects by the factorised sum: mask @ tau^T.
  mask = np.random.default_rng(0).random((5, N_TRAIN)) < 0.5
  np.testing.assert_allclose(method.group_effects(mask), mask @ got.T,
                             rtol=1e-9, atol=1e-12 * np.abs(got).max())


def test_learning_rates_and_features_are_the_trainers_self_influence(made):
  # The trainer's signals.npz sums lr * ||a||^2 * ||p - y||^2 over the same
  # epoch-end checkpoints, on the examples the run trained on.
  root, _ = made
  for run in range(TRAJECTORY_RUNS):
    method = tracin.from_collection(root, EXPERIMENT, run_ids=[run])
    run_dir = layout.run_dir(root, EXPERIMENT, 0.5, run)
    recorded = signals_lib.read_run_signals(
        signals_lib.signals_path(run_dir), N_TRAIN, CLASSES)
    mine = sum(t.learning_rate * np.sum(t.a_train**2, 1) *
               np.sum(t.r_train**2, 1) for t in method.terms())
    np.testing.assert_allclose(mine[recorded.subset], recorded.tracin_sum,
                               rtol=1e-5)


def test_tracin_is_a_method_of_lds_that_names_its_runs(made, capsys):
  root, _ = made
  eval_ids = range(TRAJECTORY_RUNS, NUM_RUNS)
  results, eval_runs = lds.lds(root, EXPERIMENT, eval_ids,
                               methods=["tracin"], min_eval_runs=4,
                               progress=False)
  (result,) = results
  assert result.name == (f"{tracin.NAME} (trajectories of 2 runs (ratio "
                         f"0.5: runs 0-1), {2 * EPOCHS} checkpoints)")
  assert result.num_fit_runs == TRAJECTORY_RUNS
  dense = tracin.from_collection(root, EXPERIMENT).scores(slice(0, N_TEST))
  (direct,) = lds.score(eval_runs, [attributions.Dense("dense", dense, ())],
                        min_eval_runs=4)
  np.testing.assert_allclose(result.per_example, direct.per_example,
                             atol=1e-9)
  # Judged on a run whose trajectory it used: refused.
  with pytest.raises(lds.LdsError, match="fitted on 1 of the"):
    lds.lds(root, EXPERIMENT, range(1, NUM_RUNS), methods=["tracin"],
            fit_run_ids=[0, 1], min_eval_runs=4, progress=False)
  # No trajectory among the fitting runs: one line saying how to get them.
  with pytest.raises(tracin.TracInError, match="--trajectory_runs"):
    lds.lds(root, EXPERIMENT, range(8, NUM_RUNS), methods=["tracin"],
            fit_run_ids=range(2, 8), min_eval_runs=4, progress=False)
  notes = []
  results, _ = lds.lds(root, EXPERIMENT, range(8, NUM_RUNS),
                       methods=[lds.ALL], fit_run_ids=range(2, 8),
                       min_eval_runs=4, progress=False, say=notes.append)
  assert [r.name for r in results] == [
      attributions.BUILTIN_NAMES[m] for m in attributions.FROM_RUNS]
  assert notes and "TracIn left out" in notes[0]
  # The command: every built-in method by default, the table written where
  # the report finds it.
  with pytest.raises(SystemExit) as exit_info:
    cli.run(lds_cli.main, ["--root", root, "--experiment", EXPERIMENT,
                           "--eval_runs", "8-13", "--min_eval_runs", "4",
                           "--noprogress"])
  out, err = capsys.readouterr()
  assert exit_info.value.code == 0, err
  assert f"{tracin.NAME} (trajectories of 2 runs" in out
  written = layout.attribution_path(root, EXPERIMENT, 0.5,
                                    layout.LDS_FILENAME)
  assert f"wrote {written}" in out
  saved = np.load(written)
  assert list(saved["methods"])[-1].startswith(tracin.NAME)
  assert saved["lds"].shape == (len(attributions.BUILTINS), N_TEST)
  # The result directory is no run.
  assert [r.run for r in estimates.find_runs(root, EXPERIMENT)] == list(
      range(NUM_RUNS))
