"""End-to-end tests of the MNIST reproduction (mnist_example.train)."""

import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from heldout_tf.models import checkpoints
from heldout_tf.core import errors
from heldout_tf.collection import evaluation
from heldout_tf.collection import layout
from heldout_tf import models
from heldout_tf.collection import runs as runs_lib
from heldout_tf import cli
from heldout_tf import collection
from heldout_tf.training import ensemble
from mnist_example import data as data_lib
from mnist_example import figures
from mnist_example import train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = dict(num_runs=6, epochs=2, train_size=600, test_size=200,
             dataset="digits", progress=False)
# Tiny runs for the bit-identity tests: blocks of 2, five runs. float32:
# there a model's last bits depend on its slot in the group.
TINY = dict(num_runs=5, epochs=1, batch_size=32, train_size=200,
            test_size=50, dataset="digits", progress=False, group_size=2,
            stage="train", precision="float32")


def _options(out, **kwargs):
  values = dict(SMALL, root=str(out))
  values.update(kwargs)
  return train.Options(**values)


def _aux(out, ratio=0.7):
  return {found.run: runs_lib.read_aux(found.path) for found in
          layout.list_runs(str(out), train.EXPERIMENT, [ratio])}


def _num_finished(out, ratio=0.7):
  """Runs whose aux_arrays.npz is in place (the last file a run writes)."""
  return sum(os.path.exists(os.path.join(found.path, layout.AUX_FILENAME))
             for found in layout.list_runs(str(out), train.EXPERIMENT,
                                           [ratio]))


def _assert_same_runs(a, b):
  assert sorted(a) == sorted(b)
  for run in a:
    for key in runs_lib.AUX_KEYS:
      np.testing.assert_array_equal(a[run][key], b[run][key],
                                    err_msg=f"run {run} key {key}")


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
  """Six runs trained in groups of three, in-process."""
  out = tmp_path_factory.mktemp("small")
  report = train.run(_options(out, group_size=3, stage="train"))
  assert report["train"]["trained"] == 6
  return out


# ------------------------------------------------------------------- data --


def test_digits_split_is_stratified_fixed_and_disjoint():
  a, b = data_lib.load("digits"), data_lib.load("digits")
  np.testing.assert_array_equal(a.train_labels, b.train_labels)
  assert a.train_images.shape == (4000, 28, 28, 1)
  assert a.test_images.shape == (1000, 28, 28, 1)
  assert a.train_images.dtype == np.float32
  assert 0 <= a.train_images.min() and a.train_images.max() <= 1
  np.testing.assert_array_equal(np.bincount(a.test_labels), [100] * 10)
  np.testing.assert_array_equal(np.bincount(a.train_labels), [400] * 10)
  # Not sorted by label any more.
  assert np.mean(np.diff(a.train_labels) != 0) > 0.5
  train_rows = {x.tobytes() for x in a.train_images}
  assert not any(x.tobytes() in train_rows for x in a.test_images)


def test_label_noise_flips_a_seeded_fraction():
  labels = np.arange(1000) % 10
  noisy, idx = data_lib.add_label_noise(labels, 0.1, seed=3)
  assert len(idx) == 100 and len(np.unique(idx)) == 100
  np.testing.assert_array_equal(np.flatnonzero(noisy != labels), idx)
  assert noisy.min() >= 0 and noisy.max() <= 9
  again, idx2 = data_lib.add_label_noise(labels, 0.1, seed=3)
  np.testing.assert_array_equal(again, noisy)
  _, idx3 = data_lib.add_label_noise(labels, 0.1, seed=4)
  assert not np.array_equal(idx, idx3)
  clean, none = data_lib.add_label_noise(labels, 0.0, seed=3)
  np.testing.assert_array_equal(clean, labels)
  assert none.size == 0


