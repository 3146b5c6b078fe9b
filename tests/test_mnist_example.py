"""End to end: the MNIST reproduction (`mnist_example.train`), a preset of
the one training workflow, then the estimates, figures and report."""

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

from heldout_tf import cli
from heldout_tf import collection
from heldout_tf import models
from heldout_tf.collection import evaluation
from heldout_tf.collection import layout
from heldout_tf.collection import provenance
from heldout_tf.collection import runs as runs_lib
from heldout_tf.core import errors
from heldout_tf.data import pipelines
from heldout_tf.collection import checkpoints
from heldout_tf.training import workflow
from mnist_example import train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = dict(num_runs=6, epochs=2, train_size=600, test_size=200,
             dataset="digits")
# Tiny runs for the bit-identity tests: blocks of 2, five runs. float32:
# there a model's last bits may depend on its slot in the group.
TINY = dict(num_runs=5, epochs=1, batch_size=32, train_size=200,
            test_size=50, dataset="digits", group_size=2, stage="train",
            precision="float32")


def _argv(out, **flags):
  values = dict(SMALL, root=str(out))
  values.update(flags)
  argv = ["--noprogress"]
  for key, value in values.items():
    if isinstance(value, bool):
      argv.append(f"--{'' if value else 'no'}{key}")
    else:
      argv.append(f"--{key}={value}")
  return argv


def _run(out, **flags):
  """`mnist_example.train` with SMALL's flags changed by `flags`."""
  return train.run(*train.parse_args(_argv(out, **flags)))


def _store(out, ratio=0.7):
  return collection.Store(str(out), train.EXPERIMENT, ratio)


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
  (report,) = _run(out, group_size=3, stage="train")["train"]
  assert report["trained"] == 6
  return out


# ------------------------------------------------------------------ flags --


def test_the_preset_is_heldout_train_with_mnist_defaults():
  options, args = train.parse_args([])
  assert options == workflow.Options(
      root="./heldout_mnist", experiment="mnist-mlp", dataset="mnist",
      model="mlp", recipe="mnist-mlp", ratios=(0.7,), num_runs=(512,))
  assert args.stage == "all"
  # Every flag of `heldout train` is a flag here, with the same meaning.
  from heldout_tf.cli import train as train_command  # pylint: disable=g-import-not-at-top
  # pylint: disable=protected-access
  ours = {a.dest for a in train.build_parser()._actions}
  theirs = {a.dest for a in train_command.build_parser()._actions}
  # pylint: enable=protected-access
  assert theirs <= ours
  options, _ = train.parse_args(["--noprogress", "--precision=float32",
                                 "--nosave_checkpoints", "--root", "r",
                                 "--noise", "label:0.1"])
  assert not options.progress and options.precision == "float32"
  assert not options.save_checkpoints and options.root == "r"
  assert options.noise == "label:0.1"


def test_paper_preset_sets_the_reference_setup():
  options, _ = train.parse_args(["--preset=paper"])
  assert (options.num_runs, options.ratios, options.dataset,
          options.recipe) == ((2000,), (0.7,), "mnist:3.0.1", "mnist-mlp")
  options, _ = train.parse_args(["--preset", "paper", "--num_runs=50",
                                 "--dataset", "digits"])
  assert options.num_runs == (50,) and options.dataset == "digits"


@pytest.mark.parametrize("argv, match", [
    (["--num_runs=abc"], "error: argument --num_runs: invalid int"),
    (["--no_such_flag=1"], "error: unrecognized arguments: --no_such_flag"),
    (["extra"], "error: unrecognized arguments: extra"),
    (["--precision=half"], "error: argument --precision: invalid choice"),
    (["--out=x"], "error: unrecognized arguments: --out"),
    (["--ratio=0.5"], "error: unrecognized arguments: --ratio=0.5 (did you "
     "mean --ratios?)"),
    (["--label_noise=0.1"], "error: unrecognized arguments: "
     "--label_noise"),
    (["--group_size=-4"], "error: --group_size must be 0 (the recorded"),
    (["--ray_address=h:1"], "error: --ray_address needs --engine ray"),
    (["--infl_threshold=nan"], "error: --infl_threshold must be a finite"),
])
def test_bad_command_lines_exit_2_with_one_error_line(argv, match, capsys):
  with pytest.raises(SystemExit) as e:
    cli.run(train.main, argv)
  assert e.value.code == 2
  err = capsys.readouterr().err
  assert err.startswith(match) and err.count("\n") == 1, err


