"""`demo.py` end to end, in a subprocess, on the offline fixtures."""

import os
import re
import shutil
import subprocess
import sys

import tarfile

import numpy as np
import pytest

from conftest import EXPERIMENT, NUM_RUNS, RATIO
from heldout_tf.collection import checkpoints
from heldout_tf.data import pipelines
from heldout_tf.collection import evaluation
from heldout_tf.core import files
from heldout_tf import models
from heldout_tf.collection import experiments
from heldout_tf.collection import runs
from heldout_tf import synthetic

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


def test_run_lists_and_ranges_mean_the_same_as_elsewhere(release_root,
                                                        cifar10, tmp_path):
  """`--runs 00,1-2 --ratios 0.70` is runs 0, 1, 2 at 0.7; `python -m
  heldout_tf.cli.evaluate` works from any directory."""
  proc = subprocess.run(
      [sys.executable, "-m", "heldout_tf.cli.evaluate", "--experiment",
       EXPERIMENT, "--root", release_root, "--data_dir", cifar10[0],
       "--ratios", "0.70", "--runs", "00,1-2", "--require_match",
       "--noprogress"],
      capture_output=True, text=True, timeout=300, cwd=tmp_path,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO))
  assert proc.returncode == 0, proc.stderr
  for run in range(NUM_RUNS):
    assert f"{EXPERIMENT} ratio 0.7 run {run}: epoch {20 + run}" \
        in proc.stdout
  assert proc.stdout.count("32 out of 32 predictions match") == NUM_RUNS


def test_mismatch_is_reported_and_fails_with_require_match(
    release_root, cifar10, tmp_path):
  root = str(tmp_path / "root")
  shutil.copytree(release_root, root)
  path = runs.run_dir(root, EXPERIMENT, RATIO, 1)
  aux = runs.read_aux(path)
  aux["correctness_train"][[0, 2]] ^= True
  files.save_npz(os.path.join(path, runs.AUX_FILENAME), **aux)
  args = ["--experiment", EXPERIMENT, "--root", root, "--data_dir",
          cifar10[0], "--ratios", str(RATIO), "--runs", "1", "--split", "train"]
  proc = run_demo(*args)
  assert proc.returncode == 0, proc.stderr
  assert "46 out of 48 predictions match" in proc.stdout
  flipped = aux["index_train"][[0, 2]]
  assert f"mismatched example indices: {flipped[0]}, {flipped[1]}" \
      in proc.stdout
  assert run_demo(*args, "--require_match").returncode == 1


def test_missing_run_says_how_to_download(tmp_path):
  proc = run_demo("--experiment", "cifar100-inception", "--ratios", "0.3",
                  "--runs", "7", env={"HELDOUT_ROOT": str(tmp_path)})
  assert proc.returncode == 2
  assert f"No run found at {tmp_path}/cifar100-inception/0.3/7" in proc.stderr
  assert ("gsutil cp gs://gresearch/heldout-training-checkpoints/"
          "cifar100-inception.tar.gz") in proc.stderr
  assert ("https://storage.googleapis.com/gresearch/"
          "heldout-training-checkpoints/cifar100-inception.tar.gz"
          in proc.stderr)
  assert ("python -m heldout_tf.cli.download --experiment cifar100-inception "
          f"--root {tmp_path} --ratios 0.3 --runs 7\n") in proc.stderr
  assert (f"mkdir -p {tmp_path} && tar xzf cifar100-inception.tar.gz -C "
          f"{tmp_path}") in proc.stderr
  assert "Traceback" not in proc.stderr


def test_extract_command_of_the_help_creates_the_directory(tmp_path):
  """The printed `tar` line works as is when the destination is new."""
  member = tmp_path / "aux_arrays.npz"
  member.write_bytes(b"aux")
  with tarfile.open(tmp_path / "cifar10-inception.tar.gz", "w:gz") as tar:
    tar.add(member, arcname="cifar10-inception/0.7/0/aux_arrays.npz")
  dest = tmp_path / "new dir" / "runs"
  help_text = experiments.download_instructions("cifar10-inception", str(dest))
  command = [line for line in help_text.splitlines() if "tar xzf" in line]
  assert len(command) == 1
  subprocess.run(["bash", "-c", command[0]], cwd=tmp_path, check=True)
  assert (dest / "cifar10-inception" / "0.7" / "0" /
          "aux_arrays.npz").read_bytes() == b"aux"


