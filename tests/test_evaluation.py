"""Re-evaluation of released-layout runs and cross-checks against aux_arrays."""

import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from conftest import EXPERIMENT, NUM_RUNS, RATIO
from heldout_tf.collection import checkpoints
from heldout_tf.data import image_data
from heldout_tf.data import pipelines
from heldout_tf.core import errors
from heldout_tf.core import files
from heldout_tf.collection import evaluation
from heldout_tf.collection import reevaluation
from heldout_tf.collection import layout
from heldout_tf.collection import margins
from heldout_tf import models
from heldout_tf.collection import experiments
from heldout_tf.collection import runs


@pytest.fixture(scope="module")
def dataset(cifar10):
  return pipelines.load("cifar10:3.0.2", data_dir=cifar10[0], download=False)


@pytest.fixture(scope="module")
def model():
  return models.ensure_built(models.build_model("small_inception", 10), "small_inception")


def run_path(root, run):
  return layout.run_dir(root, EXPERIMENT, RATIO, run)


@pytest.mark.parametrize("split", ["test", "train"])
def test_every_run_matches_its_aux_arrays(release_root, dataset, model,
                                          cifar10, split):
  _, arrays = cifar10
  for run in range(NUM_RUNS):
    checkpoints.restore(model, run_path(release_root, run))
    result = evaluation.evaluate(model, dataset, split, batch_size=20,
                                 progress=False)
    np.testing.assert_array_equal(result.index, np.arange(len(result.index)))
    np.testing.assert_array_equal(result.labels, arrays[split]["label"])
    check = evaluation.cross_check(runs.read_aux(run_path(release_root, run)),
                                   result, split)
    assert (check.matched, check.total) == (len(arrays[split]["label"]),) * 2
    assert str(check) == f"{check.total} out of {check.total} predictions match"


def test_runs_reuse_one_compiled_function(release_root, dataset):
  model = models.ensure_built(models.build_model("small_inception", 10), "small_inception")
  accuracies = []
  for run in range(NUM_RUNS):
    checkpoints.restore(model, run_path(release_root, run))
    accuracies.append(evaluation.evaluate(model, dataset, "test",
                                          progress=False).logits)
  assert evaluation.compiled_forward(model).experimental_get_tracing_count() \
      == 1
  assert not np.array_equal(accuracies[0], accuracies[1])  # Weights changed.


@pytest.mark.parametrize("split,key", [("test", "correctness_test"),
                                       ("train", "correctness_train"),
                                       ("train", "correctness_removed")])
def test_flipped_entries_are_reported(release_root, dataset, model, split,
                                      key):
  path = run_path(release_root, 0)
  checkpoints.restore(model, path)
  result = evaluation.evaluate(model, dataset, split, progress=False)
  aux = runs.read_aux(path)
  flip = np.array([0, 3, 5])
  aux[key] = aux[key].copy()
  aux[key][flip] = ~aux[key][flip]
  check = evaluation.cross_check(aux, result, split)
  flipped_index = aux["index_" + key.split("_")[1]][flip]
  assert check.total == len(result.index)
  assert check.matched == check.total - 3
  assert not check.ok
  np.testing.assert_array_equal(check.mismatched_index, np.sort(flipped_index))


def test_cross_check_refuses_other_examples(release_root, dataset, model):
  path = run_path(release_root, 0)
  result = evaluation.evaluate(model, dataset, "test", progress=False)
  aux = runs.read_aux(path)
  aux["index_test"] = aux["index_test"] + 1
  with pytest.raises(ValueError, match=r"covers 32 examples \(indices 1..32\)"):
    evaluation.cross_check(aux, result, "test")


def test_bad_split(dataset):
  with pytest.raises(ValueError, match="split must be 'train' or 'test'"):
    dataset.split("validation")


@pytest.mark.parametrize("in_tf_function", [False, True])
def test_op_errors_are_shown_without_the_trace(in_tf_function):
  text = "map /data/maps[v2]/index.csv lacks a]1.JPEG, b.JPEG"

  def fail(x):
    check = tf.debugging.Assert(tf.size(x) == 0, [tf.constant(text)])
    with tf.control_dependencies([check]):
      return tf.identity(x)

  inputs = tf.constant([1])
  with pytest.raises(tf.errors.InvalidArgumentError) as raised:
    if in_tf_function:
      tf.function(fail)(inputs)
    else:
      list(tf.data.Dataset.from_tensors(inputs).map(fail))
  assert evaluation.op_error_message(raised.value) == text
  with pytest.raises(tf.errors.InvalidArgumentError) as raised:
    tf.function(lambda: tf.io.decode_png(tf.constant(b"not a png")))()
  message = evaluation.op_error_message(raised.value)
  assert "Graph execution error" not in message and "[Op:" not in message
  assert message.strip(), raised.value.message


