"""python -m heldout_tf.cli.quality: scores of any collection trained with
signals, training with recorded noise, refusals, no stale outputs."""

import csv
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from heldout_tf import synthetic
from heldout_tf import cli
from heldout_tf import collection
from heldout_tf.quality import detection
from heldout_tf.core import errors
from heldout_tf import estimates
from heldout_tf.data import sources
from heldout_tf.collection import layout
from heldout_tf.training import workflow as training_workflow
from heldout_tf.collection import provenance
from heldout_tf.data import noise
from heldout_tf.cli import quality
from heldout_tf.quality import workflow
from heldout_tf.collection import signals
from heldout_tf.cli import train
from heldout_tf import report

ROOT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N_TRAIN, N_TEST, CLASSES = 60, 16, 3
EXPERIMENT = "tiny-mlp"
# What the fixture's command scores (second-split forgetting included: its
# runs train --ssft_epochs 5, the command's default) and what runs trained
# by `heldout train --signals` alone give.
SCORED = ("memorization", "cscore", "loss", "tracin", "aum", "ssft",
          "confident_learning")
SCORED_WITHOUT_SSFT = tuple(s for s in SCORED if s != "ssft")
TRAIN_FLAGS = ["--model", "mlp", "--recipe", "mnist-mlp", "--epochs", "2",
               "--batch_size", "8", "--precision", "float32", "--ratios",
               "0.5", "--noprogress"]


def _npz(path, seed=0):
  """Three classes of 8x8 images whose brightness gives the class."""
  return synthetic.brightness_npz(path, N_TRAIN, N_TEST, CLASSES, seed)


@pytest.fixture(scope="module")
def noisy(tmp_path_factory):
  """A collection of 6 runs trained with label noise by the command, and
  its data file."""
  where = tmp_path_factory.mktemp("noisy")
  data = _npz(where / "tiny.npz")
  root = str(where / "runs")
  quality.main(["--root", root, "--dataset", "npz:" + data, "--noise",
                "label:0.2", "--noise", "input_uniform:0.1@1",
                "--num_runs", "6"] + TRAIN_FLAGS)
  return root, data


def _copy(noisy_root, tmp_path):
  root = str(tmp_path / "copy")
  shutil.copytree(noisy_root, root)
  return root


def _store(root):
  return collection.Store(root, EXPERIMENT, 0.5)


def _quality_dir(root):
  return os.path.join(_store(root).path, layout.QUALITY_DIRNAME)


def _train(root, data, signals_flag):
  training_workflow.make(train.parse_args(
      ["--dataset", "npz:" + data, "--model", "mlp", "--recipe",
       "mnist-mlp", "--epochs", "1", "--batch_size", "8", "--ratios", "0.5",
       "--num_runs", "3", "--precision", "float32", "--root", root,
       "--noprogress", signals_flag]), say=lambda *_: None)


def _run_cli(argv, capsys):
  """`(exit code, stderr lines)` of the command in this process."""
  with pytest.raises(SystemExit) as e:
    cli.run(quality.main, argv)
  return e.value.code, capsys.readouterr().err.strip().splitlines()


# ------------------------------------------------------------------ flags --


def test_parser_needs_no_tensorflow(imports_tensorflow):
  assert not imports_tensorflow(
      "from heldout_tf.cli import quality; "
      "quality.build_parser().format_help(); "
      "quality.parse_args(['--root', 'r']); "
      "quality.parse_args(['--dataset', 'mnist', '--num_runs', '4', "
      "'--noise', 'label:0.1'])")


@pytest.mark.parametrize("flags, message", [
    (["--model", "mlp"], "error: --model: training flags need --num_runs N"),
    (["--num_runs", "4", "--dataset", "mnist", "--noise", "gauss:0.1"],
     "error: --noise 'gauss:0.1': unknown kind"),
    (["--num_runs", "4", "--dataset", "mnist", "--ratios", "1"],
     "error: --ratios must be below 1"),
    (["--num_runs", "1", "--dataset", "mnist"],
     "error: --num_runs must be >= 2"),
    (["--ratios", "2"], "error: --ratios: "),
    (["--ratio", "0.5"], "error: unrecognized arguments: --ratio 0.5 (did "
     "you mean --ratios?)"),
    (["--out", "d"], "error: unrecognized arguments: --out d (did you mean "
     "--out_dir?)"),
    (["--bogus"], "error: unrecognized arguments: --bogus"),
])
def test_bad_flags_are_one_error_line_exit_2(flags, message, capsys):
  code, lines = _run_cli(flags, capsys)
  assert code == 2
  assert len(lines) == 1 and lines[0].startswith(message), lines


