"""The HTML report: its data, its command line, and the page in Chromium.

Browser tests drive Debian's /usr/bin/chromium (headless) with Playwright
and open the page from file:// with every network request aborted. They
are skipped, with the reason, when Playwright or Chromium is missing (CI
installs both: `.ci/run`, the `test` extra; $HELDOUT_CHROMIUM names another
Chromium binary). Screenshots at 1280 and 390 px land in the tests' tmp
directories, and in $HELDOUT_REPORT_SCREENSHOTS when set. The page's CSP
forbids eval, so waits poll `page.evaluate` (which is not subject to it).
"""

import ast
import base64
import csv
import dataclasses
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import time
import types

import numpy as np
import PIL.Image
import pytest

import heldout_tf
from heldout_tf.cli import report as report_cli
from heldout_tf.core import errors
from heldout_tf import estimates
from heldout_tf.core import files
from heldout_tf.collection import layout
from heldout_tf.collection import provenance
from heldout_tf.data import image_data
from heldout_tf.training import recipes
from heldout_tf import report
from heldout_tf.collection import runs as runs_lib
from heldout_tf import collection
from heldout_tf.collection import margins as margins_lib
from heldout_tf.collection import signals as signals_lib
from heldout_tf import synthetic
from heldout_tf.quality import workflow as quality_workflow
from heldout_tf.report import columns
from heldout_tf.report import describe
from heldout_tf.report import gather
from heldout_tf.report import images as images_lib
from heldout_tf.report import inputs
from heldout_tf.report import page as page_lib
from heldout_tf.report import attribution as report_attribution
from heldout_tf.estimates import datamodels
from heldout_tf.estimates import lds

try:
  from playwright.sync_api import sync_playwright  # pylint: disable=g-import-not-at-top
except ImportError:
  sync_playwright = None

CHROMIUM = os.environ.get("HELDOUT_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking",
                 "--disable-component-update", "--no-first-run",
                 "--disable-sync"]
_MISSING = ("the playwright package is not installed" if sync_playwright is
            None else f"{CHROMIUM} is missing (apt-get install chromium)"
            if not os.path.exists(CHROMIUM) else None)
needs_browser = pytest.mark.skipif(_MISSING is not None,
                                   reason=f"browser tests: {_MISSING}")
# Screenshots go to each test's tmp directory, and here too when set.
SCREENSHOTS = os.environ.get("HELDOUT_REPORT_SCREENSHOTS")


def _screenshot(page, tmp_path, name, **kwargs):
  for directory in filter(None, (str(tmp_path), SCREENSHOTS)):
    os.makedirs(directory, exist_ok=True)
    page.screenshot(path=os.path.join(directory, name), **kwargs)


# ------------------------------------------------------------ collection --
# A small mnist-mlp collection on the embedded digits. The runs' correctness
# is simulated (no training): each run trains on a seeded random half of the
# first N_TRAIN digits; typical examples are right whether trained on or
# not, atypical and flipped ones mostly only when trained on, and some test
# examples follow one training example (high-influence pairs). Its
# config.json is what `mnist_example.train` records, so the report finds the
# images the runs would have seen.

EXPERIMENT = "mnist-mlp"
RATIO = 0.5
NUM_RUNS = 24
N_TRAIN = 240
N_TEST = 60
NUM_CLASSES = 10
# The collection's data as the training workflow records it: the first
# N_TRAIN / N_TEST digits, then 10 % label noise seeded by 0.
SOURCE = provenance.DataSource("digits", noise="label:0.1", seed=0,
                               train_size=N_TRAIN, test_size=N_TEST)


def load_digits():
  """The collection's data (`SOURCE`), images as float32 in [0, 1]."""
  data, noisy = SOURCE.load_noisy()
  return types.SimpleNamespace(
      image_data=data, train_images=image_data.as_float(data.train_images),
      train_labels=data.train_labels,
      test_images=image_data.as_float(data.test_images),
      test_labels=data.test_labels, noisy_idx=noisy.noisy_idx,
      clean_train_labels=noisy.clean_labels, description=data.description)