def test_unreadable_data_is_a_data_error_naming_the_split():
  def make_split(split):
    encoded = tf.data.Dataset.from_tensors(tf.constant(b"not an image"))
    return encoded.map(lambda e: {
        "image": tf.cast(tf.io.decode_png(e, channels=3), tf.float32),
        "label": tf.constant(0, tf.int64),
        "index": tf.constant(0, tf.int64)}), 1

  model = models.ensure_built(models.build_model("mlp", 10), "mlp")
  dataset = pipelines.Dataset("broken", make_split)
  with pytest.raises(image_data.DataError,
                     match=r"\(reading broken test\)$") as raised:
    evaluation.evaluate(model, dataset, "test", progress=False)
  assert "Traceback" not in str(raised.value)
  assert "[Op:" not in str(raised.value)


def test_evaluate_runs_restores_evaluates_and_checks_every_run(
    release_root, dataset, cifar10):
  _, arrays = cifar10
  paths = [run_path(release_root, run) for run in range(NUM_RUNS)]
  model = models.build_model("small_inception", 10)
  evaluated = list(reevaluation.evaluate_runs(
      experiments.get(EXPERIMENT, released_only=True), paths, dataset, "train", progress=False,
      model=model))
  assert [e.path for e in evaluated] == paths
  n_train = len(arrays["train"]["label"])
  for run, e in enumerate(evaluated):
    assert (e.info.epoch, e.info.global_step) == (20 + run, 1000 + run)
    assert e.check.ok and e.check.total == n_train
    assert e.subset_fraction == int(RATIO * n_train) / n_train
    assert e.restore_seconds >= 0 and e.evaluate_seconds >= 0
  # One model, one traced forward pass, different weights per run.
  assert evaluation.compiled_forward(model).experimental_get_tracing_count() \
      == 1
  assert not np.array_equal(evaluated[0].result.logits,
                            evaluated[1].result.logits)


def copy_root(release_root, tmp_path):
  root = str(tmp_path / "root")
  shutil.copytree(release_root, root)
  return root


def test_evaluate_runs_checks_every_run_first(release_root, dataset,
                                              tmp_path):
  root = copy_root(release_root, tmp_path)
  aux = os.path.join(run_path(root, 1), runs.AUX_FILENAME)
  os.remove(aux)
  results = reevaluation.evaluate_runs(
      experiments.get(EXPERIMENT, released_only=True), [run_path(root, 0), run_path(root, 1)],
      dataset, "test", progress=False)
  with pytest.raises(reevaluation.RunNotFoundError) as raised:
    next(results)  # Before run 0 is evaluated.
  assert isinstance(raised.value, errors.HeldoutError)
  assert str(raised.value) == (
      f"{run_path(root, 1)} has a checkpoint but no aux_arrays.npz ({aux} "
      "does not exist)")


def test_missing_files_says_what_is_missing(release_root, tmp_path):
  root = copy_root(release_root, tmp_path)
  path = run_path(root, 0)
  assert reevaluation.missing_files(path) is None
  shutil.rmtree(os.path.join(path, "checkpoints"))
  assert reevaluation.missing_files(path) == (
      f"{path} has aux_arrays.npz but no usable checkpoint: {path}: expected "
      "exactly one ckpt-<N> checkpoint, found no ckpt-<N>.index file. "
      "Directory contents: ['aux_arrays.npz']")
  assert reevaluation.missing_files(run_path(root, 9)) == (
      f"No run found at {run_path(root, 9)}")


def test_two_checkpoints_fail_the_file_check_not_the_loop(release_root,
                                                          tmp_path):
  """The file check finds checkpoints as the restore does: a run with two
  is refused before any run is evaluated."""
  root = copy_root(release_root, tmp_path)
  ckpt_dir = os.path.join(run_path(root, 1), "checkpoints")
  for name in os.listdir(ckpt_dir):
    shutil.copy(os.path.join(ckpt_dir, name),
                os.path.join(ckpt_dir, name.replace("ckpt-1001", "ckpt-5")))
  message = reevaluation.missing_files(run_path(root, 1))
  assert message.startswith(f"{run_path(root, 1)} has aux_arrays.npz but "
                            f"no usable checkpoint: {ckpt_dir}: expected "
                            "exactly one ckpt-<N> checkpoint, found 2")
  results = reevaluation.evaluate_runs(
      experiments.get(EXPERIMENT, released_only=True), [run_path(root, 0), run_path(root, 1)],
      dataset=None, split="test", progress=False)
  with pytest.raises(reevaluation.RunNotFoundError, match="found 2"):
    next(results)