def test_train_flags_map_to_the_collection_options():
  options, train_options = quality.parse_args(
      ["--root", "r", "--dataset", "mnist", "--num_runs", "5", "--noise",
       "label:0.1", "--noise", "label_pair:0.05", "--seed", "3", "--epochs",
       "2", "--model_options", '{"hidden": [8]}'])
  assert options.root == "r" and options.ratio is None
  assert train_options.ratios == (0.7,) and train_options.num_runs == (5,)
  assert train_options.noise == "label:0.1,label_pair:0.05"
  assert train_options.seed == 3 and train_options.signals
  assert train_options.model_options == (("hidden", [8]),)


# ------------------------------------------------------------ end to end --


def test_training_with_noise_then_scoring_writes_every_output(noisy):
  root, data = noisy
  store = _store(root)
  config = store.recorded_config()
  assert config["noise"] == "label:0.2,input_uniform:0.1@1"
  assert config["signals"] is True
  # The noise is a function of (data, spec, seed): rebuilt here.
  clean = sources.load_npz(data)
  want = noise.apply(clean.train_images, clean.train_labels,
                     noise.parse(config["noise"]), 0, CLASSES)
  assert len(want.by_kind["label"]) == 12 and len(
      want.by_kind["input_uniform"]) == 6
  directory = _quality_dir(root)
  with np.load(os.path.join(directory, layout.SCORES_FILENAME)) as z:
    arrays = {k: z[k] for k in z.files}
  assert set(arrays) == (
      set(SCORED) | {f"num_nan_{s}" for s in SCORED} |
      {"memorization_se", "cscore_se", "noisy_idx", "noisy_idx_label",
       "noisy_idx_input_uniform", "labels", "clean_labels", "noise"})
  np.testing.assert_array_equal(arrays["noisy_idx"], want.noisy_idx)
  np.testing.assert_array_equal(arrays["noisy_idx_label"],
                                want.by_kind["label"])
  np.testing.assert_array_equal(arrays["labels"], want.labels)
  np.testing.assert_array_equal(arrays["clean_labels"], clean.train_labels)
  assert str(arrays["noise"]) == config["noise"]
  # Defined exactly where the runs make it defined, finite there.
  runs = estimates.load_runs(root, EXPERIMENT, progress=False)
  n_in, n_out = runs.mask.sum(0), (~runs.mask).sum(0)
  for name, defined in (("tracin", n_in > 0), ("aum", n_in > 0),
                        ("loss", n_out > 0), ("cscore", n_out > 0),
                        ("confident_learning", n_out > 0),
                        ("memorization", (n_in > 0) & (n_out > 0))):
    values = arrays[name]
    assert values.shape == (N_TRAIN,)
    np.testing.assert_array_equal(np.isfinite(values), defined, name)
    assert int(arrays[f"num_nan_{name}"]) == int((~defined).sum())
  assert defined.sum() > N_TRAIN // 2
  # detection.csv: every score's metrics against the rebuilt noise.
  with open(os.path.join(directory, layout.DETECTION_FILENAME)) as f:
    rows = list(csv.DictReader(f))
  assert [r["method"] for r in rows] == list(SCORED)
  for row in rows:
    want_metrics = detection.metrics(arrays[row["method"]], want.noisy_idx)
    for key in ("auc", "ap", "precision_at_k"):
      assert float(row[key]) == pytest.approx(want_metrics[key], abs=1e-5)
  with open(os.path.join(directory, layout.MANIFEST_FILENAME)) as f:
    manifest = json.load(f)
  assert manifest["files"] == sorted([
      layout.DETECTION_FILENAME, layout.REPORT_FILENAME,
      layout.SCORES_FILENAME, "roc.png", "precision_at_k.png",
      "top_suspicious.png"])
  assert manifest["settings"]["num_runs"] == 6
  with open(os.path.join(directory, layout.REPORT_FILENAME)) as f:
    assert "<html" in f.read(2000).lower()