@pytest.mark.parametrize("seed", [0, 1])
def test_label_noise_is_independent_of_every_runs_subset(seed):
  # Regression: noise drawn from [seed, 7] equalled run 7's subset stream
  # [seed, 7, 0], so on MNIST's 60 000 examples every flipped example was in
  # run 7's training set.
  n = 60000
  _, noisy_idx = data_lib.add_label_noise(np.arange(n) % 10, 0.1, seed)
  config = ensemble.TrainConfig(ratio=0.7, seed=seed)
  for run in range(16):
    subset = ensemble.subset_indices(config, run, n)
    inside = np.isin(noisy_idx, subset).mean()
    assert 0.5 < inside < 0.9, f"run {run}: {inside:.0%} of noise inside"


def test_auto_falls_back_to_digits_and_says_so(tmp_path):
  data = data_lib.load("auto", data_dir=str(tmp_path))
  assert data.name == "digits"
  assert "not prepared" in data.description and "digits" in data.description
  with pytest.raises(FileNotFoundError, match="mnist"):
    data_lib.load("mnist", data_dir=str(tmp_path))


# ----------------------------------------------------------------- shards --


def test_bad_shard_is_refused():
  for text in ("2/2", "1", "a/b", "0/0", "-1/2"):
    with pytest.raises(errors.UsageError, match="shard"):
      train.run(_options("/nonexistent", shard=text))


def test_sharded_training_equals_one_job(small_run, tmp_path, monkeypatch):
  loads = []

  def counting_load_data(*args, **kwargs):
    loads.append(args)
    return load_data(*args, **kwargs)

  load_data = train.load_data
  monkeypatch.setattr(train, "load_data", counting_load_data)
  for shard in ("1/2", "0/2"):
    loads.clear()
    report = train.run(_options(tmp_path, group_size=2, stage="all",
                                shard=shard))
    # Whole blocks of 2: shard 0/2 owns block 0, shard 1/2 blocks 1 and 2.
    assert report["train"]["trained"] == (2 if shard == "0/2" else 4)
    assert len(loads) == 1  # Stage 'all' estimates on the data it trained on.
  # The first shard stopped before estimating; the last one estimated.
  assert "estimate" in report
  _assert_same_runs(_aux(tmp_path), _aux(small_run))


# ------------------------------------------------------- outputs / resume --


def test_outputs_restore_and_reevaluate_to_recorded_correctness(small_run):
  data = train.load_data(_options(small_run))
  dataset = data.eval_dataset()
  model = models.ensure_built(models.build_model("mlp", 10), "mlp")
  found = layout.list_runs(str(small_run), train.EXPERIMENT)
  assert [f.run for f in found] == list(range(6))
  for run, path in [(f.run, f.path) for f in found]:
    info = checkpoints.restore(model, path)
    assert os.path.basename(info.path) == "ckpt-2" and info.epoch == 2
    aux = runs_lib.read_aux(path)
    assert len(aux["index_train"]) == 420 and len(aux["index_test"]) == 200
    for split in ("train", "test"):
      result = evaluation.evaluate(model, dataset, split, progress=False)
      check = evaluation.cross_check(aux, result, split)
      assert check.ok, f"run {run} {split}: {check}"
    # The model is not trivially always right or wrong.
    assert 0.5 < aux["correctness_test"].mean() < 1.0


def test_is_finished_needs_aux_and_checkpoint_only(small_run, tmp_path):
  shutil.copytree(small_run, tmp_path / "copy")
  store = train.store_for(_options(tmp_path / "copy"))
  path = store.run_dir(0)
  assert store.is_finished(0, need_checkpoint=True)
  shutil.rmtree(os.path.join(path, layout.CHECKPOINTS_DIRNAME))
  assert not store.is_finished(0, need_checkpoint=True)
  assert store.is_finished(0, need_checkpoint=False)
  os.remove(os.path.join(path, layout.AUX_FILENAME))
  assert not store.is_finished(0, need_checkpoint=False)


