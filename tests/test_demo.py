"""`demo.py` end to end, in a subprocess, on the offline fixtures."""

import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import EXPERIMENT, NUM_RUNS, RATIO
from heldout_tf import checkpoints
from heldout_tf import data
from heldout_tf import evaluation
from heldout_tf import models
from heldout_tf import runs
import release_fixtures

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_demo(*args, env=None):
  return subprocess.run(
      [sys.executable, os.path.join(REPO, "demo.py"), *args],
      capture_output=True, text=True, timeout=300,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **(env or {})))


def test_all_runs_match(release_root, cifar10):
  proc = run_demo("--experiment", EXPERIMENT, "--root", release_root,
                  "--data_dir", cifar10[0], "--runs", "all",
                  "--require_match")
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.count("32 out of 32 predictions match") == NUM_RUNS
  for run in range(NUM_RUNS):
    assert (f"run {run}: epoch {20 + run}, global step {1000 + run}, "
            "trained on 68.8% of the training set") in proc.stdout
  assert len(re.findall(r"test accuracy: \d+\.\d\d%", proc.stdout)) == NUM_RUNS


def test_mismatch_is_reported_and_fails_with_require_match(
    release_root, cifar10, tmp_path):
  root = str(tmp_path / "root")
  shutil.copytree(release_root, root)
  path = runs.run_dir(root, EXPERIMENT, RATIO, 1)
  aux = runs.read_aux(path)
  aux["correctness_train"][[0, 2]] ^= True
  runs.save_npz(os.path.join(path, runs.AUX_FILENAME), **aux)
  args = ["--experiment", EXPERIMENT, "--root", root, "--data_dir",
          cifar10[0], "--ratio", str(RATIO), "--run", "1", "--split", "train"]
  proc = run_demo(*args)
  assert proc.returncode == 0, proc.stderr
  assert "46 out of 48 predictions match" in proc.stdout
  flipped = aux["index_train"][[0, 2]]
  assert f"mismatched example indices: {flipped[0]}, {flipped[1]}" \
      in proc.stdout
  assert run_demo(*args, "--require_match").returncode == 1


def test_missing_run_says_how_to_download(tmp_path):
  proc = run_demo("--experiment", "cifar100-inception", "--ratio", "0.3",
                  "--run", "7", env={"HELDOUT_ROOT": str(tmp_path)})
  assert proc.returncode == 2
  assert f"No run found at {tmp_path}/cifar100-inception/0.3/7" in proc.stderr
  assert ("gsutil cp gs://gresearch/heldout-training-checkpoints/"
          "cifar100-inception.tar.gz") in proc.stderr
  assert ("https://storage.googleapis.com/gresearch/"
          "heldout-training-checkpoints/cifar100-inception.tar.gz"
          in proc.stderr)
  assert ("python -m heldout_tf.download --experiment cifar100-inception "
          f"--dest {tmp_path}") in proc.stderr


def test_unknown_experiment():
  proc = run_demo("--experiment", "mnist-resnet")
  assert proc.returncode != 0
  assert "--experiment" in proc.stderr and "cifar10-inception" in proc.stderr


def test_missing_dataset_is_a_clear_error(release_root, tmp_path):
  proc = run_demo("--experiment", EXPERIMENT, "--root", release_root,
                  "--data_dir", str(tmp_path), "--run", "0")
  assert proc.returncode == 1
  assert "error: tfds dataset 'cifar10:3.0.2'" in proc.stderr
  assert "is not prepared in" in proc.stderr
  assert "Traceback" not in proc.stderr


def test_checkpoint_of_other_experiment_is_a_clear_error(release_root,
                                                         tmp_path):
  root = tmp_path / "root"
  shutil.copytree(os.path.join(release_root, EXPERIMENT),
                  root / "cifar100-inception")
  proc = run_demo("--experiment", "cifar100-inception", "--root", str(root),
                  "--ratio", str(RATIO), "--run", "0", "--data_dir",
                  str(tmp_path))
  assert proc.returncode == 1
  assert "error:" in proc.stderr and "shape" in proc.stderr
  assert "Traceback" not in proc.stderr


def test_imagenet_needs_data_dir(release_root, tmp_path):
  root = tmp_path / "root"
  shutil.copytree(os.path.join(release_root, EXPERIMENT),
                  root / "imagenet-resnet50")
  args = ["--experiment", "imagenet-resnet50", "--root", str(root),
          "--ratio", str(RATIO), "--run", "0"]
  proc = run_demo(*args)
  assert proc.returncode == 1
  assert "error: ImageNet needs --data_dir" in proc.stderr
  proc = run_demo(*args, "--download")
  assert proc.returncode == 2
  assert "--download does not apply to ImageNet" in proc.stderr


@pytest.mark.slow
def test_imagenet_resnet50_end_to_end(tmp_path):
  """A ResNet-50 run on indexed TFRecords, records out of index order."""
  data_dir, root = str(tmp_path / "imagenet"), str(tmp_path / "root")
  os.makedirs(data_dir)
  records = os.path.join(data_dir, "validation-00000-of-00001")
  indices = [4, 1, 5, 0, 3, 2]
  model = release_fixtures.randomize(models.build_model("resnet50", 1000),
                                     "resnet50", seed=5)
  # Label half the examples with the model's own prediction, so the
  # recorded correctness has both values.
  release_fixtures.write_imagenet_records(records, [0] * 6, indices)
  predicted = evaluation.evaluate(model, data.load("imagenet", data_dir),
                                  "test", progress=False).logits.argmax(-1)
  labels = [p if i % 2 else (p + 1) % 1000 for i, p in enumerate(predicted)]
  release_fixtures.write_imagenet_records(records, labels, indices)
  path = runs.run_dir(root, "imagenet-resnet50", RATIO, 0)
  checkpoints.save(model, os.path.join(path, runs.CHECKPOINTS_DIRNAME),
                   step=7, epoch=3, global_step=7)
  correct = np.zeros(6, bool)
  correct[indices] = [i % 2 == 1 for i in range(6)]
  subset = np.array([0, 2, 3, 5, 6, 8, 9])
  removed = np.array([1, 4, 7])
  runs.write_aux(path,
                 correctness={"train": np.ones(7, bool),
                              "removed": np.zeros(3, bool), "test": correct},
                 index={"train": subset, "removed": removed,
                        "test": np.arange(6)},
                 subsample_idx=subset)
  proc = run_demo("--experiment", "imagenet-resnet50", "--root", root,
                  "--ratio", str(RATIO), "--run", "0", "--data_dir", data_dir,
                  "--require_match")
  assert proc.returncode == 0, proc.stderr
  assert "epoch 3, global step 7, trained on 70.0% of the training set" \
      in proc.stdout
  assert "test accuracy: 50.00%" in proc.stdout
  assert "6 out of 6 predictions match" in proc.stdout
