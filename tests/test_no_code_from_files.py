"""No code is imported because a file names it: a collection's recorded
model, a prepared tfds dataset's features.json, a recorded tfds source."""

import ast
import glob
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from heldout_tf import synthetic
from heldout_tf.core import errors
from heldout_tf.data import image_data
from heldout_tf.data import mnist
from heldout_tf.data import order
from heldout_tf.data import pipelines
from heldout_tf.data import sources
from heldout_tf.data import tfds as tfds_lib
from heldout_tf.cli import quality
from heldout_tf.report import images as report_images

ROOT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N_TRAIN, N_TEST = 40, 12
# A module that leaves a marker when imported, and builds an MLP.
EVIL_MODULE = """
import os
open(os.environ["MARKER"], "w").write("imported")
from heldout_tf import models
def build(num_classes, **options):
  return models.MLP(num_classes, hidden=(8,))
"""
EVIL_FEATURE = """
import os
open(os.environ["MARKER"], "w").write("imported")
"""


def _npz(path):
  rng = np.random.default_rng(0)
  labels = np.arange(N_TRAIN + N_TEST) % 3
  images = (rng.integers(0, 60, (N_TRAIN + N_TEST, 6, 6, 1))
            + 60 * labels[:, None, None, None]).astype(np.uint8)
  np.savez(path, x_train=images[:N_TRAIN], y_train=labels[:N_TRAIN],
           x_test=images[N_TRAIN:], y_test=labels[N_TRAIN:])
  return str(path)


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
  """A tiny collection trained with signals (model mlp) and its root."""
  where = tmp_path_factory.mktemp("scored")
  data = _npz(where / "tiny.npz")
  root = str(where / "runs")
  quality.main(["--root", root, "--dataset", "npz:" + data, "--num_runs",
                "3", "--model", "mlp", "--recipe", "mnist-mlp", "--epochs",
                "1", "--batch_size", "8", "--precision", "float32",
                "--ssft_epochs", "0", "--noreport", "--nofigures",
                "--noprogress"])
  return root


def _with_model(scored_root, tmp_path, model):
  """A copy of the collection whose config.json records `model`."""
  root = str(tmp_path / "copy")
  shutil.copytree(scored_root, root)
  (config_path,) = [os.path.join(d, "config.json")
                    for d, _, names in os.walk(root)
                    if "config.json" in names]
  with open(config_path) as f:
    config = json.load(f)
  config["model"] = model
  with open(config_path, "w") as f:
    json.dump(config, f)
  return root


def _quality(root, cwd, *flags):
  env = dict(os.environ, PYTHONPATH=ROOT_DIR,
             MARKER=os.path.join(cwd, "marker"))
  return subprocess.run(
      [sys.executable, "-m", "heldout_tf.cli.quality", "--root", root,
       "--removal_models", "1", "--removal_fractions", "0.5", "--noreport",
       "--nofigures", "--noprogress", *flags],
      capture_output=True, text=True, env=env, cwd=cwd, timeout=600)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["evilmod:build", "os:_exit"])
def test_a_recorded_user_module_is_never_imported(scored, tmp_path, model):
  root = _with_model(scored, tmp_path, model)
  cwd = tmp_path / "cwd"  # An unpacked download holding the module.
  cwd.mkdir()
  (cwd / "evilmod.py").write_text(EVIL_MODULE)
  out = _quality(root, str(cwd))
  assert out.returncode == 1, out.stderr
  lines = out.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
  assert f"records the user module {model!r}" in lines[0]
  assert f"pass --model {model}" in lines[0]
  assert not (cwd / "marker").exists()


def test_a_named_user_module_must_equal_the_recorded_one(scored, tmp_path,
                                                         capsys):
  root = _with_model(scored, tmp_path, "evilmod:build")
  with pytest.raises(SystemExit) as e:
    from heldout_tf import cli  # pylint: disable=g-import-not-at-top
    cli.run(quality.main, ["--root", root, "--removal_models", "1",
                           "--model", "othermod:build", "--noprogress"])
  assert e.value.code == 1
  err = capsys.readouterr().err
  assert "--model othermod:build differs from the model 'evilmod:build'" in (
      err)


@pytest.mark.slow
def test_the_user_module_named_on_the_command_line_is_used(scored,
                                                           tmp_path):
  root = _with_model(scored, tmp_path, "evilmod:build")
  cwd = tmp_path / "cwd"
  cwd.mkdir()
  (cwd / "evilmod.py").write_text(EVIL_MODULE)
  out = _quality(root, str(cwd), "--model", "evilmod:build")
  assert out.returncode == 0, out.stderr
  assert (cwd / "marker").read_text() == "imported"


def test_a_built_in_recorded_model_needs_no_flag():
  from heldout_tf import models  # pylint: disable=g-import-not-at-top
  assert models.recorded_model("mlp") == "mlp"
  assert models.recorded_model("small_inception", "small_inception") == (
      "small_inception")
  with pytest.raises(errors.ConfigError, match="differs"):
    models.recorded_model("mlp", "resnet9")
  for bad in (None, 3, "", "not a model"):
    with pytest.raises(errors.ConfigError, match="key 'model'"):
      models.recorded_model(bad)


# ------------------------------------------------------------------ tfds --


def _tfds_dataset(data_dir, name="mydata"):
  rng = np.random.default_rng(1)
  features = tfds.features.FeaturesDict(dict(
      image=tfds.features.Image(shape=(6, 6, 1)),
      label=tfds.features.ClassLabel(num_classes=3)))
  splits = {}
  for split, n in (("train", N_TRAIN), ("test", N_TEST)):
    splits[split] = tf.data.Dataset.from_tensor_slices(dict(
        image=rng.integers(0, 255, (n, 6, 6, 1)).astype(np.uint8),
        label=(np.arange(n) % 3).astype(np.int64)))
  tfds.dataset_builders.store_as_tfds_dataset(
      name=name, version="1.0.0", features=features, data_dir=data_dir,
      split_datasets=splits, disable_shuffling=True)
  return os.path.join(data_dir, name, "1.0.0", "features.json")