def test_training_does_not_import_the_figures():
  # Only --stage=estimate draws (and sets matplotlib's backend).
  code = ("import sys; import mnist_example.train; "
          "assert 'mnist_example.figures' not in sys.modules")
  subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO,
                 env=_env(), capture_output=True)


def test_rerun_skips_finished_runs_and_refuses_other_settings(small_run):
  aux = os.path.join(layout.run_dir(str(small_run), train.EXPERIMENT, 0.7,
                                      0), layout.AUX_FILENAME)
  before = os.stat(aux).st_mtime_ns
  report = train.run(_options(small_run, stage="train"))
  assert report["train"]["trained"] == 0
  assert os.stat(aux).st_mtime_ns == before
  with pytest.raises(errors.ConfigError, match="epochs: on disk 2, now 3"):
    train.run(_options(small_run, stage="train", epochs=3))


def _cli(out, *extra):
  return [sys.executable, "-m", "mnist_example.train", f"--root={out}",
          "--num_runs=10", "--epochs=3", "--train_size=1500",
          "--test_size=300", "--dataset=digits", "--group_size=2",
          "--stage=train", "--noprogress", *extra]


def _env():
  env = dict(os.environ)
  env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
  return env


@pytest.mark.slow
def test_resume_after_kill_equals_uninterrupted_run(tmp_path):
  whole, killed = tmp_path / "whole", tmp_path / "killed"
  subprocess.run(_cli(whole), check=True, cwd=REPO, env=_env(),
                 capture_output=True)
  proc = subprocess.Popen(_cli(killed), cwd=REPO, env=_env(),
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 120
  try:
    while _num_finished(killed) < 2 and time.time() < deadline:
      if proc.poll() is not None:
        break
      time.sleep(0.02)
  finally:
    proc.send_signal(signal.SIGKILL)
    proc.wait()
  finished = _num_finished(killed)
  assert 2 <= finished < 10, f"kill landed after {finished} runs"
  resumed = subprocess.run(_cli(killed), check=True, cwd=REPO, env=_env(),
                           capture_output=True, text=True)
  assert f"({finished} already finished)" in resumed.stdout
  _assert_same_runs(_aux(killed), _aux(whole))
  for run in range(10):
    a = tf.train.load_checkpoint(checkpoints.find_checkpoint(
        layout.run_dir(str(whole), train.EXPERIMENT, 0.7, run)))
    b = tf.train.load_checkpoint(checkpoints.find_checkpoint(
        layout.run_dir(str(killed), train.EXPERIMENT, 0.7, run)))
    for key in a.get_variable_to_shape_map():
      if key.startswith("model/"):
        np.testing.assert_array_equal(a.get_tensor(key), b.get_tensor(key))


# ------------------------------------------------------------- estimation --


@pytest.mark.slow
def test_label_noise_examples_come_out_memorized(tmp_path):
  from sklearn import metrics  # pylint: disable=g-import-not-at-top
  options = _options(tmp_path, num_runs=32, epochs=10, batch_size=32,
                     train_size=1000, label_noise=0.1,
                     save_checkpoints=False, stage="all")
  report = train.run(options)["estimate"]
  paths = report["paths"]
  with np.load(paths["estimates"]) as f:
    saved = dict(f)
  data = train.load_data(options)
  np.testing.assert_array_equal(saved["noisy_idx"], data.noisy_idx)
  assert len(data.noisy_idx) > 50
  mem = saved["memorization"]
  assert not np.isnan(mem).any()
  is_noisy = np.zeros(len(mem), bool)
  is_noisy[data.noisy_idx] = True
  auc = metrics.roc_auc_score(is_noisy, mem)
  assert auc >= 0.85, auc
  assert report["noise_auc"] == pytest.approx(auc)
  assert mem[is_noisy].mean() > mem[~is_noisy].mean() + 0.3
  with np.load(paths["pairs"]) as f:
    assert sorted(f.files) == ["infl", "mem", "tr_idx", "tt_idx"]
    assert np.all(f["infl"] >= 0.15) and np.all(f["mem"] >= 0.25)
  for figure in paths["figures"]:
    with open(figure, "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_estimate_stage_alone_needs_trained_runs(tmp_path, small_run):
  with pytest.raises(collection.MissingConfigError, match="train first"):
    train.run(_options(tmp_path, stage="estimate"))
  report = train.run(_options(small_run, stage="estimate"))["estimate"]
  assert int(report["num_runs"]) == 6
  assert len(report["memorization"]) == 600
  for path in [report["paths"]["estimates"], report["paths"]["pairs"]]:
    assert os.path.exists(path)
  assert len(report["paths"]["figures"]) == 3
  # The browsable page, next to the figures, of this collection's 600
  # examples with their thumbnails.
  page = report["paths"]["report"]
  assert os.path.dirname(page) == os.path.dirname(report["paths"]["pairs"])
  with open(page, encoding="utf-8") as f:
    html = f.read()
  assert html.startswith("<!DOCTYPE html>") and "mnist-mlp" in html
  assert "data:image/png;base64," in html


def test_estimate_stage_refuses_another_pipelines_collection(tmp_path):
  store = collection.Store(str(tmp_path), train.EXPERIMENT, 0.7)
  store.record_config({"noise": "label:0.1", "seed": 0})  # As quality's.
  with pytest.raises(errors.ConfigError, match="not a mnist_example.train "
                     "collection .*label_noise"):
    train.run(_options(tmp_path, stage="estimate"))


def test_estimate_refuses_unfinished_or_extra_runs(small_run, tmp_path):
  out = tmp_path / "copy"
  shutil.copytree(small_run, out)
  estimates_path = os.path.join(out, train.EXPERIMENT, "0.7",
                                layout.ESTIMATES_FILENAME)
  if os.path.exists(estimates_path):  # From an earlier test.
    os.remove(estimates_path)
  # More runs on disk than --num_runs: not silently included.
  with pytest.raises(ValueError,
                     match=r"beyond --num_runs=5 \(runs 5\.\.5\)"):
    train.run(_options(out, num_runs=5, stage="estimate"))
  # A killed job: run 4 has its checkpoint but no aux_arrays.npz.
  os.remove(os.path.join(layout.run_dir(str(out), train.EXPERIMENT, 0.7, 4),
                         layout.AUX_FILENAME))
  with pytest.raises(ValueError,
                     match=r"1 of the 6 runs .* runs 4\. .*--stage train"):
    train.run(_options(out, stage="estimate"))
  with pytest.raises(ValueError, match="3 of the 8 runs .* runs 4, 6, 7"):
    train.run(_options(out, num_runs=8, stage="estimate"))
  assert not os.path.exists(estimates_path)


def test_each_ratio_keeps_its_own_estimates_and_figures(small_run, tmp_path):
  out = tmp_path / "two_ratios"
  shutil.copytree(small_run, out)
  train.run(_options(out, ratio=0.5, group_size=6, stage="train"))
  at_07 = train.run(_options(out, stage="estimate"))["estimate"]
  at_05 = train.run(_options(out, ratio=0.5, stage="estimate"))["estimate"]
  for report, ratio in [(at_07, "0.7"), (at_05, "0.5")]:
    where = os.path.join(str(out), train.EXPERIMENT, ratio)
    paths = [report["paths"]["estimates"], report["paths"]["pairs"],
             *report["paths"]["figures"]]
    assert all(os.path.dirname(p) in (where, os.path.join(where, "figures"))
               for p in paths), paths
    assert all(os.path.exists(p) for p in paths)
  # Estimating at 0.5 left the 0.7 results alone.
  with np.load(at_07["paths"]["estimates"]) as f:
    np.testing.assert_array_equal(f["memorization"], at_07["memorization"])
  assert not np.array_equal(at_05["memorization"], at_07["memorization"],
                            equal_nan=True)


def test_noise_auc_is_the_tie_averaged_definition():
  from heldout_tf.quality import detection  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  scores = rng.integers(0, 5, 200).astype(float)
  positive = rng.choice(200, 30, replace=False)
  is_pos = np.zeros(200, bool)
  is_pos[positive] = True
  pos, neg = scores[is_pos], scores[~is_pos]
  expected = np.mean((pos[:, None] > neg[None]) +
                     0.5 * (pos[:, None] == neg[None]))
  assert detection.metrics(scores, positive)["auc"] == pytest.approx(expected)


# ------------------------------------------------------------------ flags --


def test_paper_preset_sets_the_reference_setup():
  options = train.parse_args(["--preset=paper"])
  assert (options.num_runs, options.ratio, options.epochs, options.batch_size,
          options.learning_rate, options.dataset) == (
              2000, 0.7, 10, 128, 0.1, "mnist")
  options = train.parse_args(["--preset", "paper", "--num_runs=50",
                              "--dataset", "digits"])
  assert options.num_runs == 50 and options.epochs == 10
  assert options.dataset == "digits"
  assert train.parse_args([]).num_runs == 512


def test_flag_defaults_are_the_options_defaults():
  assert train.parse_args([]) == train.Options()
  assert train.Options().root == "./heldout_mnist"
  # pylint: disable-next=protected-access
  flags = {a.dest for a in train.build_parser()._actions}
  assert {f.name for f in dataclasses.fields(train.Options)} <= flags
  options = train.parse_args(["--noprogress", "--precision=float32",
                              "--nosave_checkpoints", "--root", "r"])
  assert not options.progress and options.precision == "float32"
  assert not options.save_checkpoints and options.root == "r"


@pytest.mark.parametrize("argv, match", [
    (["--num_runs=abc"], "error: argument --num_runs: invalid int"),
    (["--no_such_flag=1"], "error: unrecognized arguments: --no_such_flag"),
    (["extra"], "error: unrecognized arguments: extra"),
    (["--precision=half"], "error: argument --precision: invalid choice"),
    (["--out=x"], "error: unrecognized arguments: --out"),
    (["--group_size=-4"], "error: --group_size must be >= 1, or 0"),
    (["--ray_address=h:1"], "error: --ray_address needs --engine ray"),
])
def test_bad_command_lines_exit_2_with_one_error_line(argv, match, capsys):
  with pytest.raises(SystemExit) as e:
    cli.run(train.main, argv)
  assert e.value.code == 2
  err = capsys.readouterr().err
  assert err.startswith(match) and err.count("\n") == 1, err


def test_help_needs_no_tensorflow():
  code = ("import sys; from mnist_example import train, quality; "
          "import heldout_tf.collection, heldout_tf.core.raycluster; "
          "train.build_parser().format_help(); "
          "quality.build_parser().format_help(); "
          "assert 'tensorflow' not in sys.modules, 'TF imported'")
  subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO,
                 env=_env(), capture_output=True)


# ------------------------------------- defect 5: runs independent of how --


def _run_files(out, run):
  """{relative path: bytes} of run `run`'s checkpoint files."""
  path = layout.run_dir(str(out), train.EXPERIMENT, 0.7, run)
  ckpt_dir = os.path.join(path, layout.CHECKPOINTS_DIRNAME)
  files = {}
  for name in sorted(os.listdir(ckpt_dir)):
    with open(os.path.join(ckpt_dir, name), "rb") as f:
      files[name] = f.read()
  return files


def _assert_identical_runs(a, b, runs):
  """Aux arrays and checkpoints of `runs` are exactly equal in `a` and `b`."""
  for run in runs:
    aux_a, aux_b = [dict(np.load(os.path.join(layout.run_dir(
        str(out), train.EXPERIMENT, 0.7, run), layout.AUX_FILENAME)))
                    for out in (a, b)]
    assert sorted(aux_a) == sorted(aux_b)
    for key in aux_a:
      assert aux_a[key].dtype == aux_b[key].dtype, (run, key)
      np.testing.assert_array_equal(aux_a[key], aux_b[key],
                                    err_msg=f"run {run} key {key}")
    assert _run_files(a, run) == _run_files(b, run), f"run {run} checkpoint"


@pytest.fixture(scope="module")
def tiny_reference(tmp_path_factory):
  """TINY's five runs trained in one job: blocks [0, 1], [2, 3], [4, (5)]."""
  out = tmp_path_factory.mktemp("tiny")
  assert train.run(_options(out, **TINY))["train"]["trained"] == 5
  return out


def test_shards_give_the_same_bytes_as_one_job(tiny_reference, tmp_path):
  for shard in ("1/2", "0/2"):
    train.run(_options(tmp_path, **dict(TINY, shard=shard)))
  _assert_identical_runs(tmp_path, tiny_reference, range(5))


def test_resume_of_a_partly_finished_block_gives_the_same_bytes(
    tiny_reference, tmp_path):
  # A kill after run 2 of block [2, 3] and before run 4: run 3 and run 4
  # are missing. Retrained, they must not depend on being the only two.
  out = tmp_path / "resumed"
  shutil.copytree(tiny_reference, out)
  for run in (3, 4):
    shutil.rmtree(layout.run_dir(str(out), train.EXPERIMENT, 0.7, run))
  aux_2 = os.path.join(layout.run_dir(str(out), train.EXPERIMENT, 0.7, 2),
                       layout.AUX_FILENAME)
  before = os.stat(aux_2).st_mtime_ns
  report = train.run(_options(out, **TINY))
  assert report["train"]["trained"] == 2
  assert os.stat(aux_2).st_mtime_ns == before  # Finished runs not rewritten.
  _assert_identical_runs(out, tiny_reference, range(5))


def test_more_runs_later_equal_all_runs_at_once(tiny_reference, tmp_path):
  # --num_runs 3 pads block [2, 3] with run 3 (discarded); --num_runs 5
  # later trains runs 3 and 4 exactly as one job of 5 does.
  train.run(_options(tmp_path, **dict(TINY, num_runs=3)))
  assert sorted(os.listdir(os.path.join(
      str(tmp_path), train.EXPERIMENT, "0.7"))) == ["0", "1", "2",
                                                    "config.json"]
  assert train.run(_options(tmp_path, **TINY))["train"]["trained"] == 2
  _assert_identical_runs(tmp_path, tiny_reference, range(5))
  # Estimating uses exactly --num_runs runs: the extra ones are refused.
  with pytest.raises(collection.IncompleteRunsError, match="beyond"):
    train.run(_options(tmp_path, **dict(TINY, num_runs=3, stage="estimate")))


def test_group_size_is_recorded_and_other_values_are_refused(
    tiny_reference, capsys):
  report = train.run(_options(tiny_reference, **dict(TINY, group_size=0)))
  assert report["train"]["trained"] == report["train"]["tasks"] == 0
  assert report["train"]["group_size"] == 2
  printed = capsys.readouterr().out
  assert "group size recorded in this --root's config.json" in printed
  # One job, no sharding asked for: no "shard 0/1" in what it prints.
  assert "shard" not in printed
  with pytest.raises(errors.ConfigError,
                     match=r"--group_size 3 differs from the group size 2"):
    train.run(_options(tiny_reference, **dict(TINY, group_size=3)))


def test_sharding_needs_an_explicit_group_size_the_first_time(tmp_path):
  with pytest.raises(errors.UsageError, match="--shard 0/2.*--group_size"):
    train.run(_options(tmp_path, **dict(TINY, group_size=0, shard="0/2")))


def test_auto_group_size_is_resolved_once_and_read_back(tmp_path, monkeypatch):
  monkeypatch.setattr(ensemble, "auto_group_size", lambda config: 3)
  options = _options(tmp_path, **dict(TINY, group_size=0, num_runs=2))
  assert train.run(options)["train"]["group_size"] == 2  # At most num_runs.
  monkeypatch.setattr(ensemble, "auto_group_size", lambda config: 4)
  options = _options(tmp_path, **dict(TINY, group_size=0))
  assert train.run(options)["train"]["group_size"] == 2


def test_precision_is_resolved_recorded_and_announced(tmp_path, capsys):
  options = _options(tmp_path, **dict(TINY, num_runs=2))
  assert train.run(options)["train"]["precision"] == "float32"
  assert "Precision: float32 (requested)." in capsys.readouterr().out
  config = train.store_for(options).recorded_config()
  assert config["precision"] == "float32" and config["group_size"] == 2
  again = train.run(dataclasses.replace(options, precision="auto"))
  assert again["train"]["precision"] == "float32"
  assert "Precision: float32 (recorded" in capsys.readouterr().out
  with pytest.raises(errors.ConfigError,
                     match="--precision bfloat16 .* differs .* float32"):
    train.run(dataclasses.replace(options, precision="bfloat16"))


# -------------------------------------- defects 10, 11: flags and paths --


@pytest.mark.parametrize("flag, value", [
    ("group_size", -4), ("train_size", -3990), ("train_size", 1),
    ("test_size", -1),
    ("learning_rate", float("nan")), ("learning_rate", float("inf")),
    ("learning_rate", 0.0), ("num_runs", -1), ("num_runs", 0),
    ("epochs", 0), ("batch_size", 0), ("ratio", 0.0), ("ratio", 1.5),
    ("ratio", float("nan")), ("label_noise", 1.0), ("label_noise", -0.1),
    ("label_noise", float("nan")), ("shard", "3/2"), ("stage", "both"),
    ("precision", "half"),
])
def test_bad_flag_values_are_refused_before_any_work(tmp_path, flag, value):
  with pytest.raises(errors.UsageError, match=f"--{flag}"):
    train.run(_options(tmp_path, **{flag: value}))
  assert not os.listdir(tmp_path)


def test_sizes_larger_than_the_data_are_refused(tmp_path):
  with pytest.raises(errors.UsageError,
                     match="--train_size 9000 is larger than the 4000"):
    train.run(_options(tmp_path, train_size=9000))
  with pytest.raises(errors.UsageError, match="--test_size 1001"):
    train.run(_options(tmp_path, test_size=1001))


def test_out_that_is_a_file_is_a_path_error(tmp_path):
  out = tmp_path / "file"
  out.write_text("")
  for stage in ("train", "estimate"):
    with pytest.raises(errors.PathError, match="Not a directory"):
      train.run(_options(out, **dict(TINY, stage=stage)))


@pytest.mark.skipif(os.geteuid() == 0,
                    reason="root writes into read-only directories")
def test_read_only_out_is_a_path_error(tiny_reference, tmp_path):
  out = tmp_path / "ro"
  shutil.copytree(tiny_reference, out)
  ratio_dir = os.path.join(str(out), train.EXPERIMENT, "0.7")
  os.chmod(ratio_dir, 0o500)
  try:
    with pytest.raises(errors.PathError, match="cannot write"):
      train.run(_options(out, **dict(TINY, stage="estimate")))
  finally:
    os.chmod(ratio_dir, 0o700)


# --------------------------------------------------- defect 12: friction --


def test_importing_sets_no_env_var_and_defines_no_global_flag():
  code = ("import os, tensorflow, numpy; before = dict(os.environ); "
          "import mnist_example.train; from absl import flags; "
          "assert dict(os.environ) == before, set(os.environ) ^ set(before); "
          "assert 'num_runs' not in flags.FLAGS")
  subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO,
                 env=_env(), capture_output=True)