@pytest.mark.parametrize("flag, value", [
    ("group_size", -4), ("train_size", -3990), ("train_size", 1),
    ("test_size", -1), ("learning_rate", float("nan")),
    ("learning_rate", float("inf")), ("learning_rate", -0.1),
    ("num_runs", -1), ("num_runs", 0), ("epochs", -1), ("batch_size", -1),
    ("ratios", 0.0), ("ratios", 1.5), ("ratios", float("nan")),
    ("noise", "label:1.0"), ("shard", "3/2"), ("stage", "both"),
    ("precision", "half"),
])
def test_bad_flag_values_are_refused_before_any_work(tmp_path, flag, value):
  with pytest.raises(SystemExit) as e:
    cli.run(train.main, _argv(tmp_path, **{flag: value}))
  assert e.value.code == 2
  assert not os.listdir(tmp_path)


def test_help_needs_no_tensorflow(imports_tensorflow):
  assert not imports_tensorflow(
      "from mnist_example import train, quality; "
      "import heldout_tf.collection, heldout_tf.core.raycluster; "
      "train.build_parser().format_help(); "
      "quality.build_parser().format_help(); train.parse_args([])")


def test_importing_sets_no_env_var_and_defines_no_global_flag():
  code = ("import os, tensorflow, numpy; before = dict(os.environ); "
          "import mnist_example.train; from absl import flags; "
          "assert dict(os.environ) == before, set(os.environ) ^ set(before); "
          "assert 'num_runs' not in flags.FLAGS")
  subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO,
                 env=_env(), capture_output=True)


def test_training_does_not_import_the_figures(imports_tensorflow):
  # Only the estimate stage draws (and loads matplotlib).
  code = ("import mnist_example.train; "
          "assert 'heldout_tf.estimates.figures' not in sys.modules; "
          "assert 'matplotlib' not in sys.modules")
  imports_tensorflow("import sys; " + code)


# ------------------------------------------------------- outputs / resume --


def test_outputs_restore_and_reevaluate_to_recorded_correctness(small_run):
  config = _store(small_run).require_config()
  assert (config["model"], config["recipe"]["name"]) == ("mlp", "mnist-mlp")
  data, _ = provenance.load_recorded(config, "config.json")
  dataset = pipelines.in_memory_dataset(data.name, data.images, data.labels)
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


def test_rerun_skips_finished_runs_and_refuses_other_settings(small_run):
  aux = os.path.join(_store(small_run).run_dir(0), layout.AUX_FILENAME)
  before = os.stat(aux).st_mtime_ns
  (report,) = _run(small_run, stage="train")["train"]
  assert report["trained"] == 0
  assert os.stat(aux).st_mtime_ns == before
  # Only the setting that differs is named, nested keys by their path.
  with pytest.raises(errors.ConfigError) as e:
    _run(small_run, stage="train", epochs=3)
  assert "recipe.epochs: on disk 2, now 3" in str(e.value)
  assert "recipe.batch_size" not in str(e.value)