def test_checkpoint_without_aux_arrays_is_reported_as_such(release_root,
                                                          tmp_path):
  root = str(tmp_path / "root")
  shutil.copytree(release_root, root)
  path = runs.run_dir(root, EXPERIMENT, RATIO, 2)
  os.remove(os.path.join(path, runs.AUX_FILENAME))
  proc = run_demo("--experiment", EXPERIMENT, "--root", root, "--runs", "0,2")
  assert proc.returncode == 2
  assert (f"{path} has a checkpoint but no aux_arrays.npz "
          f"({path}/aux_arrays.npz does not exist)") in proc.stderr
  assert "No run found" not in proc.stderr
  assert "python -m heldout_tf.cli.download" in proc.stderr


@pytest.mark.parametrize("runs_flag,message", [
    ("0,abc", "error: --runs: 'abc' is not a run id (an integer >= 0"),
    ("-1", "error: --runs: '-1' is not a run id"),
    (",", "error: --runs: nothing in ','"),
])
def test_bad_run_ids_are_an_error_line(tmp_path, runs_flag, message):
  proc = run_demo("--root", str(tmp_path), f"--runs={runs_flag}")
  assert proc.returncode == 2
  assert proc.stderr.startswith(message), proc.stderr
  assert "Traceback" not in proc.stderr


def test_bad_ratio_is_an_error_line(tmp_path):
  proc = run_demo("--root", str(tmp_path), "--ratios", "1.5")
  assert proc.returncode == 2
  assert "error: --ratios: ratio must be in (0, 1], got '1.5'" in proc.stderr
  assert "Traceback" not in proc.stderr