def test_cli_output_is_quiet_and_counts_whole_runs(tmp_path):
  env = _env()
  env.pop("TF_CPP_MIN_LOG_LEVEL", None)
  proc = subprocess.run(
      [sys.executable, "-m", "mnist_example.train", f"--root={tmp_path}",
       "--num_runs=3", "--epochs=1", "--batch_size=32", "--train_size=200",
       "--test_size=50", "--dataset=digits", "--group_size=2",
       "--stage=train", "--precision=float32"],
      cwd=REPO, env=env, capture_output=True, text=True)
  assert proc.returncode == 0, proc.stderr
  assert "Precision: float32 (requested)." in proc.stdout
  # No TensorFlow C++ start-up lines, no `\r` updates; whole runs.
  for noise in ("oneDNN", "cpu_feature_guard", "cuInit", "\r"):
    assert noise not in proc.stderr, proc.stderr
  assert "training: 3/3 runs (100%)" in proc.stderr
  assert "/3 runs" not in proc.stderr.replace("3/3 runs", "")
  bad = subprocess.run(
      [sys.executable, "-m", "mnist_example.train", f"--root={tmp_path}",
       "--group_size=-4"], cwd=REPO, env=env, capture_output=True, text=True)
  assert bad.returncode == 2
  assert bad.stderr.startswith("error: --group_size must be >= 1, or 0"), (
      bad.stderr)


