"""Tests of heldout_tf.data.noise and the MNIST preset of heldout_tf.cli.quality
(`mnist_example.quality`)."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from heldout_tf.collection import checkpoints
from heldout_tf.quality import detection
from heldout_tf.core import errors
from heldout_tf.collection import layout
from heldout_tf.quality import scores as scores_lib
from heldout_tf.collection import signals
from heldout_tf.data import noise
from mnist_example import quality

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# ------------------------------------------------------------------- noise --


def test_parse_noise_specs():
  specs = noise.parse(["label:0.1", "input_gaussian:0.05@0.3,input_uniform:0.02"])
  assert specs == [noise.NoiseSpec("label", 0.1),
                   noise.NoiseSpec("input_gaussian", 0.05, 0.3),
                   noise.NoiseSpec("input_uniform", 0.02,
                                   noise.DEFAULT_INTENSITY)]
  assert noise.describe(specs) == ("label:0.1,input_gaussian:0.05@0.3,"
                                   "input_uniform:0.02@0.5")
  assert noise.parse("") == []


@pytest.mark.parametrize("spec,message", [
    ("foo:0.1", "unknown kind 'foo'"),
    ("label", "expected kind:fraction"),
    ("label:abc", "must be numbers"),
    ("label:1.5", r"fraction must be in \[0, 1\)"),
    ("label:0.1@0.5", "take an @intensity"),
    ("input_uniform:0.1@0", r"intensity must be in \(0, 1\]"),
    ("label:0.1,label:0.2", "more than once"),
    ("label:0.6,label_pair:0.5", "sum below 1"),
])
def test_bad_noise_specs(spec, message):
  with pytest.raises(noise.NoiseSpecError, match=message) as e:
    noise.parse(spec)
  assert isinstance(e.value, errors.UsageError)
  assert "--noise" in str(e.value)


def test_noise_kinds_are_seeded_disjoint_and_recorded():
  rng = np.random.default_rng(0)
  images = rng.random([400, 28, 28, 1]).astype(np.float32)
  labels = np.arange(400) % 10
  specs = noise.parse("label:0.1,label_pair:0.05,input_gaussian:0.05@0.5,"
                      "input_uniform:0.05@1")
  got = noise.apply(images, labels, specs, seed=3)
  # `label` is exactly `flip_labels`, seeded alike.
  want_labels, want_idx = noise.flip_labels(labels, 0.1, 3, 10)
  np.testing.assert_array_equal(got.by_kind["label"], want_idx)
  np.testing.assert_array_equal(got.labels[want_idx], want_labels[want_idx])
  pair = got.by_kind["label_pair"]
  np.testing.assert_array_equal(got.labels[pair], (labels[pair] + 1) % 10)
  assert [len(got.by_kind[k]) for k in noise.KINDS] == [40, 20, 20, 20]
  all_idx = np.concatenate(list(got.by_kind.values()))
  assert len(np.unique(all_idx)) == len(all_idx) == 100  # Disjoint.
  np.testing.assert_array_equal(got.noisy_idx, np.sort(all_idx))
  changed_images = np.flatnonzero(np.any(got.images != images,
                                         axis=(1, 2, 3)))
  np.testing.assert_array_equal(changed_images, np.sort(np.concatenate(
      [got.by_kind["input_gaussian"], got.by_kind["input_uniform"]])))
  changed_labels = np.flatnonzero(got.labels != labels)
  np.testing.assert_array_equal(changed_labels, np.sort(np.concatenate(
      [got.by_kind["label"], pair])))
  # Intensity 1: pure uniform noise in [0, 1].
  uniform = got.images[got.by_kind["input_uniform"]]
  assert uniform.min() >= 0 and uniform.max() <= 1
  assert abs(uniform.mean() - 0.5) < 0.01
  np.testing.assert_array_equal(got.clean_labels, labels)
  again = noise.apply(images, labels, specs, seed=3)
  np.testing.assert_array_equal(again.images, got.images)
  other = noise.apply(images, labels, specs, seed=4)
  assert not np.array_equal(other.noisy_idx, got.noisy_idx)


@pytest.mark.parametrize("n", [2, 5, 11, 1000, 1999, 2000])
def test_fractions_summing_below_one_never_ask_for_more_than_n(n):
  # Rounded one by one, three quotas of 0.3331 n could exceed n (n = 5:
  # 2 + 2 + 2); allocated jointly they never do.
  specs = noise.parse("label_pair:0.3331,input_gaussian:0.3331,"
                      "input_uniform:0.3331")
  counts = noise.counts(specs, n)
  assert sum(counts.values()) == round(0.9993 * n) <= n
  assert all(abs(c - 0.3331 * n) < 1 for c in counts.values())
  images = np.random.default_rng(0).random([n, 28, 28, 1]).astype(np.float32)
  got = noise.apply(images, np.arange(n) % 10, specs, seed=1)
  assert [len(got.by_kind[k]) for k in noise.KINDS[1:]] == [
      counts[k] for k in noise.KINDS[1:]]
  assert len(got.noisy_idx) == sum(counts.values())  # Disjoint.
  # With `label` (rounded as data.add_label_noise does), still at most n.
  specs = noise.parse("label:0.6,input_uniform:0.3999")
  counts = noise.counts(specs, n)
  assert counts["label"] == round(0.6 * n) and sum(counts.values()) <= n
  assert len(noise.apply(images, np.arange(n) % 10, specs, 1).noisy_idx) == (
      sum(counts.values()))


# ---------------------------------------------------------------- pipeline --

TINY = ["--num_runs", "6", "--group_size", "4", "--epochs", "2",
        "--ssft_epochs", "2", "--train_size", "300", "--test_size", "100",
        "--removal_models", "2", "--removal_fractions", "0.05,0.1",
        "--trajectory_runs", "1", "--dataset", "digits", "--noprogress"]


def _read_csv(path):
  with open(path) as f:
    return list(csv.DictReader(f))


def test_the_preset_is_heldout_quality_with_mnist_defaults():
  from heldout_tf.cli import quality as general  # pylint: disable=g-import-not-at-top
  preset, preset_training = quality.parse_args([])
  spelled_out, training_options = general.parse_args([
      "--root", "./heldout_quality", "--experiment", "mnist-mlp",
      "--dataset", "mnist", "--model", "mlp", "--recipe", "mnist-mlp",
      "--num_runs", "128", "--group_size", "16", "--precision", "float32",
      "--noise", "label:0.1", "--ssft_epochs", "5", "--removal_models", "4",
      "--trajectory_runs", "4"])
  assert preset == spelled_out and preset_training == training_options
  # The module docstring shows that command: keep them in step.
  assert "--ssft_epochs 5 --removal_models 4 --trajectory_runs 4" in (
      quality.__doc__)
  # Given noise replaces the preset's, it is not added to it.
  _, noisy = quality.parse_args(["--noise", "input_uniform:0.05"])
  assert noisy.noise == "input_uniform:0.05"


@pytest.mark.slow
def test_cli_end_to_end_writes_every_file(tmp_path, capsys):
  from heldout_tf import models  # pylint: disable=g-import-not-at-top
  out = str(tmp_path / "q")
  quality.main(["--root", out, "--noise", "label:0.1",
                "--noise", "input_uniform:0.05@0.8"] + TINY)
  printed = capsys.readouterr().out
  root = os.path.join(out, quality.EXPERIMENT, "0.7")
  directory = os.path.join(root, layout.QUALITY_DIRNAME)
  for name in ("scores.npz", "detection.csv", "removal.csv", "roc.png",
               "precision_at_k.png", "removal.png", "top_suspicious.png",
               "report.html", "manifest.json"):
    assert os.path.getsize(os.path.join(directory, name)) > 0, name
  with np.load(os.path.join(directory, "scores.npz")) as npz:
    keys = set(npz.files)
    assert set(scores_lib.SCORES) | {
        "noisy_idx", "labels", "clean_labels", "memorization_se",
        "cscore_se", "noisy_idx_label", "noisy_idx_input_uniform"} <= keys
    assert npz["noisy_idx"].shape == (45,)
    for name in scores_lib.SCORES:
      assert npz[name].shape == (300,)
      assert npz[f"num_nan_{name}"] == np.isnan(npz[name]).sum()
  detection_rows = _read_csv(os.path.join(directory, "detection.csv"))
  assert tuple(detection_rows[0]) == detection.DETECTION_COLUMNS
  assert [r["method"] for r in detection_rows] == list(scores_lib.SCORES)
  removal_rows = _read_csv(os.path.join(directory, "removal.csv"))
  assert tuple(removal_rows[0]) == detection.REMOVAL_COLUMNS
  assert len(removal_rows) == 1 + 2 * (len(scores_lib.SCORES) + 1)
  assert "precision_at_k" in printed and "confident_learning" in printed
  assert "Removal ablation" in printed
  # Per-epoch checkpoints of the first run restore into the kit's MLP.
  for epoch in (1, 2):
    module = models.build_model("mlp", 10)
    models.check_output(module, "mlp", (28, 28, 1), 10)
    prefix = os.path.join(root, "0", layout.TRAJECTORY_DIRNAME,
                          f"ckpt-{epoch}")
    assert checkpoints.restore(module, prefix).epoch == epoch
  assert not os.path.exists(os.path.join(root, "1",
                                         layout.TRAJECTORY_DIRNAME))
  assert signals.read_run_signals(os.path.join(root, "5")).ssft_epochs == 2
  # A second run reuses every run and rewrites the same scores.
  before = dict(np.load(os.path.join(directory, "scores.npz")))
  result = quality.run(["--root", out, "--noise",
                        "label:0.1,input_uniform:0.05@0.8"] + TINY)
  assert result.training["trained"] == 0
  with np.load(os.path.join(directory, "scores.npz")) as npz:
    for name in scores_lib.SCORES:
      np.testing.assert_array_equal(npz[name], before[name])


@pytest.mark.slow
def test_missing_signals_are_retrained_and_other_settings_refused(
    tmp_path, monkeypatch):
  out = str(tmp_path / "q")
  args = ["--root", out] + TINY + ["--removal_models", "0", "--epochs", "1",
                                  "--ssft_epochs", "1", "--num_runs", "4"]
  quality.main(args)
  run_dir = os.path.join(out, quality.EXPERIMENT, "0.7", "2")
  path = signals.signals_path(run_dir)
  before = signals.read_run_signals(path)
  os.remove(path)  # E.g. killed after the run was written.
  result = quality.run(args)
  assert result.training["trained"] == 1
  after = signals.read_run_signals(path)
  np.testing.assert_array_equal(after.tracin_sum, before.tracin_sum)
  np.testing.assert_array_equal(after.forget_epoch, before.forget_epoch)
  with pytest.raises(errors.ConfigError, match="noise"):
    quality.run(args + ["--noise", "label:0.2"])
  # Another host, with bfloat16 units: 'auto' and group size 0 take the
  # recorded float32 and 4, and resume (nothing to train) instead of
  # refusing the collection.
  from heldout_tf.core import hardware  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(hardware, "cpu_flags",
                      lambda: frozenset(["avx512_bf16"]))
  monkeypatch.setattr(hardware, "gpu_bf16", lambda: False)
  resumed = quality.run(args + ["--precision", "auto", "--group_size", "0"])
  assert resumed.training["trained"] == 0
  assert resumed.training["precision"] == "float32"
  assert resumed.training["group_size"] == 4
  with pytest.raises(errors.ConfigError, match="--precision bfloat16"):
    quality.run(args + ["--precision", "bfloat16"])


@pytest.mark.parametrize("flags,message,code", [
    (["--noise", "input_gaussian:0.1@2"],
     "error: --noise 'input_gaussian:0.1@2': intensity must be in", 2),
    (["--num_runs", "1"], "error: --num_runs must be >= 2", 2),
    (["--removal_fractions", "0.5,2"], "error: --removal_fractions", 2),
    (["--ssft_epochs", "-1"], "error: --ssft_epochs must be in [0, ", 2),
    (["--removal_models", "-1"], "error: --removal_models must be >= 0", 2),
    (["--shard", "0/2"], "error: unrecognized arguments: --shard", 2),
    (["--root", "/proc/forbidden"], "error: cannot write /proc/forbidden", 1),
    # Sizes that leave nothing to hold out or to keep name their flag.
    (["--train_size", "1"], "error: --train_size must be 0 (all) or >= 2",
     2),
    (["--train_size", "2", "--ratios", "0.9"], "error: digits: 2 training "
     "examples are too few for ratio 0.9", 1),
    (["--removal_fractions", "0.999"], "error: --removal_fractions 0.999: "
     "removing 0.999 of the 50 training examples keeps none", 2),
])
def test_cli_bad_flags_print_error_lines(flags, message, code, capsys,
                                         tmp_path):
  from heldout_tf import cli  # pylint: disable=g-import-not-at-top
  with pytest.raises(SystemExit) as e:
    cli.run(quality.main, ["--dataset", "digits", "--train_size", "50",
                           "--num_runs", "2", "--noprogress",
                           "--root", str(tmp_path / "q")] + flags)
  assert e.value.code == code
  err = capsys.readouterr().err
  assert err.startswith(message) and err.count("\n") == 1, err
  assert not os.path.exists(tmp_path / "q")  # Refused before any work.


def test_entry_point_prints_error_line_for_a_bad_noise_spec():
  proc = subprocess.run(
      [sys.executable, "-m", "mnist_example.quality", "--noise",
       "gaussian:0.1"], cwd=REPO, capture_output=True, text=True,
      timeout=300)
  assert proc.returncode == 2, proc.stderr
  assert "error: --noise 'gaussian:0.1': unknown kind" in proc.stderr
  assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_noisy_examples_rank_above_clean_ones(tmp_path):
  """Label noise 10 % on 1 000 digits, 24 runs of 8 epochs (batch 32)."""
  result = quality.run([
      "--root", str(tmp_path), "--num_runs", "24", "--group_size", "8",
      "--epochs", "8", "--batch_size", "32", "--ssft_epochs", "0",
      "--train_size", "1000", "--test_size", "100", "--removal_models", "0",
      "--trajectory_runs", "0", "--dataset", "digits", "--noprogress",
      "--nofigures", "--noreport"])
  auc = {row["method"]: row["auc"] for row in result.detection}
  assert auc["memorization"] > 0.75
  assert auc["tracin"] > 0.85
  assert auc["aum"] > 0.9


@pytest.mark.slow
def test_a_failed_rerun_keeps_the_previous_outputs_or_drops_the_manifest(
    tmp_path, monkeypatch):
  from heldout_tf.quality import figures as quality_figures  # pylint: disable=g-import-not-at-top
  from heldout_tf.quality import removal  # pylint: disable=g-import-not-at-top
  out = str(tmp_path / "q")
  args = ["--root", out, "--num_runs", "2", "--group_size", "2",
          "--epochs", "1", "--ssft_epochs", "1", "--train_size", "100",
          "--test_size", "50", "--removal_models", "1",
          "--removal_fractions", "0.1", "--trajectory_runs", "0",
          "--dataset", "digits", "--noprogress"]
  first = quality.run(args)
  directory = os.path.dirname(first.paths["scores"])
  with open(os.path.join(directory, "manifest.json")) as f:
    manifest = json.load(f)
  written = sorted(os.path.basename(p) for p in
                   [v for k, v in first.paths.items() if k != "manifest"]
                   + first.figures)
  assert manifest["files"] == written
  assert sorted(os.listdir(directory)) == sorted(written + [
      "manifest.json"])
  assert manifest["settings"]["noise"] == "label:0.1"
  assert manifest["settings"]["training"]["model"] == "mlp"
  before = {name: open(os.path.join(directory, name), "rb").read()
            for name in written + ["manifest.json"]}

  def fail(*args, **kwargs):
    raise OSError("disk full")

  # Failing while computing (the ablation): the previous outputs stay,
  # every one with its manifest.
  monkeypatch.setattr(removal, "ablation", fail)
  with pytest.raises(OSError, match="disk full"):
    quality.run(args)
  for name, content in before.items():
    with open(os.path.join(directory, name), "rb") as f:
      assert f.read() == content, name
  monkeypatch.undo()
  # Failing while writing (the figures): new scores, no manifest claiming
  # the files belong together, nothing of the previous run's figures.
  monkeypatch.setattr(quality_figures, "write_all", fail)
  with pytest.raises(OSError, match="disk full"):
    quality.run(args)
  left = sorted(os.listdir(directory))
  assert left == ["detection.csv", "removal.csv", "scores.npz"], left


def test_quality_figures_draw_any_images(tmp_path):
  """Grey, colour and flat images; no ROC / precision curves without
  known noise."""
  from heldout_tf.quality import figures as quality_figures  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  n = 30
  labels = rng.integers(0, 3, n)
  scores = {"loss": rng.random(n), "aum": rng.random(n)}
  for shape in [(8, 8, 3), (8, 8, 1), (64,)]:
    images = rng.integers(0, 256, (n,) + shape).astype(np.uint8)
    directory = str(tmp_path / "x".join(map(str, shape)))
    paths = quality_figures.write_all(directory, images, labels, labels,
                                      np.array([1, 5]), scores, [])
    assert [os.path.basename(p) for p in paths] == [
        "roc.png", "precision_at_k.png", "top_suspicious.png"]
    assert all(os.path.getsize(p) > 0 for p in paths)
  paths = quality_figures.write_all(str(tmp_path / "clean"), images, labels,
                                    labels, np.zeros([0], np.int64), scores,
                                    [])
  assert [os.path.basename(p) for p in paths] == ["top_suspicious.png"]
