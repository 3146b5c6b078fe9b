r"""The MNIST main job before and after the one pipeline, side by side.

  python benchmarks/main_job.py                 # ~15 min on 2 CPU cores
  python benchmarks/main_job.py --quick         # a check that it runs
  python benchmarks/main_job.py --baseline 167ee38

Runs `python -m mnist_example.train` of the baseline commit (default: the
last commit before the one-pipeline change, when the main job trained
through its own MLP-ensemble pipeline) and of this checkout, taking turns,
in fresh processes with the same flags and data:

- speed: 64 runs x 2 epochs of real-MNIST size (60 000 / 10 000 28x28x1
  images: a synthetic tfds `mnist` prepared in a temporary directory, the
  embedded digits tiled with small shifts), precision auto, group size
  auto; training models/hour as each prints it, and wall time;
- quality: the default main job's setup on the embedded digits (10 epochs,
  ratio 0.7) with 10 % flipped labels, fewer runs: mean test accuracy of
  the runs and the memorization ROC AUC of the flipped labels.

Prints each figure and the ratio this/baseline. The baseline is taken from
this repository's own history (`git archive`); nothing is downloaded.
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # Runs from a checkout, installed or not.
BASELINE = "167ee38"  # The main job's own pipeline, before the one workflow.


def _checkout(rev: str, where: str) -> str:
  """The tree of `rev` (this repository's history) extracted into `where`."""
  os.makedirs(where)
  archive = subprocess.run(["git", "-C", REPO, "archive", rev],
                           capture_output=True, check=True).stdout
  subprocess.run(["tar", "-x", "-C", where], input=archive, check=True)
  return where


def _mnist_size_tfds(data_dir: str, n_train: int, n_test: int):
  """A tfds `mnist:3.0.1` of real-MNIST size made of the embedded digits,
  each copy shifted by up to 2 pixels (speed does not depend on content)."""
  # pylint: disable=g-import-not-at-top
  import tensorflow as tf
  import tensorflow_datasets as tfds
  from heldout_tf.data import mnist
  # pylint: enable=g-import-not-at-top
  digits = mnist.load("digits")
  rng = np.random.default_rng(0)

  def tiled(images, labels, n):
    idx = np.arange(n) % len(labels)
    shifts = rng.integers(-2, 3, size=(n, 2))
    out = np.stack([np.roll(images[i], tuple(s), axis=(0, 1))
                    for i, s in zip(idx, shifts)])
    return out.astype(np.uint8), labels[idx].astype(np.int64)

  splits = {}
  for split, n in (("train", n_train), ("test", n_test)):
    images, labels = tiled(digits.images(split), digits.labels(split), n)
    splits[split] = tf.data.Dataset.from_tensor_slices(
        {"image": images, "label": labels})
  features = tfds.features.FeaturesDict(dict(
      image=tfds.features.Image(shape=(28, 28, 1)),
      label=tfds.features.ClassLabel(num_classes=10)))
  tfds.dataset_builders.store_as_tfds_dataset(
      name="mnist", version="3.0.1", features=features, data_dir=data_dir,
      split_datasets=splits, disable_shuffling=True)


def _run(tree: str, argv, env) -> dict:
  """One `mnist_example.train` in a fresh process of `tree`: its printed
  figures and wall time."""
  start = time.perf_counter()
  out = subprocess.run([sys.executable, "-m", "mnist_example.train", *argv],
                       cwd=tree, env=dict(env, PYTHONPATH=tree),
                       capture_output=True, text=True)
  wall = time.perf_counter() - start
  if out.returncode:
    raise SystemExit(f"{tree}: mnist_example.train failed:\n{out.stderr}")
  text = out.stdout
  got = {"wall": wall}
  rate = re.search(r"([0-9]+(?:\.[0-9]+)?) models/hour", text)
  got["models_per_hour"] = float(rate.group(1)) if rate else float("nan")
  accuracy = re.search(r"mean test accuracy ([0-9]+\.[0-9]+)", text)
  if accuracy:
    got["accuracy"] = float(accuracy.group(1))
  auc = re.search(r"ROC AUC ([0-9]+\.[0-9]+)", text)
  if auc:
    got["auc"] = float(auc.group(1))
  return got


def _accuracy_of(root: str) -> float:
  """Mean test accuracy of every run under `root` (its aux arrays)."""
  values = []
  for directory, _, names in os.walk(root):
    if "aux_arrays.npz" in names:
      with np.load(os.path.join(directory, "aux_arrays.npz")) as f:
        values.append(f["correctness_test"].mean())
  return float(np.mean(values))


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--baseline", default=BASELINE,
                      help="The commit to compare with.")
  parser.add_argument("--quick", action="store_true",
                      help="Small sizes: a check that the script runs.")
  parser.add_argument("--repeats", type=int, default=2,
                      help="Speed runs of each, taking turns.")
  args = parser.parse_args()
  quick = args.quick
  n_train, n_test = (6000, 1000) if quick else (60000, 10000)
  speed_runs, quality_runs = (8, 16) if quick else (64, 128)
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  with tempfile.TemporaryDirectory() as tmp:
    baseline = _checkout(args.baseline, os.path.join(tmp, "baseline"))
    data_dir = os.path.join(tmp, "tfds")
    _mnist_size_tfds(data_dir, n_train, n_test)
    # Each tree's own name for the same data: the baseline's 'mnist' is
    # strictly tfds; this checkout's strict tfds name carries the version.
    dataset = {baseline: "mnist", REPO: "mnist:3.0.1"}
    trees = {"baseline": baseline, "this": REPO}
    print(f"speed: {speed_runs} runs x 2 epochs, {n_train} / {n_test} "
          "MNIST-size images, precision auto, group size auto")
    speed = {name: [] for name in trees}
    for k in range(args.repeats):
      for name, tree in trees.items():
        root = os.path.join(tmp, f"speed-{name}-{k}")
        got = _run(tree, [
            "--stage=train", f"--num_runs={speed_runs}", "--epochs=2",
            f"--dataset={dataset[tree]}", f"--data_dir={data_dir}",
            f"--root={root}", "--noprogress"], env)
        got["accuracy"] = _accuracy_of(root)
        speed[name].append(got)
        print(f"  {name:8s} {got['models_per_hour']:7.0f} models/hour "
              f"training, wall {got['wall']:6.1f} s, test accuracy "
              f"{got['accuracy']:.4f}", flush=True)
    rate = {n: statistics.median(g["models_per_hour"] for g in speed[n])
            for n in trees}
    ratio = rate["this"] / rate["baseline"]
    print(f"models/hour (median): baseline {rate['baseline']:.0f}, this "
          f"{rate['this']:.0f}: this/baseline {ratio:.2f}x")
    print(f"quality: {quality_runs} runs x 10 epochs on the embedded digits, "
          "10 % flipped labels")
    noise = {baseline: "--label_noise=0.1", REPO: "--noise=label:0.1"}
    quality = {}
    for name, tree in trees.items():
      root = os.path.join(tmp, f"quality-{name}")
      got = _run(tree, [
          f"--num_runs={quality_runs}", "--dataset=digits", noise[tree],
          f"--root={root}", "--noprogress", "--nosave_checkpoints"], env)
      got["accuracy"] = _accuracy_of(root)
      quality[name] = got
      print(f"  {name:8s} test accuracy {got['accuracy']:.4f}, noise ROC AUC "
            f"{got.get('auc', float('nan')):.3f}, wall {got['wall']:.0f} s",
            flush=True)
    this, base = quality["this"], quality["baseline"]
    print(f"test accuracy this - baseline: "
          f"{this['accuracy'] - base['accuracy']:+.4f}; noise AUC this - "
          f"baseline: {this.get('auc', np.nan) - base.get('auc', np.nan):+.3f}")


if __name__ == "__main__":
  main()