def test_most_memorized_ties_put_more_evidence_first():
  mem = np.array([1.0, 0.5, 1.0, 1.0, 0.0, 0.0, np.nan])
  n_out = np.array([2, 9, 5, 5, 1, 7, 0])
  most, least = figures.memorization_order(mem, n_out)
  np.testing.assert_array_equal(most, [2, 3, 0, 1, 5, 4, 6])
  np.testing.assert_array_equal(least, [5, 4, 1, 2, 3, 0, 6])


def test_printed_top_list_and_figure_order_ties_alike():
  from heldout_tf import estimates  # pylint: disable=g-import-not-at-top
  mem = np.array([0.5, 1.0, 1.0, 1.0, 0.25])
  n_out = np.array([3, 2, 9, 4, 5])
  result = {"ratios": [0.7], "runs_per_ratio": [12], "num_runs": 12,
            "n_train": 5, "n_test": 2, "num_never_held_out": 0,
            "num_never_trained": 0, "memorization": mem,
            "num_nan_memorization": 0, "n_out": n_out, "n_in": 12 - n_out}
  line = next(l for l in estimates.summary(result).splitlines()
              if l.startswith("top memorized"))
  printed = [int(item.split(":")[0].strip(" #"))
             for item in line.split(": ", 1)[1].split(", ")]
  assert printed == list(figures.memorization_order(mem, n_out)[0])
  assert printed == [2, 3, 1, 0, 4]