def test_rescoring_an_existing_collection_gives_the_same_scores(
    noisy, tmp_path, capsys):
  root, data = noisy
  out = str(tmp_path / "out")
  # The npz file's path is recorded (config.json 'source'): found again
  # without --dataset; once it has moved, --dataset is needed.
  workflow.score(workflow.ScoreOptions(
      root, out=str(tmp_path / "found"), progress=False, report=False))
  moved = data + ".moved"
  os.rename(data, moved)
  with pytest.raises(provenance.ProvenanceError, match="pass --dataset"):
    workflow.score(workflow.ScoreOptions(root, out=out,
                                                     progress=False))
  os.rename(moved, data)
  quality.main(["--root", root, "--dataset", "npz:" + data, "--out_dir", out,
                "--noreport", "--noprogress"])
  assert f"Scored 6 runs of {_store(root).path}: 18 noisy of 60" in (
      capsys.readouterr().out)
  with np.load(os.path.join(out, layout.SCORES_FILENAME)) as a, np.load(
      os.path.join(_quality_dir(root), layout.SCORES_FILENAME)) as b:
    assert sorted(a.files) == sorted(b.files)
    for key in a.files:
      np.testing.assert_array_equal(a[key], b[key], key)
  with open(os.path.join(out, layout.DETECTION_FILENAME)) as a, open(
      os.path.join(_quality_dir(root), layout.DETECTION_FILENAME)) as b:
    assert a.read() == b.read()
  assert not os.path.exists(os.path.join(out, layout.REPORT_FILENAME))


def test_other_data_is_refused(noisy, tmp_path):
  root, _ = noisy
  other = _npz(tmp_path / "tiny.npz", seed=1)
  with pytest.raises(errors.ConfigError, match="not the data the runs"):
    workflow.score(workflow.ScoreOptions(
        root, dataset="npz:" + other, out=str(tmp_path / "o"),
        progress=False))


def test_a_collection_without_noise_has_no_detection_table(tmp_path):
  data = _npz(tmp_path / "tiny.npz")
  root = str(tmp_path / "runs")
  _train(root, data, "--signals")
  result = workflow.score(workflow.ScoreOptions(
      root, dataset="npz:" + data, report=False, progress=False))
  assert result.detection is None and not result.noise
  # No noise: no detection table, no ROC or precision curves.
  assert sorted(os.listdir(_quality_dir(root))) == [
      layout.MANIFEST_FILENAME, layout.SCORES_FILENAME,
      "top_suspicious.png"]
  assert [os.path.basename(p) for p in result.figures] == [
      "top_suspicious.png"]
  with np.load(result.paths["scores"]) as z:
    assert z["noisy_idx"].shape == (0,) and str(z["noise"]) == ""
    np.testing.assert_array_equal(z["labels"], z["clean_labels"])
    assert set(SCORED_WITHOUT_SSFT) <= set(z.files)
    assert "ssft" not in z.files


# --------------------------------------------------------------- refusals --


def test_a_collection_without_signals_is_one_error_line(tmp_path, capsys):
  data = _npz(tmp_path / "tiny.npz")
  root = str(tmp_path / "runs")
  _train(root, data, "--nosignals")
  code, lines = _run_cli(["--root", root, "--dataset", "npz:" + data],
                         capsys)
  assert code == 1 and len(lines) == 1
  assert lines[0].startswith(f"error: {_store(root).config_path}: the runs "
                             "were trained without per-epoch signals")
  assert "train the collection with --signals" in lines[0]


def test_signals_copied_from_another_run_are_refused(noisy, tmp_path):
  root = _copy(noisy[0], tmp_path)
  store = _store(root)
  shutil.copy(signals.signals_path(store.run_dir(1)),
              signals.signals_path(store.run_dir(0)))
  with pytest.raises(signals.SignalsError,
                     match=r"0/signals.npz: not the signals of its run.*"
                     "copied from another run"):
    workflow.score(workflow.ScoreOptions(
        root, dataset="npz:" + noisy[1], report=False, progress=False))