def test_corrupt_checkpoint_is_an_error_line(release_root, cifar10,
                                             tmp_path):
  root = str(tmp_path / "root")
  shutil.copytree(release_root, root)
  data_file = os.path.join(runs.run_dir(root, EXPERIMENT, RATIO, 1),
                           "checkpoints", "ckpt-1001.data-00000-of-00001")
  with open(data_file, "r+b") as f:
    f.truncate(os.path.getsize(data_file) // 2)
  proc = run_demo("--experiment", EXPERIMENT, "--root", root, "--data_dir",
                  cifar10[0], "--runs", "all")
  assert proc.returncode == 1
  assert "run 0: epoch 20" in proc.stdout  # Runs before it are shown.
  assert f"error: {data_file}: corrupt checkpoint data" in proc.stderr
  assert "Traceback" not in proc.stderr


def test_demo_and_the_mnist_trainer_import_in_one_process():
  proc = subprocess.run(
      [sys.executable, "-c", "import demo, mnist_example.train"],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr


def test_unknown_experiment():
  proc = run_demo("--experiment", "mnist-resnet")
  assert proc.returncode != 0
  assert "--experiment" in proc.stderr and "cifar10-inception" in proc.stderr


def test_missing_dataset_is_a_clear_error(release_root, tmp_path):
  proc = run_demo("--experiment", EXPERIMENT, "--root", release_root,
                  "--data_dir", str(tmp_path), "--runs", "0")
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
                  "--ratios", str(RATIO), "--runs", "0", "--data_dir",
                  str(tmp_path))
  assert proc.returncode == 1
  assert "error:" in proc.stderr and "shape" in proc.stderr
  assert "Traceback" not in proc.stderr


def test_imagenet_needs_data_dir(release_root, tmp_path):
  root = tmp_path / "root"
  shutil.copytree(os.path.join(release_root, EXPERIMENT),
                  root / "imagenet-resnet50")
  args = ["--experiment", "imagenet-resnet50", "--root", str(root),
          "--ratios", str(RATIO), "--runs", "0"]
  proc = run_demo(*args)
  assert proc.returncode == 2  # A flag is missing.
  assert "error: ImageNet needs --data_dir" in proc.stderr
  proc = run_demo(*args, "--download")
  assert proc.returncode == 2
  assert "--download does not apply to ImageNet" in proc.stderr


def test_imagenet_tfds_needs_an_index_map(release_root, tmp_path):
  root = tmp_path / "root"
  shutil.copytree(os.path.join(release_root, EXPERIMENT),
                  root / "imagenet-resnet50")
  tfds_dir = str(tmp_path / "tfds")
  synthetic.write_imagenet_tfds(tfds_dir, {"validation": (
      synthetic.random_jpegs(1), [3], ["ILSVRC2012_val_00000001.JPEG"])})
  args = ["--experiment", "imagenet-resnet50", "--root", str(root),
          "--ratios", str(RATIO), "--runs", "0", "--data_dir", tfds_dir]
  proc = run_demo(*args)
  assert proc.returncode == 2  # A flag is missing.
  assert (f"error: {tfds_dir}/imagenet2012/5.1.0 is a tfds imagenet2012 "
          "dataset: it needs an index map (--imagenet_index_map)"
          in proc.stderr)
  assert "Traceback" not in proc.stderr
  index_map = tmp_path / "map.csv"
  index_map.write_text("validation,ILSVRC2012_val_00000001.JPEG,first\n")
  proc = run_demo(*args, "--imagenet_index_map", str(index_map))
  assert proc.returncode == 1
  assert (f"error: {index_map}:1: index must be an integer >= 0, got "
          "'first'") in proc.stderr
  proc = run_demo("--experiment", EXPERIMENT, "--root", release_root,
                  "--imagenet_index_map", str(index_map))
  assert proc.returncode == 2
  assert "--imagenet_index_map does not apply to cifar10-inception" \
      in proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("source", ["tfrecords", "tfds"])
def test_imagenet_resnet50_end_to_end(tmp_path, source):
  """A ResNet-50 run on indexed TFRecords or on a tfds imagenet2012 with an
  index map, examples out of index order."""
  records_dir, root = str(tmp_path / "records"), str(tmp_path / "root")
  os.makedirs(records_dir)
  records = os.path.join(records_dir, "validation-00000-of-00001")
  indices = [4, 1, 5, 0, 3, 2]
  images = synthetic.random_jpegs(6)
  model = synthetic.randomize(models.build_model("resnet50", 1000),
                                     "resnet50", seed=5)
  # Label half the examples with the model's own prediction, so the
  # recorded correctness has both values.
  synthetic.write_imagenet_records(records, [0] * 6, indices,
                                          images=images)
  predicted = evaluation.evaluate(model, pipelines.load("imagenet", records_dir),
                                  "test", progress=False).logits.argmax(-1)
  labels = [p if i % 2 else (p + 1) % 1000 for i, p in enumerate(predicted)]
  if source == "tfrecords":
    synthetic.write_imagenet_records(records, labels, indices,
                                            images=images)
    data_args = ["--data_dir", records_dir]
  else:
    data_dir = str(tmp_path / "tensorflow_datasets")
    file_names = [f"ILSVRC2012_val_{i + 1:08d}.JPEG" for i in indices]
    synthetic.write_imagenet_tfds(
        data_dir, {"validation": (images, labels, file_names)})
    index_map = tmp_path / "index.csv"
    index_map.write_text("split,file_name,index\n" + "".join(
        f"validation,{name},{i}\n" for name, i in zip(file_names, indices)))
    data_args = ["--data_dir", data_dir, "--imagenet_index_map",
                 str(index_map)]
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
  args = ["--experiment", "imagenet-resnet50", "--root", root, "--ratios",
          str(RATIO), "--runs", "0", *data_args]
  proc = run_demo(*args, "--require_match")
  assert proc.returncode == 0, proc.stderr
  assert "epoch 3, global step 7, trained on 70.0% of the training set" \
      in proc.stdout
  assert "test accuracy: 50.00%" in proc.stdout
  assert "6 out of 6 predictions match" in proc.stdout
  if source == "tfds":
    # A file name the map does not know stops the run, naming it.
    index_map.write_text("".join(
        f"validation,{name.lower()},{i}\n"
        for name, i in zip(file_names, indices)))
    proc = run_demo(*args)
    assert proc.returncode == 1
    assert (f"error: ImageNet index map {index_map} has no validation line "
            f"for file names {', '.join(file_names[:5])} (reading imagenet "
            "test)\n") in proc.stderr
    assert "Traceback" not in proc.stderr