def make_collection(root: str, with_scores: bool = True,
                    with_attribution: bool = False) -> dict:
  """Writes runs (with signals.npz), config.json and (optionally)
  quality/scores.npz, and (optionally) each run's margins.npz with what
  `heldout datamodels` and `heldout lds` write from them by default.

  Each run's held-out softmax is one-hot on its prediction: the label when
  it is right, another class when wrong. Returns what a test compares the
  page against: the data, the runs' estimates (`estimates.compute`), the
  scores file's arrays and the held-out majority prediction (and the
  attribution files' paths).
  """
  data = load_digits()
  rng = np.random.default_rng(1)
  margin_rng = np.random.default_rng(2)  # Leaves `rng`'s draws as they were.
  n, m = N_TRAIN, N_TEST
  typical = rng.uniform(0.0, 1.0, n)
  typical[data.noisy_idx] = 0.05  # Flipped labels: right only if trained.
  votes = np.zeros((n, NUM_CLASSES), np.int64)
  for run in synthetic.simulated_runs(root, EXPERIMENT, RATIO, typical,
                                      n_test=m, num_runs=NUM_RUNS, rng=rng,
                                      subset_size=n // 2):
    subset, removed, correct = run.subset, run.removed, run.correct
    wrong = (data.train_labels[removed] + rng.integers(
        1, NUM_CLASSES, len(removed))) % NUM_CLASSES
    predicted = np.where(correct[removed], data.train_labels[removed], wrong)
    votes[removed, predicted] += 1
    probs = np.eye(NUM_CLASSES, dtype=np.float32)[predicted]
    if with_attribution:
      _write_margins(root, run, data, margin_rng)
    signals_lib.RunSignals(
        n_train=n, num_classes=NUM_CLASSES, epochs=1,
        learning_rate=0.1, subset=subset, margin_sum=np.zeros(len(subset)),
        correct_epochs=np.zeros(len(subset), np.int32),
        tracin_sum=np.zeros(len(subset)), heldout=removed,
        heldout_probs=probs).save(signals_lib.signals_path(
            layout.run_dir(root, EXPERIMENT, RATIO, run.run)))
  config = dict(SOURCE.recorded(data.image_data), seed=0, model="mlp",
                recipe=recipes.get("mnist-mlp").config(), ratio=RATIO,
                group_size=8, precision="float32")
  store = collection.Store(root, EXPERIMENT, RATIO)
  store.record_config(config)
  runs = estimates.load_runs(root, EXPERIMENT, progress=False)
  result = estimates.compute(runs, ("mem", "pairs", "cscores"),
                             progress=False)
  prediction = np.where(votes.sum(axis=1) > 0, np.argmax(votes, axis=1), -1)
  out = {"data": data, "result": result, "runs": runs, "scores": None,
         "prediction": prediction}
  if with_scores:
    scores = {
        "memorization": result["memorization"],
        "cscore": 1.0 - result["cscores"],
        "loss": np.round(rng.exponential(1.0, n), 2),  # Ties on purpose.
        "aum": rng.normal(0.0, 1.0, n),
        "labels": data.train_labels, "clean_labels": data.clean_train_labels,
        "noisy_idx": data.noisy_idx, "noise": np.array("label:0.1")}
    scores["aum"][:3] = np.nan  # Undefined for a few examples.
    path = os.path.join(store.path, "quality", "scores.npz")
    files.save_npz(path, **scores)
    # As `heldout quality` finishes: the manifest last, listing the file.
    quality_workflow.write_manifest(os.path.dirname(path), [path], {})
    out["scores"] = scores
    out["scores_path"] = path
  if with_attribution:
    out.update(_attribution_files(root))
  return out


def _write_margins(root, run, data, rng):
  """A margins.npz agreeing with the simulated run's correctness: the
  label's logit is the margin, every other logit 0."""
  logits = {}
  for split, correct, labels in (("train", run.correct, data.train_labels),
                                 ("test", run.correct_test,
                                  data.test_labels)):
    margin = np.where(correct, 1.0, -1.0) * rng.uniform(0.2, 3.0,
                                                         len(correct))
    values = np.zeros((len(correct), NUM_CLASSES), np.float32)
    values[np.arange(len(correct)), labels] = margin
    logits[f"{split}_logits"], logits[f"{split}_labels"] = values, labels
  margins_lib.write(layout.run_dir(root, EXPERIMENT, RATIO, run.run),
                    **logits)


FIT_RUNS, LDS_RUNS = range(16), range(16, NUM_RUNS)


def _attribution_files(root) -> dict:
  """`heldout datamodels` and `heldout lds` with their default --out: the
  datamodels of runs 0-15, the LDS table of it and two built-in methods on
  runs 16-23."""
  dm_path = layout.attribution_path(root, EXPERIMENT, RATIO,
                                    layout.DATAMODELS_FILENAME)
  lds_path = layout.attribution_path(root, EXPERIMENT, RATIO,
                                     layout.LDS_FILENAME)
  datamodels.save(dm_path, datamodels.fit_collection(
      root, EXPERIMENT, FIT_RUNS, progress=False))
  results, eval_runs = lds.lds(
      root, EXPERIMENT, LDS_RUNS, [dm_path], ["dom_margin", "l1"],
      fit_run_ids=FIT_RUNS, min_eval_runs=len(LDS_RUNS), progress=False)
  lds.save(lds_path, results, eval_runs)
  return {"dm_path": dm_path, "lds_path": lds_path,
          "lds_results": results}


@pytest.fixture(scope="module")
def made(tmp_path_factory):
  """The collection, its report, and what the page must show."""
  root = str(tmp_path_factory.mktemp("collection"))
  info = make_collection(root, with_attribution=True)
  out = os.path.join(str(tmp_path_factory.mktemp("report")), "report.html")
  info["summary"] = report.write(root, EXPERIMENT, out,
                                 progress=False)
  info["root"], info["out"] = root, out
  return info


def _suspicion_order(values, direction):
  """numpy's order: value (direction), ties by index, NaN last."""
  values = np.asarray(values, np.float64)
  key = -values if direction == "desc" else values
  return np.lexsort((np.arange(len(values)), key))


def _expected_columns(made):
  """Column key -> the values the page must show, from the files."""
  scores = made["scores"]
  return {"memorization": made["result"]["memorization"],
          "cscore": made["result"]["cscores"], "loss": scores["loss"],
          "aum": scores["aum"]}


# ------------------------------------------------------------ no browser --


def test_gather_reads_estimates_scores_and_config(made):
  data = gather.gather(made["root"], EXPERIMENT, progress=False)
  assert [c.key for c in data.columns] == ["memorization", "cscore", "loss",
                                           "aum"]
  expected = _expected_columns(made)
  for column in data.columns:
    np.testing.assert_array_equal(column.values, expected[column.key])
  np.testing.assert_array_equal(data.labels, made["data"].train_labels)
  np.testing.assert_array_equal(data.noisy_idx, made["data"].noisy_idx)
  np.testing.assert_array_equal(data.prediction, made["prediction"])
  assert (data.prediction != data.labels).any()
  acc = made["runs"].correct_test.mean(axis=1)
  (row,) = data.provenance["accuracy"]
  assert row["runs"] == NUM_RUNS
  assert row["mean"] == pytest.approx(acc.mean())
  assert row["sd"] == pytest.approx(acc.std(ddof=1))
  assert data.provenance["dataset"] == "digits"
  assert data.provenance["settings"]["noise"] == "label:0.1"
  # 24 runs put the default thresholds within 2 standard errors of zero.
  assert any("infl_threshold" in w for w in data.warnings)
  assert len(data.detection) == 4  # Noise known: one row per score.
  # The scores file is the one offered for download.
  with open(made["scores_path"], "rb") as f:
    assert data.downloads == [("scores.npz", f.read())]


def _meta(path):
  """The page's embedded metadata (JSON)."""
  with open(path, encoding="utf-8") as f:
    text = f.read()
  found = re.search(r'<script type="application/json" id="report-meta">'
                    r"(.*?)</script>", text, re.S)
  return json.loads(found.group(1))


def _tile(meta, split, i):
  """Example i's thumbnail pixels, cut from the page's sprite sheet."""
  sheets = meta["images"][split]
  slot = i  # Every example has a thumbnail here.
  sheet = sheets["sheets"][slot // sheets["per_sheet"]]
  png = base64.b64decode(sheet.split(",", 1)[1])
  picture = np.asarray(PIL.Image.open(io.BytesIO(png)))
  k = slot % sheets["per_sheet"]
  row, col = divmod(k, sheets["columns"])
  h, w = sheets["height"], sheets["width"]
  return picture[row * h:(row + 1) * h, col * w:(col + 1) * w]


def test_thumbnails_are_the_runs_images(made):
  meta = _meta(made["out"])
  assert made["summary"].images
  pixels = np.round(made["data"].train_images[..., 0] * 255)
  for i in (0, 7, N_TRAIN - 1):
    tile = _tile(meta, "train", i).astype(np.float64)  # 16 grey levels.
    # Dark on light, as the kit's figures draw grey images (gray_r).
    assert np.abs(tile - (255 - pixels[i])).max() <= 8.5
  assert meta["class_names"] == [str(c) for c in range(10)]


def test_images_are_rebuilt_with_their_recorded_input_noise():
  # The training workflow records the source, cut, noise and fingerprint;
  # the report rebuilds the images the runs saw (noisy ones included) and
  # refuses data whose fingerprint differs.
  spec = "label:0.05,input_gaussian:0.1@0.5"
  source = provenance.DataSource("digits", noise=spec, seed=3,
                                 train_size=N_TRAIN, test_size=N_TEST)
  data, noisy = source.load_noisy()
  assert len(noisy.by_kind["input_gaussian"]) > 0
  config = dict(source.recorded(data), seed=3)
  images, note = images_lib.load(EXPERIMENT, config, n_train=N_TRAIN,
                                 n_test=N_TEST)
  assert images is not None, note
  np.testing.assert_array_equal(images.train, data.train_images)
  np.testing.assert_array_equal(images.test, data.test_images)
  np.testing.assert_array_equal(images.train_labels, data.train_labels)
  assert images.description == data.description
  other, note = images_lib.load(EXPERIMENT, dict(config, seed=4))
  assert other is None and "fingerprint" in note


def test_a_collection_of_the_earlier_mnist_pipeline_gets_no_images():
  config = {"dataset": "digits", "label_noise": 0.1, "seed": 0,
            "hidden": [512, 256]}  # It recorded no source.
  images, note = images_lib.load(EXPERIMENT, config)
  assert images is None and "no offline source" in note


def test_cifar_images_and_class_names_come_from_tfds(release_root, cifar10,
                                                     tmp_path):
  data_dir, arrays = cifar10
  out = str(tmp_path / "cifar.html")
  summary = report.write(release_root, "cifar10-inception", out,
                         data_dir=data_dir, progress=False)
  assert summary.images
  meta = _meta(out)
  for split in ("train", "test"):
    for i in (0, len(arrays[split]["label"]) - 1):
      np.testing.assert_array_equal(_tile(meta, split, i),
                                    arrays[split]["image"][i])
  assert meta["class_names"] == [str(c) for c in range(10)]  # tfds' names.
  assert meta["provenance"]["dataset"] == "cifar10:3.0.2"
  bare = report.write(release_root, "cifar10-inception",
                      str(tmp_path / "bare.html"),
                      data_dir=str(tmp_path / "empty"), progress=False)
  assert not bare.images and "not prepared" in bare.images_note
  assert "not prepared" in _meta(bare.path)["images_note"]


def test_images_given_by_the_caller_must_match_the_runs(made, tmp_path):
  data = made["data"]
  images = report.Images(data.train_images, data.test_images[:5], "mine")
  with pytest.raises(errors.UsageError, match="images: 240 / 5"):
    report.write(made["root"], EXPERIMENT, str(tmp_path / "x.html"),
                 images=images, progress=False)
  images.test = data.test_images
  written = report.write(made["root"], EXPERIMENT,
                         str(tmp_path / "x.html"), images=images,
                         progress=False)
  assert written.images and _meta(written.path)["images_description"] == (
      "mine")


def test_mean_rank_and_agreement_follow_the_rankings():
  values = np.array([0.9, 0.1, np.nan, 0.5])
  up = columns.Column("a", "a", values, None, +1, "")
  down = columns.Column("b", "b", values, None, -1, "")
  np.testing.assert_array_equal(columns.ranks(up), [1, 3, 4, 2])
  np.testing.assert_array_equal(columns.ranks(down), [3, 1, 4, 2])
  np.testing.assert_array_equal(columns.mean_rank([up, down]),
                                [2.0, 2.0, 4.0, 2.0])
  assert columns.agreement([up, down], 2) == [[1.0, 0.5], [0.5, 1.0]]


def test_sprites_keep_priority_examples_within_budget():
  rng = np.random.default_rng(0)
  pictures = rng.integers(0, 256, (300, 8, 8, 1)).astype(np.uint8)
  everything = images_lib.sprites(pictures)
  np.testing.assert_array_equal(everything.slots, np.arange(300))
  some = images_lib.sprites(pictures, priority=[299, 5],
                            budget_bytes=everything.num_bytes // 3)
  kept = np.flatnonzero(some.slots >= 0)
  assert 0 < len(kept) < 300
  assert some.slots[299] == 0 and some.slots[5] == 1
  assert some.num_bytes <= everything.num_bytes // 2


def test_estimates_file_is_used_when_given(made, tmp_path):
  result = dict(made["result"], test_labels=made["data"].test_labels)
  path = str(tmp_path / "estimates.npz")
  np.savez(path, **{k: np.asarray(v) for k, v in result.items()})
  data = gather.gather(made["root"], EXPERIMENT,
                       estimates_path=path, scores_path=None, progress=False)
  assert data.provenance["sources"]["estimates"] == path
  np.testing.assert_array_equal(data.pairs["tr_idx"], result["tr_idx"])
  np.testing.assert_array_equal(data.test_labels, made["data"].test_labels)
  assert data.summary["pairs"] == len(result["tr_idx"])
  # The quality scores are still found next to the runs.
  assert [c.key for c in data.columns] == ["memorization", "cscore", "loss",
                                           "aum"]


def _tiny_collection(root, ratios, num_runs=4, n=20, m=6,
                     experiment="tiny"):
  rng = np.random.default_rng(3)
  for ratio in ratios:
    for r in range(num_runs):
      subset = np.sort(rng.choice(n, int(ratio * n), replace=False))
      removed = np.setdiff1d(np.arange(n), subset)
      runs_lib.write_aux(
          layout.run_dir(root, experiment, ratio, r),
          correctness={"train": rng.uniform(size=len(subset)) < 0.9,
                       "removed": rng.uniform(size=len(removed)) < 0.5,
                       "test": rng.uniform(size=m) < 0.7},
          index={"train": subset, "removed": removed, "test": np.arange(m)},
          subsample_idx=subset)


def test_several_ratios_together_or_one(tmp_path):
  root = str(tmp_path)
  _tiny_collection(root, [0.25, 0.5])
  both = gather.gather(root, "tiny", progress=False)
  assert both.provenance["ratios"] == [0.25, 0.5]
  assert both.provenance["runs_per_ratio"] == [4, 4]
  assert [a["ratio"] for a in both.provenance["accuracy"]] == [0.25, 0.5]
  assert any("2 ratios" in note for note in both.notes)
  one = gather.gather(root, "tiny", ratio=0.5, progress=False)
  assert one.provenance["ratios"] == [0.5] and one.num_runs == 4
  assert not np.array_equal(one.columns[1].values, both.columns[1].values,
                            equal_nan=True)
  out = str(tmp_path / "tiny.html")
  written = report.write(root, "tiny", out, progress=False)
  assert not written.images and "no offline source" in written.images_note


def test_estimates_file_from_other_runs_is_refused(made, tmp_path):
  result = dict(made["result"])
  result["n_in"] = result["n_in"] + 1
  path = str(tmp_path / "other.npz")
  np.savez(path, **{k: np.asarray(v) for k, v in result.items()})
  with pytest.raises(inputs.ReportInputError, match="n_in"):
    report.write(made["root"], EXPERIMENT, str(tmp_path / "r.html"),
                 estimates=path, progress=False, with_images=False)


def test_missing_inputs_name_what_is_missing(made, tmp_path):
  with pytest.raises(inputs.ReportInputError, match="no runs under"):
    report.write(made["root"], "no-such-experiment", str(tmp_path / "a.html"),
                 progress=False)
  with pytest.raises(inputs.ReportInputError, match="--scores"):
    report.write(made["root"], EXPERIMENT, str(tmp_path / "b.html"),
                 scores=str(tmp_path / "none.npz"), progress=False)
  garbage = tmp_path / "garbage.npz"
  garbage.write_bytes(b"not a zip file")
  with pytest.raises(inputs.ReportInputError,
                     match="garbage.npz: cannot read: not an npz file"):
    report.write(made["root"], EXPERIMENT, str(tmp_path / "c.html"),
                 scores=str(garbage), progress=False, with_images=False)
  with pytest.raises(errors.PathError):
    report.write(made["root"], EXPERIMENT, str(tmp_path),
                 progress=False)


def test_gather_finds_the_attribution_files(made, tmp_path):
  data = gather.gather(made["root"], EXPERIMENT, progress=False)
  found = data.attribution
  assert found.sources == {"lds": made["lds_path"],
                           "attribution": made["dm_path"]}
  assert found.lds["runs"] == "8 runs (ratio 0.5: runs 16-23)"
  assert found.lds["n_test"] == N_TEST
  results = made["lds_results"]
  assert [row["method"] for row in found.lds["rows"]] == [
      r.name for r in results]
  for row, result in zip(found.lds["rows"], results):
    assert (row["mean"], row["se"], row["undefined"], row["fit_runs"]) == (
        result.mean, result.se, result.num_undefined, result.num_fit_runs)
  # The influencers are the datamodels file's own top weights, and its LDS
  # per test example the table's row of the same file.
  assert found.method == results[0].name
  assert found.method.startswith("datamodels.npz (l1 datamodels, ")
  k = report_attribution.K_SHOWN
  with np.load(made["dm_path"]) as f:
    for key in ("top_pos_idx", "top_pos_weight", "top_neg_idx",
                "top_neg_weight"):
      np.testing.assert_array_equal(found.influencers[key], f[key][:, :k])
  np.testing.assert_array_equal(found.method_lds, results[0].per_example)
  # Named files: a table of other test examples is refused, naming the key.
  other = str(tmp_path / "other.npz")
  files.save_npz(other, **{key: value[..., :N_TEST - 1] if key == "lds"
                           else value for key, value in np.load(
                               made["lds_path"]).items()})
  with pytest.raises(inputs.ReportInputError, match="other.npz: key 'lds'"):
    gather.gather(made["root"], EXPERIMENT, progress=False, lds_path=other)
  with pytest.raises(inputs.ReportInputError, match="--attribution"):
    gather.gather(made["root"], EXPERIMENT, progress=False,
                  attribution_path=str(tmp_path / "none.npz"))


def _run_cli(*argv):
  env = dict(os.environ, PYTHONPATH=os.getcwd())
  return subprocess.run([sys.executable, "-m", "heldout_tf.cli.report"] +
                        list(argv), capture_output=True, text=True, env=env,
                        check=False, timeout=300)


def test_cli_help_imports_no_tensorflow(imports_tensorflow):
  assert not imports_tensorflow(
      "from heldout_tf.cli import report as m; "
      "m.build_parser().format_help()")
  bad = _run_cli("--root", "x", "--out", "z", "--ratios", "half")
  assert bad.returncode == 2
  assert bad.stderr.strip().splitlines()[-1].startswith("error: --ratios")


def test_cli_flags_mean_what_they_mean_elsewhere(tmp_path):
  # --ratios: the one grammar of heldout_tf.collection.layout, one ratio.
  args = report_cli.parse_args(["--root", "r", "--out", "o.html",
                                "--ratios", "0.50"])
  assert args.ratio == 0.5 and args.experiment == ""
  assert report_cli.parse_args(["--root", "r", "--out", "o"]).ratio is None
  with pytest.raises(errors.UsageError, match="--ratios: one ratio per "
                     "report, got 2"):
    report_cli.parse_args(["--root", "r", "--out", "o", "--ratios",
                           "0.5,0.7"])
  with pytest.raises(errors.UsageError,
                     match=r"^--ratios: ratio must be in \(0, 1\]"):
    report_cli.parse_args(["--root", "r", "--out", "o", "--ratios", "2"])
  # The old spelling is refused, naming the new one.
  with pytest.raises(errors.UsageError, match="flag is --ratios"):
    report_cli.parse_args(["--root", "r", "--out", "o", "--ratio", "0.5"])
  # --out is a file: a directory is refused by the one output rule.
  with pytest.raises(errors.PathError, match="it is a directory"):
    files.check_writable(str(tmp_path))


def test_experiment_is_inferred_when_the_root_holds_one(tmp_path):
  root = str(tmp_path / "one")
  _tiny_collection(root, [0.5])
  out = str(tmp_path / "one.html")
  assert report.write(root, "", out, progress=False).path == out
  assert _meta(out)["provenance"]["experiment"] == "tiny"
  _tiny_collection(root, [0.5], experiment="other")
  with pytest.raises(errors.UsageError, match=r"holds 2 experiments "
                     r"\(other, tiny\): pass --experiment"):
    report.write(root, "", out, progress=False)
  with pytest.raises(inputs.ReportInputError, match="no collection there"):
    report.write(str(tmp_path / "none"), "", out, progress=False)


def test_cli_writes_the_report_without_images(made, tmp_path):
  out = str(tmp_path / "cli.html")
  done = _run_cli("--root", made["root"], "--ratios", str(RATIO), "--out",
                  out, "--noimages", "--noprogress")  # The only experiment.
  assert done.returncode == 0, done.stderr
  assert f"Wrote {out}" in done.stdout
  with open(out, encoding="utf-8") as f:
    text = f.read()
  assert "no images (not asked for)" in text
  missing = _run_cli("--root", made["root"], "--experiment", "nope", "--out",
                     out, "--noprogress")
  assert missing.returncode == 1
  assert missing.stderr.strip().splitlines()[-1].startswith(
      "error: no runs under")


def test_scores_without_a_manifest_are_incomplete_and_not_shown(tmp_path):
  # A killed `heldout quality`: scores.npz written, manifest.json not yet.
  root = str(tmp_path)
  _tiny_collection(root, [0.5])
  directory = os.path.join(layout.ratio_dir(root, "tiny", 0.5),
                           layout.QUALITY_DIRNAME)
  scores = os.path.join(directory, layout.SCORES_FILENAME)
  files.save_npz(scores, loss=np.linspace(0.0, 1.0, 20))
  out = str(tmp_path / "r.html")
  done = _run_cli("--root", root, "--out", out, "--noprogress")
  assert done.returncode == 0, done.stderr
  about = [line for line in done.stderr.splitlines() if "scores" in line]
  assert about == [
      f"warning: {scores} has no manifest.json beside it: the quality run "
      "that wrote it did not finish, so its scores are incomplete and not "
      "shown (re-run heldout quality)"]
  meta = _meta(out)
  assert [c["key"] for c in meta["columns"]] == ["memorization", "cscore"]
  assert any("incomplete" in w for w in meta["warnings"])
  assert "scores" not in meta["provenance"]["sources"]
  # Once the manifest lists it, the scores are shown.
  quality_workflow.write_manifest(directory, [scores], {})
  written = report.write(root, "", out, progress=False, with_images=False)
  assert not any("incomplete" in w for w in written.warnings)
  assert [c["key"] for c in _meta(out)["columns"]] == [
      "memorization", "cscore", "loss"]


def test_provenance_names_the_recorded_model(tmp_path):
  root = str(tmp_path)
  _tiny_collection(root, [0.5])
  collection.Store(root, "tiny", 0.5).record_config(
      {"dataset": "mydata", "model": "mypackage.models:build",
       "num_classes": 3})
  data = gather.gather(root, "tiny", progress=False)
  assert (data.provenance["dataset"], data.provenance["model"]) == (
      "mydata", "mypackage.models:build")  # Shown, never imported.
  assert describe.dataset_and_model("x", {"model": "mlp", "model_options": {
      "hidden": [64]}}) == ("unknown", "mlp (hidden=[64])")
  assert describe.dataset_and_model("x", {"hidden": [512, 256]})[1] == (
      "MLP, hidden layers 512-256")
  assert describe.dataset_and_model("x", None) == ("unknown", "unknown")


def test_memorization_standard_error_is_the_one_estimate_prints(made):
  # Most examples are right (or wrong) in every run: their SE is exactly
  # 0, so the typical SE is the median over the others.
  se = estimates.memorization_se(
      {"memorization_se": np.array([0.0, 0.0, 0.1, 0.2, np.nan])})
  assert (se.median, se.varying, se.defined) == (
      pytest.approx(0.15), 2, 4)
  result = made["result"]
  typical = estimates.memorization_se(result)
  assert 0 < typical.median and typical.varying < N_TRAIN
  printed = estimates.summary(result)  # What `heldout estimate` prints.
  assert typical.describe() in printed
  assert f"memorization {typical.median:.3f} (median over" in printed
  data = gather.gather(made["root"], EXPERIMENT, progress=False)
  shown = data.provenance["standard_errors"]
  assert shown["memorization_se"] == typical.median
  assert shown["text"].startswith(typical.describe() + "; worst case")


def test_quality_never_imports_the_report():
  # Layers point one way: no stage below the report imports it, and the
  # report imports no stage above its own.
  order = list(heldout_tf.STAGES)
  package = os.path.dirname(heldout_tf.__file__)
  offenders = []
  for stage in order[:order.index("report") + 1]:
    for name in sorted(os.listdir(os.path.join(package, stage))):
      if not name.endswith(".py"):
        continue
      with open(os.path.join(package, stage, name), encoding="utf-8") as f:
        tree = ast.parse(f.read())
      for node in ast.walk(tree):
        if isinstance(node, ast.Import):
          names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
          names = [f"{node.module}.{a.name}" for a in node.names]
        else:
          continue
        for imported in names:
          parts = imported.split(".")
          if parts[0] != "heldout_tf" or len(parts) < 2 or (
              parts[1] not in order):
            continue
          above = order.index(parts[1]) > order.index(stage)
          if above and (stage == "report" or parts[1] == "report"):
            offenders.append(f"{stage}/{name} imports {imported}")
  assert not offenders, offenders


# ------------------------------------------------------ script and style --


def _css_errors(text):
  """Every parse error tinycss2 finds in a stylesheet: in rules, @media
  blocks, selectors (a stray '}') and declarations."""
  import tinycss2  # pylint: disable=g-import-not-at-top
  found = []

  def tokens(nodes):  # Error tokens, e.g. a stray '}' or a bad string.
    for t in nodes:
      if t.type == "error":
        found.append(f"{t.source_line}:{t.source_column}: {t.message}")

  def declarations(content):
    for node in tinycss2.parse_declaration_list(
        content, skip_comments=True, skip_whitespace=True):
      if node.type == "error":
        found.append(f"{node.source_line}:{node.source_column}: "
                     f"{node.message}")
      elif node.type == "declaration":
        tokens(node.value)

  def rules(nodes):
    for node in nodes:
      if node.type == "error":
        found.append(f"{node.source_line}:{node.source_column}: "
                     f"{node.message}")
      elif node.type == "qualified-rule":
        tokens(node.prelude)
        declarations(node.content)
      elif node.type == "at-rule" and node.content is not None:
        if node.lower_at_keyword == "media":
          rules(tinycss2.parse_rule_list(node.content, skip_comments=True,
                                         skip_whitespace=True))
        else:
          declarations(node.content)
  rules(tinycss2.parse_stylesheet(text, skip_comments=True,
                                  skip_whitespace=True))
  return found


def _js_error(text):
  """esprima's syntax error in a script, or None."""
  import esprima  # pylint: disable=g-import-not-at-top  (never skipped)
  try:
    esprima.parseScript(text)
  except esprima.Error as e:
    return str(e)
  return None


def test_script_and_style_are_package_data_that_parse():
  script, style = page_lib.static_text("report.js"), page_lib.static_text(
      "report.css")
  assert _js_error(script) is None
  assert _css_errors(style) == []
  # The checks do fail: a planted error in each.
  assert "Unexpected token" in _js_error(
      script.replace("function fmt(x, digits) {", "function fmt(x, digits {"))
  assert _js_error(script + "\n}") is not None
  assert _css_errors(style.replace("color: var(--accent); }",
                                   "color var(--accent); }", 1))
  assert _css_errors(style + "\n}\n") and _css_errors(".a { } } .b { }")
  # Inlined into the page: nothing in them may end their element early.
  assert not re.search(r"</script|<!--", script, re.I)
  assert not re.search(r"</style", style, re.I)
  # setup.py ships every file of static/ (pip install . carries them).
  with open(os.path.join(os.path.dirname(os.path.dirname(__file__)),
                         "setup.py"), encoding="utf-8") as f:
    setup_call = [node for node in ast.walk(ast.parse(f.read()))
                  if isinstance(node, ast.keyword) and
                  node.arg == "package_data"]
  shipped = ast.literal_eval(setup_call[0].value)["heldout_tf.report"]
  static = os.path.join(os.path.dirname(page_lib.__file__), "static")
  assert sorted(os.listdir(static)) == sorted(
      os.path.basename(p) for p in shipped)


def test_every_section_has_a_drawing():
  script = page_lib.static_text("report.js")
  drawn = re.search(r"const DRAW = \{(.*?)\};", script, re.S).group(1)
  keys = re.findall(r"^\s+(\w+):", drawn, re.M)
  assert keys == [s.key for s in page_lib.SECTIONS]


# --------------------------------------------------------------- browser --


@pytest.fixture(scope="module")
def browser():
  if _MISSING is not None:
    pytest.skip(f"browser tests: {_MISSING}")
  with sync_playwright() as p:
    chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    yield chromium
    chromium.close()


class Page:
  """One tab on the report, offline, recording requests and errors."""

  def __init__(self, browser, path, width=1280, height=900):
    self.url = "file://" + os.path.abspath(path)
    self.context = browser.new_context(
        viewport={"width": width, "height": height}, accept_downloads=True)
    self.page = self.context.new_page()
    self.requests, self.errors = [], []
    self.page.on("console", lambda m: m.type == "error" and self.errors.append(
        m.text))
    self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def abort_network(route):
      if route.request.url.split("#")[0] == self.url:
        route.continue_()  # The page itself.
      else:
        self.requests.append(route.request.url)
        route.abort()
    self.context.route("**/*", abort_network)

  def open(self, fragment=""):
    self.page.goto(self.url + fragment)
    self.ready()

  def ready(self):
    self.page.wait_for_selector("body[data-ready]", state="attached",
                                timeout=30_000)

  def wait(self, expression, timeout=20.0):
    """Polls `expression` until truthy. (Playwright's wait_for_function
    evaluates strings with eval, which the page's CSP forbids.)"""
    deadline = time.monotonic() + timeout
    while not self.page.evaluate(expression):
      if time.monotonic() > deadline:
        raise TimeoutError(f"still false after {timeout} s: {expression}")
      time.sleep(0.05)

  def grid_indices(self):
    return [int(i) for i in self.page.eval_on_selector_all(
        "#grid .tile", "els => els.map(e => e.dataset.index)")]

  def images_loaded(self):
    """(images, loaded) after every thumbnail finished."""
    self.wait("Array.from(document.images).every(i => i.complete && i.src)")
    return self.page.evaluate(
        "[document.images.length, Array.from(document.images)"
        ".filter(i => i.naturalWidth > 0).length]")

  def close(self):
    self.context.close()


@pytest.fixture
def page(browser, made):
  tab = Page(browser, made["out"])
  tab.open()
  yield tab
  tab.close()


@needs_browser
def test_page_is_offline_complete_and_clean(page, made, tmp_path):
  count, loaded = page.images_loaded()
  assert count >= 96 + 50  # Grid page, candidates (and pairs).
  assert loaded == count
  text = page.page.inner_text("body")
  assert not re.search(r"NaN|undefined|null|Infinity", text)
  assert f"{N_TRAIN} of {N_TRAIN} training examples" in text
  while page.page.is_visible("#more"):  # Every tile of the grid.
    page.page.click("#more")
  assert len(page.grid_indices()) == N_TRAIN
  count, loaded = page.images_loaded()
  assert loaded == count
  _screenshot(page.page, tmp_path, "report-1280.png")
  assert page.requests == [] and page.errors == []
  # The recorded model, and memorization's standard error exactly as
  # `heldout estimate` prints it for the same runs.
  provenance = page.page.inner_text("#provenance")
  assert "model\nmlp\n" in provenance  # The recorded model.
  typical = estimates.memorization_se(made["result"])
  assert typical.describe() in estimates.summary(made["result"])
  assert typical.describe() in provenance


@needs_browser
def test_phone_width_and_card_screenshots(browser, made, tmp_path):
  tab = Page(browser, made["out"], width=390, height=844)
  tab.open("#train/3")
  tab.images_loaded()
  width = tab.page.evaluate("document.documentElement.scrollWidth")
  assert width <= 390  # Nothing wider than the phone,
  assert tab.page.evaluate(  # the card's values included.
      "(() => { const c = document.querySelector('#card .card');"
      " return c.scrollWidth <= c.clientWidth; })()")
  _screenshot(tab.page, tmp_path, "report-390-card.png")
  tab.page.keyboard.press("Escape")
  tab.page.wait_for_selector("#card", state="hidden")
  _screenshot(tab.page, tmp_path, "report-390.png", full_page=True)
  assert tab.requests == [] and tab.errors == []
  tab.close()


@needs_browser
@pytest.mark.parametrize("index", [0, 17])
def test_search_shows_the_files_values(page, made, index):
  page.page.fill("#search-input", f"train {index}")
  page.page.press("#search-input", "Enter")
  page.page.wait_for_selector("#card:not([hidden])")
  assert page.page.inner_text("#card-title") == f"Training example #{index}"
  for key, values in _expected_columns(made).items():
    shown = page.page.inner_text(f"#card tr[data-key='{key}'] .value")
    if np.isnan(values[index]):
      assert shown == "\u2014"
    else:
      assert float(shown) == values[index]  # Exactly, float64.
  assert page.page.inner_text("#card tr[data-key='prediction'] td") == str(
      made["prediction"][index])  # MNIST class names are the digits.
  assert page.page.url.endswith(f"#train/{index}")
  assert page.errors == []


@needs_browser
def test_top_ten_under_each_sort_equal_numpy(page, made):
  for key, values in _expected_columns(made).items():
    for direction in ("desc", "asc"):
      page.page.select_option("#sort", key)
      page.page.select_option("#dir", direction)
      top = page.grid_indices()[:10]
      assert top == list(_suspicion_order(values, direction)[:10]), (
          key, direction)
  assert page.errors == []


@needs_browser
def test_class_filter_counts_and_histograms_follow(page, made):
  labels = made["data"].train_labels
  totals = lambda: page.page.eval_on_selector_all(
      ".hplot", "els => els.map(e => +e.dataset.total)")
  before = totals()
  assert before == [N_TRAIN] * 3 + [N_TRAIN - 3]
  page.page.select_option("#class", "3")
  want = int(np.sum(labels == 3))
  assert page.page.inner_text("#count").startswith(
      f"{want} of {N_TRAIN} training examples")
  assert totals() == [want] * 3 + [int(np.sum(
      (labels == 3) & ~np.isnan(made["scores"]["aum"])))]
  assert sorted(page.grid_indices()) == list(np.flatnonzero(labels == 3))
  # Searching a class name applies the same filter.
  page.page.click("#reset")
  page.page.fill("#search-input", "class 3")
  page.page.press("#search-input", "Enter")
  assert page.page.input_value("#class") == "3"
  assert totals()[0] == want


@needs_browser
def test_histogram_brush_filters_the_grid(page, made):
  mem = made["result"]["memorization"]
  plot = page.page.locator("#hist-memorization svg")
  plot.scroll_into_view_if_needed()
  box = plot.bounding_box()
  y = box["y"] + box["height"] / 2
  page.page.mouse.move(box["x"] + 2, y)
  page.page.mouse.down()
  page.page.mouse.move(box["x"] + box["width"] * 0.3, y)
  page.page.mouse.up()
  while page.page.is_visible("#more"):
    page.page.click("#more")
  shown = page.grid_indices()
  count = int(page.page.inner_text("#count").split()[0])
  assert 0 < count < N_TRAIN and len(shown) == count
  limit = float(page.page.input_value("#range-max"))
  assert all(mem[i] < limit for i in shown)
  assert count == int(np.sum(mem < limit))
  # The other histograms now count only the selected examples.
  totals = page.page.eval_on_selector_all(
      ".hplot", "els => els.map(e => +e.dataset.total)")
  assert totals[0] == N_TRAIN and totals[1] == count


@needs_browser
def test_deep_link_survives_reload_and_history(page):
  page.open("#train/7")
  assert page.page.inner_text("#card-title") == "Training example #7"
  page.page.reload()
  page.ready()
  assert page.page.inner_text("#card-title") == "Training example #7"
  page.page.fill("#search-input", "test 4")
  page.page.press("#search-input", "Enter")
  page.wait(
      "document.getElementById('card-title').textContent.includes('Test')")
  assert page.page.inner_text("#card-title") == "Test example #4"
  page.page.go_back()
  page.wait(
      "document.getElementById('card-title').textContent.endsWith('#7')")
  page.page.go_forward()
  page.wait(
      "document.getElementById('card-title').textContent.endsWith('#4')")
  page.page.click("#card .close")
  page.page.wait_for_selector("#card", state="hidden")
  page.page.go_back()  # Back reopens the card that was closed.
  page.page.wait_for_selector("#card:not([hidden])")
  assert page.page.inner_text("#card-title") == "Test example #4"
  assert page.errors == [] and page.requests == []


@needs_browser
def test_downloads_match_their_sha256(page, made, tmp_path):
  page.page.select_option("#class", "5")
  with page.page.expect_download() as got:
    page.page.click("#download-csv")
  path = str(tmp_path / "examples.csv")
  got.value.save_as(path)
  with open(path, "rb") as f:
    content = f.read()
  page.wait(
      "document.getElementById('csv-sha256').textContent.length === 64")
  assert page.page.inner_text("#csv-sha256") == hashlib.sha256(
      content).hexdigest()
  rows = list(csv.DictReader(io.StringIO(content.decode())))
  labels = made["data"].train_labels
  assert [int(r["index"]) for r in rows] == list(
      i for i in _suspicion_order(made["result"]["memorization"], "desc")
      if labels[i] == 5)
  for r in rows:
    assert float(r["loss"]) == made["scores"]["loss"][int(r["index"])]
  with page.page.expect_download() as got:
    page.page.click(".download-file")
  path = str(tmp_path / "scores.npz")
  got.value.save_as(path)
  with open(path, "rb") as f, open(made["scores_path"], "rb") as g:
    digest = hashlib.sha256(f.read()).hexdigest()
    assert digest == hashlib.sha256(g.read()).hexdigest()
  assert page.page.inner_text(".file-sha256") == digest
  page.wait(
      "document.querySelector('.file-check').textContent.length")
  assert "checked" in page.page.inner_text(".file-check")
  # The file's arrays that the page holds anyway are not stored twice.
  assert "col_memorization" in _meta(made["out"])["downloads"][0]["pieces"]
  assert page.errors == [] and page.requests == []


@needs_browser
def test_keyboard_moves_between_tiles(page):
  first = page.page.locator("#grid .tile").first
  first.focus()
  page.page.keyboard.press("ArrowRight")
  second = page.grid_indices()[1]
  assert page.page.evaluate(
      "document.activeElement.dataset.index") == str(second)
  page.page.keyboard.press("Enter")
  page.page.wait_for_selector("#card:not([hidden])")
  assert page.page.inner_text("#card-title") == f"Training example #{second}"
  for _ in range(30):  # Tab never leaves the open card.
    page.page.keyboard.press("Tab")
    assert page.page.evaluate(
        "document.getElementById('card').contains(document.activeElement)")
  page.page.keyboard.press("Escape")
  page.page.wait_for_selector("#card", state="hidden")
  assert page.page.evaluate(  # Focus is back on the tile.
      "document.activeElement.dataset.index") == str(second)


@needs_browser
def test_page_without_images_or_labels_works(browser, release_root,
                                             tmp_path):
  out = str(tmp_path / "bare.html")
  report.write(release_root, "cifar10-inception", out, progress=False,
               with_images=False)
  tab = Page(browser, out)
  tab.open("#test/2")
  assert tab.page.inner_text("#card-title") == "Test example #2"
  tab.page.keyboard.press("Escape")
  text = tab.page.inner_text("body")
  assert "no images (not asked for)" in text
  assert not re.search(r"NaN|undefined|null|Infinity", text)
  assert tab.page.inner_text("#attribution").splitlines()[-1].startswith(
      "No attribution results for this collection. heldout lds writes")
  assert tab.page.is_disabled("#class")  # No labels: no class filter.
  tab.page.fill("#search-input", "train 99999")
  tab.page.press("#search-input", "Enter")
  tab.page.wait_for_selector("#card:not([hidden])")
  assert tab.page.inner_text("#card-title") == "No train example #99999"
  assert tab.errors == [] and tab.requests == []
  tab.close()


def _js_fmt(x):
  """The page's `fmt(x)`: 3 decimals, exponents beyond [1e-3, 1e5)."""
  if x != 0 and not 1e-3 <= abs(x) < 1e5:
    mantissa, exponent = f"{x:.2e}".split("e")
    return f"{mantissa}e{int(exponent):+d}"
  return f"{x:.3f}"


@needs_browser
def test_attribution_section_and_influencers(browser, made, tmp_path):
  tab = Page(browser, made["out"])
  tab.open("#attribution")
  rows = tab.page.eval_on_selector_all(
      "#lds-table tbody tr",
      "rows => rows.map(r => Array.from(r.cells).map(c => c.textContent))")
  assert rows == [[r.name, _js_fmt(r.mean), _js_fmt(r.se),
                   f"{r.num_undefined} / {N_TEST}", str(r.num_fit_runs)]
                  for r in made["lds_results"]]
  text = tab.page.inner_text("#attribution")
  assert "LDS) on 8 runs (ratio 0.5: runs 16-23), 60 test examples" in text
  # The section's test examples: highest LDS of the datamodels first.
  per_example = made["lds_results"][0].per_example
  shown = [int(i) for i in tab.page.eval_on_selector_all(
      "#att-grid .tile", "els => els.map(e => e.dataset.index)")]
  assert shown == list(np.lexsort((np.arange(N_TEST), -per_example))[:12])
  tab.images_loaded()
  _screenshot(tab.page.locator("#attribution"), tmp_path,
              "report-attribution.png")
  # A test card: its top positive and negative influencers by the
  # datamodels, in the file's order, and its LDS.
  with np.load(made["dm_path"]) as f:
    top = {sign: f[f"top_{sign}_idx"][:, :report_attribution.K_SHOWN]
           for sign in ("pos", "neg")}
  j = int(np.argmax((top["pos"] >= 0).sum(1) + (top["neg"] >= 0).sum(1)))
  tab.open(f"#test/{j}")
  for sign in ("pos", "neg"):
    tiles = tab.page.eval_on_selector_all(
        f"#card [data-influencers={sign}] .tile",
        "els => els.map(e => +e.dataset.index)")
    assert tiles == [int(i) for i in top[sign][j] if i >= 0]
    assert tiles  # This test example has influencers of both signs.
  assert tab.page.inner_text("#card [data-key=lds]") == (
      f"LDS of this test example: {_js_fmt(per_example[j])}")
  tab.images_loaded()
  _screenshot(tab.page, tmp_path, "report-attribution-card.png")
  assert tab.errors == [] and tab.requests == []
  tab.close()


@needs_browser
def test_thumbnails_beyond_the_budget_are_left_out(browser, made, tmp_path):
  out = str(tmp_path / "budget.html")
  report.write(made["root"], EXPERIMENT, out, progress=False,
               budget_bytes=4000)
  slots = _meta(out)["images"]["train"]["count"]
  assert 0 < slots < N_TRAIN
  tab = Page(browser, out)
  tab.open()
  count, loaded = tab.images_loaded()
  assert 0 < loaded == count
  assert tab.page.locator("#grid .noimg").count() > 0
  # The most memorized example is among those that keep theirs.
  top = tab.grid_indices()[0]
  assert tab.page.locator(f"#grid .tile[data-index='{top}'] img").count() == 1
  assert "exceed the size budget" in tab.page.inner_text("#provenance")
  assert tab.errors == [] and tab.requests == []
  tab.close()



# ------------------------------------------------------- hostile names --
# Names a collection's files and dataset may carry: markup that would run
# if it were ever parsed as HTML, and text a spreadsheet would read as a
# formula.

PAYLOAD = '<img src=x onerror="document.body.dataset.pwned=1">'
HOSTILE_CLASSES = ["=1+1", "+SUM(A1:A2)", "-2+3", "@SUM(1)", "\tTAB",
                   "\rCR", PAYLOAD, "plain", 'a "quoted", name', "9"]


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
  """A report of a tiny collection whose experiment, scores file and class
  names carry PAYLOAD or formulas; its images are random 8x8 grey ones."""
  root = str(tmp_path_factory.mktemp("hostile"))
  experiment = "tiny" + PAYLOAD
  _tiny_collection(root, [0.5], experiment=experiment)
  rng = np.random.default_rng(5)
  labels = np.arange(20) % len(HOSTILE_CLASSES)
  images = report.Images(
      rng.integers(0, 256, (20, 8, 8, 1)).astype(np.uint8),
      rng.integers(0, 256, (6, 8, 8, 1)).astype(np.uint8), "random 8x8",
      HOSTILE_CLASSES, labels, np.arange(6) % len(HOSTILE_CLASSES))
  scores = os.path.join(root, PAYLOAD + ".npz")
  aum = rng.normal(0.0, 1.0, 20)
  files.save_npz(scores, aum=aum)
  out = os.path.join(root, "hostile.html")
  report.write(root, experiment, out, scores=scores, images=images,
               progress=False)
  return {"out": out, "images": images, "aum": aum, "labels": labels,
          "experiment": experiment}


@needs_browser
def test_injected_markup_never_runs(browser, hostile):
  with open(hostile["out"], encoding="utf-8") as f:
    text = f.read()
  policy = re.search(r'http-equiv="Content-Security-Policy" content="(.*?)"',
                     text).group(1)
  assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
  assert page_lib.csp_hash(page_lib.static_text("report.js")) in policy
  tab = Page(browser, hostile["out"])
  tab.open()
  # The page's own script runs (allowed by its hash) and draws every name
  # as text.
  assert PAYLOAD in tab.page.inner_text("#provenance")
  assert tab.page.inner_text("h1").startswith(hostile["experiment"])
  assert PAYLOAD in tab.page.eval_on_selector_all(
      "#class option", "els => els.map(e => e.textContent)")
  assert f"Download {PAYLOAD}.npz" in tab.page.inner_text("#downloads")
  assert tab.errors == [] and tab.requests == []
  # Markup put into the page any other way does not run either: the
  # policy refuses inline handlers and scripts that are not the page's.
  tab.page.evaluate("""() => {
    window.violations = [];
    document.addEventListener('securitypolicyviolation',
                              e => violations.push(e.effectiveDirective));
    document.body.insertAdjacentHTML('beforeend',
      '<img src="data:," onerror="document.body.dataset.pwned = 2">');
    const s = document.createElement('script');
    s.textContent = 'document.body.dataset.pwned = 3';
    document.body.append(s);
  }""")
  tab.wait("window.violations.length >= 2")
  assert sorted(tab.page.evaluate("window.violations")) == [
      "script-src-attr", "script-src-elem"]
  assert tab.page.evaluate("document.body.dataset.pwned") is None
  # And the page still works.
  tab.page.fill("#search-input", "train 3")
  tab.page.press("#search-input", "Enter")
  tab.page.wait_for_selector("#card:not([hidden])")
  assert tab.page.inner_text("#card-title") == "Training example #3"
  assert tab.requests == []
  tab.close()


@needs_browser
def test_csv_cells_never_become_formulas(browser, hostile, tmp_path):
  tab = Page(browser, hostile["out"])
  tab.open()
  with tab.page.expect_download() as got:
    tab.page.click("#download-csv")
  path = str(tmp_path / "examples.csv")
  got.value.save_as(path)
  with open(path, encoding="utf-8", newline="") as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 20
  for row in rows:
    i = int(row["index"])
    name = HOSTILE_CLASSES[hostile["labels"][i]]
    # Shown as text by a spreadsheet: a leading ' before = + - @ tab CR.
    want = "'" + name if name[0] in "=+-@\t\r" else name
    assert row["class_name"] == want, (i, name)
    # Numbers the page writes stay numbers, negative ones included.
    assert float(row["aum"]) == hostile["aum"][i]
  assert any(float(row["aum"]) < 0 for row in rows)
  assert tab.errors == [] and tab.requests == []
  tab.close()


@needs_browser
def test_small_images_are_pixel_exact_and_dark_on_light(browser, hostile,
                                                        tmp_path):
  tab = Page(browser, hostile["out"])
  tab.open("#train/3")
  tab.images_loaded()
  assert set(tab.page.eval_on_selector_all(
      "img.thumb", "els => els.map(e => getComputedStyle(e)"
      ".imageRendering)")) == {"pixelated"}
  box = tab.page.locator("#card img.thumb.big").bounding_box()
  assert (box["width"], box["height"]) == (168, 168)  # 21 px per pixel.
  left, top = int(box["x"]), int(box["y"])  # It may sit between pixels.
  shot = tab.page.screenshot(clip={"x": left, "y": top, "width": 170,
                                   "height": 170})
  _screenshot(tab.page, tmp_path, "report-8x8-card.png")
  picture = np.asarray(PIL.Image.open(io.BytesIO(shot)).convert("L"))
  grey = hostile["images"].train[3, ..., 0].astype(np.int64)
  shown = 255 - 17 * ((grey + 8) // 17)  # 16 levels, dark on light.
  # Each image pixel is one flat square (its centre sampled) ...
  centres = (np.arange(8) * 21 + 10.5).astype(int)
  rows, cols = centres + int(box["y"] - top), centres + int(box["x"] - left)
  np.testing.assert_array_equal(picture[np.ix_(rows, cols)], shown)
  # ... and no screen pixel mixes two of them (smoothing would): every
  # one inside (the rounded corners aside) is one of the image's values.
  inside = picture[4:164, 4:164]
  assert set(np.unique(inside)) <= set(np.unique(shown))
  assert tab.errors == [] and tab.requests == []
  tab.close()