def test_missing_runs_and_files_are_named(noisy, tmp_path):
  root = _copy(noisy[0], tmp_path)
  store = _store(root)
  options = workflow.ScoreOptions(root, dataset="npz:" + noisy[1],
                                        progress=False)
  os.remove(signals.signals_path(store.run_dir(4)))
  with pytest.raises(workflow.QualityError,
                     match=r"4/signals.npz: missing"):
    workflow.score(options)
  os.remove(os.path.join(store.run_dir(2), layout.AUX_FILENAME))
  with pytest.raises(collection.IncompleteRunsError, match="runs 2"):
    workflow.score(options)
  with pytest.raises(workflow.QualityError, match="no runs at ratio "
                     "0.7"):
    workflow.score(workflow.ScoreOptions(root, ratio=0.7))


def test_which_collection(tmp_path):
  root = str(tmp_path)
  with pytest.raises(workflow.QualityError, match="no collection"):
    workflow.find_collection(root)
  for experiment, ratio in (("a", "0.5"), ("a", "0.7"), ("b", "0.5")):
    os.makedirs(os.path.join(root, experiment, ratio, "0"))
  with pytest.raises(errors.UsageError, match=r"2 experiments \(a, b\)"):
    workflow.find_collection(root)
  with pytest.raises(errors.UsageError, match="ratios 0.5, 0.7: pass "
                     "--ratios"):
    workflow.find_collection(root, "a")
  store = workflow.find_collection(root, "b")
  assert (store.experiment, store.ratio) == ("b", 0.5)
  assert workflow.find_collection(root, "a", 0.7).ratio == 0.7


# ------------------------------------------------------------ no stale mix --


def test_a_failed_rerun_leaves_no_stale_outputs(noisy, tmp_path):
  root = _copy(noisy[0], tmp_path)
  directory = _quality_dir(root)
  options = workflow.ScoreOptions(root, dataset="npz:" + noisy[1],
                                  report=True, progress=False)
  before = {n: open(os.path.join(directory, n), "rb").read()
            for n in os.listdir(directory)}
  # Failing while scoring: the previous complete set stays as it was.
  store = _store(root)
  shutil.copy(signals.signals_path(store.run_dir(1)),
              signals.signals_path(store.run_dir(0)))
  with pytest.raises(signals.SignalsError):
    workflow.score(options, write_report=report.write_for_quality)
  assert {n: open(os.path.join(directory, n), "rb").read()
          for n in os.listdir(directory)} == before
  # Failing while writing: the old outputs and manifest are gone, the new
  # ones written so far have no manifest.
  shutil.copy(signals.signals_path(os.path.join(noisy[0], EXPERIMENT, "0.5",
                                                "0")),
              signals.signals_path(store.run_dir(0)))
  with open(os.path.join(directory, layout.DETECTION_FILENAME), "w") as f:
    f.write("stale\n")

  def fail(**unused_kwargs):
    raise errors.PathError("report: disk full")

  with pytest.raises(errors.PathError, match="disk full"):
    workflow.score(options, write_report=fail)
  # A report asked for needs its writer (the quality stage never imports
  # the report's), refused before any work.
  with pytest.raises(ValueError, match="needs a write_report"):
    workflow.score(options)
  assert sorted(os.listdir(directory)) == [
      layout.DETECTION_FILENAME, "precision_at_k.png", "roc.png",
      layout.SCORES_FILENAME, "top_suspicious.png"]
  with open(os.path.join(directory, layout.DETECTION_FILENAME), "rb") as f:
    assert f.read() == before[layout.DETECTION_FILENAME]


# ------------------------------------------------------------------- noise --


def test_noise_on_uint8_images_keeps_uint8_and_touches_only_its_examples():
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (200, 6, 6, 3)).astype(np.uint8)
  labels = np.arange(200) % 4
  specs = noise.parse("label_pair:0.1,input_gaussian:0.1@0.5")
  got = noise.apply(images, labels, specs, seed=2, num_classes=4)
  assert got.images.dtype == np.uint8
  mixed = got.by_kind["input_gaussian"]
  changed = np.flatnonzero(np.any(got.images != images, axis=(1, 2, 3)))
  np.testing.assert_array_equal(changed, mixed)
  pair = got.by_kind["label_pair"]
  np.testing.assert_array_equal(got.labels[pair], (labels[pair] + 1) % 4)
  # The float formula at x = uint8 / 255, rounded back.
  as_float = noise.apply(images / 255.0, labels, specs, seed=2,
                         num_classes=4)
  np.testing.assert_array_equal(
      got.images[mixed], np.round(as_float.images[mixed] * 255).astype(
          np.uint8))