def test_a_collection_of_the_earlier_mnist_pipeline_is_refused_in_one_line(
    tmp_path):
  store = _store(tmp_path)
  store.record_config({"hidden": [512, 256], "label_noise": 0.0, "seed": 0,
                       "group_size": 2})  # As the earlier version wrote.
  for stage in ("train", "estimate"):
    with pytest.raises(errors.ConfigError, match="made by an earlier "
                       "version of mnist_example.train"):
      _run(tmp_path, stage=stage)


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
  assert f"{finished} already finished" in resumed.stdout
  _assert_same_runs(_aux(killed), _aux(whole))
  for run in range(10):
    a = tf.train.load_checkpoint(checkpoints.find_checkpoint(
        _store(whole).run_dir(run)))
    b = tf.train.load_checkpoint(checkpoints.find_checkpoint(
        _store(killed).run_dir(run)))
    for key in a.get_variable_to_shape_map():
      if key.startswith("model/"):
        np.testing.assert_array_equal(a.get_tensor(key), b.get_tensor(key))


# ------------------------------------------------------------- estimation --


@pytest.mark.slow
def test_label_noise_examples_come_out_memorized(tmp_path):
  from sklearn import metrics  # pylint: disable=g-import-not-at-top
  out = _run(tmp_path, num_runs=32, epochs=10, batch_size=32,
             train_size=1000, noise="label:0.1", save_checkpoints=False)
  (report,) = out["estimate"].values()
  paths = report["paths"]
  with np.load(paths["estimates"]) as f:
    saved = dict(f)
  _, noisy = provenance.load_recorded(_store(tmp_path).require_config(),
                                      "config.json")
  np.testing.assert_array_equal(saved["noisy_idx"], noisy.noisy_idx)
  assert len(noisy.noisy_idx) == 100
  mem = saved["memorization"]
  assert not np.isnan(mem).any()
  is_noisy = np.zeros(len(mem), bool)
  is_noisy[noisy.noisy_idx] = True
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
    _run(tmp_path, stage="estimate")
  (report,) = _run(small_run, stage="estimate")["estimate"].values()
  assert int(report["num_runs"]) == 6
  assert len(report["memorization"]) == 600
  for path in [report["paths"]["estimates"], report["paths"]["pairs"]]:
    assert os.path.exists(path)
  assert os.path.basename(report["paths"]["pairs"]) == (
      "digits_high_infl_pairs_infl0.15_mem0.25.npz")
  assert len(report["paths"]["figures"]) == 3
  # The browsable page, next to the figures, of this collection's 600
  # examples with their thumbnails.
  page = report["paths"]["report"]
  assert os.path.dirname(page) == os.path.dirname(report["paths"]["pairs"])
  with open(page, encoding="utf-8") as f:
    html = f.read()
  assert html.startswith("<!DOCTYPE html>") and "mnist-mlp" in html
  assert "data:image/png;base64," in html


def test_estimate_refuses_unfinished_or_extra_runs(small_run, tmp_path):
  out = tmp_path / "copy"
  shutil.copytree(small_run, out)
  estimates_path = os.path.join(_store(out).path, layout.ESTIMATES_FILENAME)
  if os.path.exists(estimates_path):  # From an earlier test.
    os.remove(estimates_path)
  # More runs on disk than --num_runs: not silently included.
  with pytest.raises(collection.IncompleteRunsError,
                     match=r"beyond --num_runs=5 \(runs 5\.\.5\)"):
    _run(out, num_runs=5, stage="estimate")
  # A killed job: run 4 has its checkpoint but no aux_arrays.npz.
  os.remove(os.path.join(_store(out).run_dir(4), layout.AUX_FILENAME))
  with pytest.raises(collection.IncompleteRunsError,
                     match=r"1 of the 6 runs .* runs 4\. .*--shard"):
    _run(out, stage="estimate")
  with pytest.raises(collection.IncompleteRunsError,
                     match="3 of the 8 runs .* runs 4, 6, 7"):
    _run(out, num_runs=8, stage="estimate")
  assert not os.path.exists(estimates_path)