def test_evaluate_runs_reads_the_split_once(release_root, dataset,
                                            monkeypatch):
  calls = []
  real = dataset.batches

  def counted(split, batch_size):
    calls.append(split)
    return real(split, batch_size)

  monkeypatch.setattr(dataset, "batches", counted)
  results = list(reevaluation.evaluate_runs(
      experiments.get(EXPERIMENT, released_only=True), [run_path(release_root, r)
                                 for r in range(NUM_RUNS)],
      dataset, "test", batch_size=7, progress=False))
  assert calls == ["test"]
  assert [r.check.ok for r in results] == [True] * NUM_RUNS
  # Over the byte budget the split streams, read on every pass.
  assert not isinstance(
      evaluation.read_split(dataset, "test", 7, max_bytes=1).batches, list)
  assert len(evaluation.read_split(dataset, "test", 7).batches) == 5


def test_evaluate_collection_selects_runs_like_the_flags(release_root,
                                                         cifar10, tmp_path):
  got = reevaluation.select_runs(release_root, EXPERIMENT, None, None)
  assert [(r.ratio, r.run) for r in got] == [(RATIO, r)
                                             for r in range(NUM_RUNS)]
  got = reevaluation.select_runs(release_root, EXPERIMENT, [RATIO], [2, 7])
  assert [(r.ratio, r.run) for r in got] == [(RATIO, 2), (RATIO, 7)]
  assert got[1].path == run_path(release_root, 7)
  with pytest.raises(reevaluation.RunNotFoundError,
                     match=f"^No run found at {run_path(release_root, 7)}"):
    next(reevaluation.evaluate_collection(release_root, EXPERIMENT, [RATIO],
                                        [2, 7], data_dir=cifar10[0]))
  with pytest.raises(reevaluation.RunNotFoundError, match="No run found under"):
    next(reevaluation.evaluate_collection(str(tmp_path), EXPERIMENT, None,
                                        None))
  done = list(reevaluation.evaluate_collection(
      release_root, EXPERIMENT, [RATIO], [1], data_dir=cifar10[0],
      progress=False))
  assert [(run.run, e.check.ok) for run, e in done] == [(1, True)]


def test_cross_check_error_of_evaluate_runs_names_the_aux_file(
    release_root, dataset, tmp_path):
  root = copy_root(release_root, tmp_path)
  path = run_path(root, 0)
  aux = runs.read_aux(path)
  aux["index_test"] = aux["index_test"] + 1
  files.save_npz(os.path.join(path, runs.AUX_FILENAME), **aux)
  with pytest.raises(evaluation.CrossCheckError,
                     match=f"^{path}/aux_arrays.npz: aux_arrays 'test' "
                     r"covers 32 examples \(indices 1..32\)") as raised:
    list(reevaluation.evaluate_runs(experiments.get(EXPERIMENT, released_only=True), [path], dataset,
                                  "test", progress=False))
  assert isinstance(raised.value, errors.HeldoutError)


def test_data_errors_are_heldout_errors(tmp_path):
  assert issubclass(image_data.DataError, errors.HeldoutError)
  with pytest.raises(errors.HeldoutError, match="not prepared in"):
    pipelines.load("cifar100:3.0.2", str(tmp_path)).split("test")
  with pytest.raises(errors.UsageError, match="ImageNet needs --data_dir"):
    pipelines.load("imagenet")


# ------------------------------------- margins of released-layout runs --


def _direct_margins(model, path, images, labels):
  """float64 margins of the run at `path`, from its checkpoint directly."""
  checkpoints.restore(model, path)
  logits = model(tf.constant(images, tf.float32) / 255.0,
                 is_training=False).numpy().astype(np.float64)
  own = logits[np.arange(len(labels)), labels]
  others = logits.copy()
  others[np.arange(len(labels)), labels] = -np.inf
  return own - others.max(1)