def _plant_feature(features_path, class_name):
  with open(features_path) as f:
    text = f.read()
  text = text.replace(
      "tensorflow_datasets.core.features.class_label_feature.ClassLabel",
      class_name)
  with open(features_path, "w") as f:
    f.write(text)


def test_a_clean_tfds_dataset_loads(tmp_path):
  _tfds_dataset(str(tmp_path))
  data = sources.load("mydata", data_dir=str(tmp_path))
  assert len(data.train_labels) == N_TRAIN and data.num_classes == 3


def test_a_features_json_naming_other_code_is_refused(tmp_path, monkeypatch):
  features = _tfds_dataset(str(tmp_path / "tfds"))
  _plant_feature(features, "evilfeat.Evil")
  code = tmp_path / "code"
  code.mkdir()
  (code / "evilfeat.py").write_text(EVIL_FEATURE)
  marker = tmp_path / "marker"
  monkeypatch.setenv("MARKER", str(marker))
  monkeypatch.syspath_prepend(str(code))
  with pytest.raises(image_data.DataError) as e:
    sources.load("mydata", data_dir=str(tmp_path / "tfds"))
  assert str(e.value) == (
      f"{features}: feature type 'evilfeat.Evil' is not one the kit reads "
      "(tfds would import its module; no code is imported because a file "
      "names it)")
  # The report rebuilding a `heldout train` collection's recorded source.
  config = {"source": "mydata", "dataset": "mydata", "seed": 0}
  images, note = report_images.load("mydata-mlp", config,
                                    str(tmp_path / "tfds"))
  assert images is None and "evilfeat.Evil" in note
  assert not marker.exists() and "evilfeat" not in sys.modules


@pytest.mark.parametrize("name", ["huggingface:mnist", "../x", "a b",
                                  "mnist:latest"])
def test_tfds_names_that_load_other_code_are_refused(name, tmp_path):
  with pytest.raises(errors.UsageError, match="not a tfds dataset name"):
    sources.load(name, data_dir=str(tmp_path))
  with pytest.raises(errors.UsageError, match="not a tfds dataset name"):
    order.tfds_original_order(name, "train", str(tmp_path))


# Every reader of a prepared tfds dataset, each given `(name, data_dir)`.
READERS = {
    "sources.load": lambda name, data_dir: sources.load(name, data_dir),
    "mnist.load auto": lambda name, data_dir: mnist.load("auto", data_dir),
    "the evaluation pipeline": lambda name, data_dir: pipelines.load(
        name, data_dir).split("test"),
    "the tfds order": lambda name, data_dir: order.tfds_original_order(
        name, "train", data_dir),
    "class names": tfds_lib.class_names,
}


@pytest.mark.parametrize("reader", sorted(READERS))
def test_every_tfds_reader_checks_the_features_first(reader, tmp_path,
                                                     monkeypatch):
  features = _tfds_dataset(str(tmp_path / "tfds"), name="mnist")
  _plant_feature(features, "evilfeat.Evil")
  code = tmp_path / "code"
  code.mkdir()
  (code / "evilfeat.py").write_text(EVIL_FEATURE)
  monkeypatch.setenv("MARKER", str(tmp_path / "marker"))
  monkeypatch.syspath_prepend(str(code))
  with pytest.raises(image_data.DataError, match="'evilfeat.Evil' is not one"):
    READERS[reader]("mnist", str(tmp_path / "tfds"))
  assert not (tmp_path / "marker").exists()
  assert "evilfeat" not in sys.modules


def test_a_tfds_imagenet2012_is_checked_before_it_is_opened(tmp_path):
  version_dir = synthetic.write_imagenet_tfds(str(tmp_path), {"validation": (
      synthetic.random_jpegs(1, shape=(40, 40, 3)), [3], ["a.JPEG"])})
  index_map = tmp_path / "map.csv"
  index_map.write_text("validation,a.JPEG,0\n")
  _plant_feature(os.path.join(version_dir, "features.json"), "os.Evil")
  dataset = pipelines.load("imagenet", str(tmp_path),
                           index_map=str(index_map))
  with pytest.raises(image_data.DataError, match="'os.Evil' is not one"):
    dataset.split("test")


# Where the kit opens a tfds dataset (tensorflow_datasets as `tfds`): only
# in the one tfds reader, and where ImageNet opens a version directory
# (after `tfds_lib.check_version_dir`).
OPENERS = ("load", "builder", "builder_from_directory", "data_source",
           "as_data_source")
EXPECTED_OPENS = {("data/tfds.py", "load"), ("data/tfds.py", "builder"),
                  ("data/imagenet.py", "builder_from_directory")}


def test_every_tfds_open_is_in_the_one_tfds_reader():
  package = os.path.join(ROOT_DIR, "heldout_tf")
  found = set()
  for path in glob.glob(os.path.join(package, "**", "*.py"), recursive=True):
    with open(path, encoding="utf-8") as f:
      tree = ast.parse(f.read())
    for node in ast.walk(tree):
      if (isinstance(node, ast.Call) and
          isinstance(node.func, ast.Attribute) and
          node.func.attr in OPENERS and
          isinstance(node.func.value, ast.Name) and
          node.func.value.id == "tfds"):
        found.add((os.path.relpath(path, package), node.func.attr))
  assert found == EXPECTED_OPENS