def test_the_train_command_records_noise_and_rebuilds_it(tmp_path):
  data = _npz(tmp_path / "tiny.npz")
  source = provenance.DataSource("npz:" + data, noise="label:0.25",
                                   seed=5)
  loaded, noisy = source.load_noisy()
  assert len(noisy.noisy_idx) == 15
  again = provenance.DataSource("npz:" + data, noise="label:0.25",
                                  seed=5).load()
  assert again.fingerprint() == loaded.fingerprint()
  assert provenance.DataSource("npz:" + data).load().fingerprint() != (
      loaded.fingerprint())
  options = train.parse_args(["--dataset", "npz:" + data, "--noise",
                              "label:0.25", "--seed", "5"])
  assert options.noise == "label:0.25"
  with pytest.raises(errors.UsageError, match="fractions must sum below 1"):
    train.parse_args(["--dataset", "npz:" + data, "--noise",
                      "label:0.5,label_pair:0.5"])


def test_entry_point_exit_codes(tmp_path):
  env = dict(os.environ, PYTHONPATH=ROOT_DIR)
  out = subprocess.run(
      [sys.executable, "-m", "heldout_tf.cli.quality", "--root",
       str(tmp_path / "none")], capture_output=True, text=True, env=env,
      cwd=ROOT_DIR, timeout=300)
  assert out.returncode == 1
  assert out.stderr.strip().splitlines() == [
      f"error: --root {tmp_path / 'none'}: no such directory"]
  out = subprocess.run(
      [sys.executable, "-m", "heldout_tf.cli.quality", "--help"],
      capture_output=True, text=True, env=env, cwd=ROOT_DIR, timeout=300)
  assert out.returncode == 0 and "--noise" in out.stdout


# ------------------------------------------------- after the README install --


def test_without_cleanlab_confident_learning_is_skipped_in_one_line(
    noisy, tmp_path, capsys, monkeypatch):
  # `pip install -e .` does not install the quality extra: the command
  # still scores, leaving confident learning out with one warning line.
  root, data = noisy
  monkeypatch.setitem(sys.modules, "cleanlab", None)  # Not importable.
  code, err = _run_cli(["--root", root, "--dataset", "npz:" + data,
                        "--out_dir", str(tmp_path / "out"), "--noreport",
                        "--noprogress"], capsys)
  assert code == 0
  assert err == ["warning: confident_learning skipped: it needs the "
                 "cleanlab package, which is not installed (pip install "
                 "cleanlab, or pip install -e '.[quality]')"]
  with np.load(tmp_path / "out" / layout.SCORES_FILENAME) as z:
    assert "confident_learning" not in z.files and "memorization" in z.files


def test_runs_and_signals_are_read_once(noisy, tmp_path, monkeypatch):
  root, _ = noisy
  counts = {"runs": 0, "signals": 0}

  def counted(name, function):
    def wrapper(*args, **kwargs):
      counts[name] += 1
      return function(*args, **kwargs)
    return wrapper

  monkeypatch.setattr(estimates, "load_runs_from",
                      counted("runs", estimates.load_runs_from))
  monkeypatch.setattr(estimates, "load_runs",
                      counted("runs", estimates.load_runs))
  monkeypatch.setattr(signals, "load_totals",
                      counted("signals", signals.load_totals))
  result = workflow.score(workflow.ScoreOptions(
      root, out=str(tmp_path / "once"), report=True, progress=False),
                          write_report=report.write_for_quality)
  assert "report" in result.paths
  assert counts == {"runs": 1, "signals": 1}


def test_help_describes_the_command():
  text = quality.build_parser().format_help()
  assert text.startswith("usage: heldout quality ")
  from heldout_tf.cli import commands  # pylint: disable=g-import-not-at-top
  out = subprocess.run(
      [sys.executable, "-c", "import sys; from heldout_tf.cli import "
       "commands; sys.exit(commands.main(['quality', '--help']))"],
      capture_output=True, text=True, cwd=ROOT_DIR, timeout=120,
      env=dict(os.environ, PYTHONPATH=ROOT_DIR)).stdout
  assert out.startswith("usage: heldout quality ")
  assert "Data-quality scores of any held-out collection" in out
  del commands