def test_each_ratio_keeps_its_own_estimates_and_figures(small_run, tmp_path):
  out = tmp_path / "two_ratios"
  shutil.copytree(small_run, out)
  _run(out, ratios=0.5, group_size=6, stage="train")
  (at_07,) = _run(out, stage="estimate")["estimate"].values()
  (at_05,) = _run(out, ratios=0.5, stage="estimate")["estimate"].values()
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


# ---------------------------- runs independent of how they were trained --


def _run_files(out, run):
  """{relative path: bytes} of run `run`'s checkpoint files."""
  ckpt_dir = os.path.join(_store(out).run_dir(run),
                          layout.CHECKPOINTS_DIRNAME)
  files = {}
  for name in sorted(os.listdir(ckpt_dir)):
    with open(os.path.join(ckpt_dir, name), "rb") as f:
      files[name] = f.read()
  return files


def _assert_identical_runs(a, b, runs):
  """Aux arrays and checkpoints of `runs` are exactly equal in `a` and `b`."""
  for run in runs:
    aux_a, aux_b = [dict(np.load(os.path.join(_store(out).run_dir(run),
                                              layout.AUX_FILENAME)))
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
  (report,) = _run(out, **TINY)["train"]
  assert report["trained"] == 5
  return out


def test_shards_give_the_same_bytes_as_one_job(tiny_reference, tmp_path):
  for shard in ("1/2", "0/2"):
    out = _run(tmp_path, **dict(TINY, shard=shard, stage="all"))
  assert "estimate" not in out  # Sharded 'all': the last shard says so.
  _assert_identical_runs(tmp_path, tiny_reference, range(5))


def test_resume_of_a_partly_finished_block_gives_the_same_bytes(
    tiny_reference, tmp_path):
  # A kill after run 2 of block [2, 3] and before run 4: run 3 and run 4
  # are missing. Retrained, they must not depend on being the only two.
  out = tmp_path / "resumed"
  shutil.copytree(tiny_reference, out)
  for run in (3, 4):
    shutil.rmtree(_store(out).run_dir(run))
  aux_2 = os.path.join(_store(out).run_dir(2), layout.AUX_FILENAME)
  before = os.stat(aux_2).st_mtime_ns
  (report,) = _run(out, **TINY)["train"]
  assert report["trained"] == 2
  assert os.stat(aux_2).st_mtime_ns == before  # Finished runs not rewritten.
  _assert_identical_runs(out, tiny_reference, range(5))


def test_more_runs_later_equal_all_runs_at_once(tiny_reference, tmp_path):
  # --num_runs 3 pads block [2, 3] with run 3 (discarded); --num_runs 5
  # later trains runs 3 and 4 exactly as one job of 5 does.
  _run(tmp_path, **dict(TINY, num_runs=3))
  assert sorted(os.listdir(_store(tmp_path).path)) == ["0", "1", "2",
                                                       "config.json"]
  (report,) = _run(tmp_path, **TINY)["train"]
  assert report["trained"] == 2
  _assert_identical_runs(tmp_path, tiny_reference, range(5))
  # Estimating uses exactly --num_runs runs: the extra ones are refused.
  with pytest.raises(collection.IncompleteRunsError, match="beyond"):
    _run(tmp_path, **dict(TINY, num_runs=3, stage="estimate"))


def test_group_size_is_recorded_and_other_values_are_refused(
    tiny_reference, capsys):
  (report,) = _run(tiny_reference, **dict(TINY, group_size=0))["train"]
  assert report["trained"] == report["tasks"] == 0
  assert report["group_size"] == 2
  printed = capsys.readouterr().out
  assert "2 side by side (recorded in this --root's config.json)" in printed
  # One job, no sharding asked for: no "shard 0/1" in what it prints.
  assert "shard" not in printed
  with pytest.raises(errors.ConfigError,
                     match=r"--group_size 3 differs from the group size 2"):
    _run(tiny_reference, **dict(TINY, group_size=3))


def test_sharding_needs_an_explicit_group_size_the_first_time(tmp_path):
  with pytest.raises(errors.UsageError, match="--shard 0/2.*--group_size"):
    _run(tmp_path, **dict(TINY, group_size=0, shard="0/2"))


def test_default_group_size_is_resolved_once_and_read_back(tmp_path):
  (first,) = _run(tmp_path, **dict(TINY, group_size=0, num_runs=2))["train"]
  config = _store(tmp_path).require_config()
  assert config["group_size"] == first["group_size"] >= 1
  (again,) = _run(tmp_path, **dict(TINY, group_size=0))["train"]
  assert again["group_size"] == first["group_size"]


def test_precision_is_resolved_recorded_and_announced(tmp_path, capsys):
  flags = dict(TINY, num_runs=2)
  assert _run(tmp_path, **flags)["train"][0]["precision"] == "float32"
  assert "precision float32 (requested)" in capsys.readouterr().out
  config = _store(tmp_path).require_config()
  assert config["precision"] == "float32" and config["group_size"] == 2
  again = _run(tmp_path, **dict(flags, precision="auto"))
  assert again["train"][0]["precision"] == "float32"
  assert "precision float32 (recorded" in capsys.readouterr().out
  with pytest.raises(errors.ConfigError,
                     match="--precision bfloat16 .* differs .* float32"):
    _run(tmp_path, **dict(flags, precision="bfloat16"))


def test_sizes_larger_than_the_data_are_refused(tmp_path):
  with pytest.raises(errors.UsageError,
                     match="--train_size 9000 is larger than the 4000"):
    _run(tmp_path, train_size=9000)
  with pytest.raises(errors.UsageError, match="--test_size 1001"):
    _run(tmp_path, test_size=1001)


def test_root_that_is_a_file_is_a_path_error(tmp_path):
  out = tmp_path / "file"
  out.write_text("")
  for stage in ("train", "estimate"):
    with pytest.raises(errors.PathError, match="(?i)not a directory"):
      _run(out, **dict(TINY, stage=stage))


@pytest.mark.skipif(os.geteuid() == 0,
                    reason="root writes into read-only directories")
def test_read_only_root_is_a_path_error(tiny_reference, tmp_path):
  out = tmp_path / "ro"
  shutil.copytree(tiny_reference, out)
  os.chmod(_store(out).path, 0o500)
  try:
    with pytest.raises(errors.PathError, match="cannot write"):
      _run(out, **dict(TINY, stage="estimate"))
  finally:
    os.chmod(_store(out).path, 0o700)


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
  assert "precision float32 (requested)" in proc.stdout
  # No TensorFlow C++ start-up lines, no `\r` updates; whole runs.
  for noise in ("oneDNN", "cpu_feature_guard", "cuInit", "\r"):
    assert noise not in proc.stderr, proc.stderr
  assert "training: 3/3 runs (100%)" in proc.stderr
  assert "/3 runs" not in proc.stderr.replace("3/3 runs", "")
  bad = subprocess.run(
      [sys.executable, "-m", "mnist_example.train", f"--root={tmp_path}",
       "--group_size=-4"], cwd=REPO, env=env, capture_output=True, text=True)
  assert bad.returncode == 2
  assert bad.stderr.startswith("error: --group_size must be 0"), bad.stderr


def test_the_digits_fall_back_says_so_and_a_versioned_name_is_strict(
    tmp_path):
  from heldout_tf.data import sources  # pylint: disable=g-import-not-at-top
  data = sources.load("mnist", data_dir=str(tmp_path))
  assert data.name == "digits"
  assert "not prepared" in data.description and "digits" in data.description
  with pytest.raises(FileNotFoundError, match="mnist"):
    sources.load("mnist:3.0.1", data_dir=str(tmp_path))


def test_workflow_options_hold_every_flag_of_the_preset():
  options, _ = train.parse_args(["--seed", "3", "--trainer", "group"])
  assert dataclasses.replace(options, seed=0, trainer="auto") == (
      train.parse_args([])[0])