def test_tiny_negative_scores_keep_their_sign():
  assert figures.score_text(-0.0004) == "-4e-04"
  assert figures.score_text(0.0004) == "4e-04"
  assert figures.score_text(0.0) == "0.000"
  assert figures.score_text(-0.0123) == "-0.012"
  assert figures.score_text(1.0) == "1.000"


def test_memorization_captions_do_not_run_into_each_other():
  rng = np.random.default_rng(0)
  images = rng.random([40, 28, 28, 1])
  labels = rng.integers(0, 10, 40)
  mem = rng.random(40) - 0.5
  fig = figures.memorization_figure(
      images, labels, mem, noisy_idx=np.arange(0, 40, 3),
      clean_labels=(labels + 1) % 10, evidence=rng.integers(100, 999, 40))
  fig.canvas.draw()
  renderer = fig.canvas.get_renderer()
  boxes = [ax.title.get_window_extent(renderer) for ax in fig.axes
           if ax.title.get_text()]
  assert len(boxes) == 40
  overlaps = [(a, b) for k, a in enumerate(boxes) for b in boxes[k + 1:]
              if a.overlaps(b)]
  assert not overlaps
  # No caption runs into the images of the row below it either.
  images_boxes = [ax.get_window_extent(renderer) for ax in fig.axes
                  if ax.title.get_text()]
  for title in boxes:
    assert not any(title.overlaps(box) and title.y1 < box.y1 - 1
                   for box in images_boxes)