def test_evaluate_both_splits_records_each_runs_margins(
    release_root, cifar10, model, tmp_path):
  _, arrays = cifar10
  root = copy_root(release_root, tmp_path)
  done = list(reevaluation.evaluate_collection(
      root, EXPERIMENT, [RATIO], None, split="both", data_dir=cifar10[0],
      progress=False, record_margins=True))
  # One restore per run, train then test; the margins go with the test.
  assert [(run.run, e.check.split) for run, e in done] == [
      (r, s) for r in range(NUM_RUNS) for s in ("train", "test")]
  assert all(e.check.ok for _, e in done)
  assert [e.restore_seconds == 0 for _, e in done] == [False, True] * NUM_RUNS
  assert [e.margins is None for _, e in done] == [True, False] * NUM_RUNS
  for run in range(NUM_RUNS):
    path = run_path(root, run)
    record = done[2 * run + 1][1].margins
    assert record.written and str(record) == f"wrote {path}/margins.npz"
    got = margins.read(path)
    aux = runs.read_aux(path)
    for split, source in (("train", "train"), ("removed", "train"),
                          ("test", "test")):
      want = _direct_margins(model, path, arrays[source]["image"],
                             arrays[source]["label"])
      np.testing.assert_allclose(got[f"margin_{split}"],
                                 want[aux[f"index_{split}"]],
                                 rtol=1e-4, atol=1e-5)
  # The released file is left exactly as it was.
  for run in range(NUM_RUNS):
    with open(os.path.join(run_path(root, run), runs.AUX_FILENAME),
              "rb") as a, open(os.path.join(run_path(release_root, run),
                                            runs.AUX_FILENAME), "rb") as b:
      assert a.read() == b.read()


def test_a_run_whose_predictions_differ_gets_no_margins(release_root,
                                                         cifar10, tmp_path,
                                                         capsys):
  from heldout_tf.cli import evaluate as evaluate_cli  # pylint: disable=g-import-not-at-top
  root = copy_root(release_root, tmp_path)
  path = run_path(root, 1)
  aux = runs.read_aux(path)
  aux["correctness_test"][4] = ~aux["correctness_test"][4]
  files.save_npz(os.path.join(path, runs.AUX_FILENAME), **aux)
  code = evaluate_cli.main(["--root", root, "--experiment", EXPERIMENT,
                            "--ratios", str(RATIO), "--runs", "0-2",
                            "--split", "both", "--record", "margins",
                            "--data_dir", cifar10[0], "--noprogress"])
  out, err = capsys.readouterr()
  assert code == 1
  assert f"  margins: wrote {run_path(root, 0)}/margins.npz" in out
  assert (f"  margins: not written: {path}/margins.npz: key 'margin_test' "
          "disagrees with the run's 'correctness_test' at 1 example(s) "
          "(e.g. example 4") in out
  assert out.count("  train accuracy:") == out.count("  test accuracy:") == 3
  assert out.count(f"{EXPERIMENT} ratio") == 3
  assert err == ("Margins were not written for 1 run(s): their predictions "
                 "differ from the recorded correctness.\n")
  assert os.path.exists(margins.margins_path(run_path(root, 2)))
  assert not os.path.exists(margins.margins_path(path))


def test_recording_margins_needs_both_splits(release_root, capsys):
  with pytest.raises(errors.UsageError, match="needs split 'both'"):
    next(reevaluation.evaluate_collection(release_root, EXPERIMENT,
                                        record_margins=True))
  from heldout_tf import cli  # pylint: disable=g-import-not-at-top
  from heldout_tf.cli import evaluate as evaluate_cli  # pylint: disable=g-import-not-at-top
  with pytest.raises(SystemExit) as exit_info:
    cli.run(evaluate_cli.main, ["--root", release_root, "--record",
                                "margins"])
  assert exit_info.value.code == 2
  assert capsys.readouterr().err == (
      "error: --record margins needs --split both (margins of the whole "
      "training set and the test set), got --split test\n")


# ----------------------------------------- collections heldout train made --


@pytest.fixture(scope="module")
def kit_root(tmp_path_factory):
  """A root holding two collections heldout train made on 8x8 grey
  images (4 runs each, ratio 0.7, one epoch): the built-in MLP, and a
  user's snt.Sequential (my_seq.py in the root, found as python -m
  would)."""
  from heldout_tf.cli import train  # pylint: disable=g-import-not-at-top
  from heldout_tf.training import workflow  # pylint: disable=g-import-not-at-top
  root = tmp_path_factory.mktemp("kit")
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 3, 60)
  images = (rng.integers(0, 60, (60, 8, 8)) + 60 * labels[:, None, None]
            ).astype(np.uint8)
  np.savez(root / "d.npz", x_train=images[:44], y_train=labels[:44],
           x_test=images[44:], y_test=labels[44:])
  (root / "my_seq.py").write_text(
      "import sonnet as snt\nimport tensorflow as tf\n"
      "def build(num_classes):\n"
      "  return snt.Sequential([snt.Flatten(), snt.Linear(16), tf.nn.relu,\n"
      "                         snt.Linear(num_classes)])\n")
  here = os.getcwd()
  os.chdir(root)
  try:
    for model in ("mlp", "my_seq:build"):
      workflow.make(train.parse_args(
          ["--dataset", "npz:d.npz", "--model", model, "--recipe",
           "mnist-mlp", "--epochs", "1", "--batch_size", "8", "--num_runs",
           "4", "--root", "runs", "--noprogress", "--noise", "label:0.1"]),
                    say=lambda *_: None)
  finally:
    os.chdir(here)
  return root


def _heldout(argv, capsys, cwd=None):
  """`heldout <argv>` in-process: `(exit code, stdout, stderr)`."""
  from heldout_tf import cli  # pylint: disable=g-import-not-at-top
  from heldout_tf.cli import commands  # pylint: disable=g-import-not-at-top
  here = os.getcwd()
  if cwd:
    os.chdir(cwd)
  try:
    with pytest.raises(SystemExit) as exit_info:
      cli.run(commands.main, argv)
  finally:
    os.chdir(here)
  out, err = capsys.readouterr()
  return exit_info.value.code, out, err


def test_evaluate_any_collection_the_kit_made(kit_root, capsys):
  # Its recorded model and data (the noisy labels it trained with), no
  # --experiment needed when one is there... here two: name it.
  root = str(kit_root / "runs")
  code, out, err = _heldout(["evaluate", "--root", root, "--experiment",
                             "d-mlp", "--ratios", "0.7", "--runs", "0-3",
                             "--split", "both", "--require_match",
                             "--noprogress"], capsys)
  assert code == 0, err
  assert out.count("44 out of 44 predictions match") == 4
  assert out.count("16 out of 16 predictions match") == 4
  # A user module is imported only when named again.
  code, _, err = _heldout(["evaluate", "--root", root, "--experiment",
                           "d-build", "--noprogress"], capsys)
  assert code == 1 and "pass --model my_seq:build" in err
  code, out, err = _heldout(["evaluate", "--root", root, "--experiment",
                             "d-build", "--model", "my_seq:build", "--runs",
                             "0-3", "--require_match", "--noprogress"],
                            capsys, cwd=kit_root)
  assert code == 0, err
  assert out.count("16 out of 16 predictions match") == 4
  code, _, err = _heldout(["evaluate", "--root", root, "--noprogress"],
                          capsys)
  assert code == 2 and "holds 2 experiments (d-build, d-mlp)" in err


def test_export_any_collection_the_kit_made(kit_root, tmp_path, capsys):
  from heldout_tf.collection import exports  # pylint: disable=g-import-not-at-top
  run = str(kit_root / "runs" / "d-mlp" / "0.7" / "0")
  out = str(tmp_path / "mlp.onnx")
  code, stdout, err = _heldout(["export", "--run_dir", run, "--format",
                                "onnx", "--out", out], capsys)
  assert code == 0, err
  assert "parity" in stdout
  out = str(tmp_path / "seq.npz")
  seq_run = str(kit_root / "runs" / "d-build" / "0.7" / "1")
  code, _, err = _heldout(["export", "--run_dir", seq_run, "--format", "npz",
                           "--out", out], capsys)
  assert code == 1 and "pass --model my_seq:build" in err
  code, _, err = _heldout(["export", "--run_dir", seq_run, "--model",
                           "my_seq:build", "--format", "npz", "--out", out],
                          capsys, cwd=kit_root)
  assert code == 0, err
  arrays, meta = exports.read_weights(out)
  assert (meta["experiment"], meta["arch"]) == ("d-build", "my_seq:build")
  assert json_shape(meta) == ["batch", 8, 8, 1] and len(arrays) == 4
  code, _, err = _heldout(["export", "--run_dir", seq_run, "--experiment",
                           "d-mlp", "--model", "my_seq:build", "--format",
                           "npz", "--out", out], capsys)
  assert code == 2 and "is a run of d-build" in err


def json_shape(meta):
  import json  # pylint: disable=g-import-not-at-top
  return json.loads(meta["input_shape"])
