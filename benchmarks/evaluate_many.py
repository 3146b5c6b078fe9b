"""Evaluating K runs of one experiment: naive loop vs the kit's way.

Both evaluate the same K synthetic SmallInception checkpoints on the same
in-memory images, in one process:

- naive: per run, build a fresh model, create its variables, wrap it in a
  fresh `tf.function` (the fair "naive compiled" baseline: an eager loop
  would be slower still), restore, and run the batches through it;
- kit: build one model once; per run, `checkpoints.restore` then
  `evaluation.evaluate`, which reuses the model's traced forward pass.

The pure forward-pass time is the same batches, already materialised as
tensors, run through an already-traced function. Per-checkpoint overhead is
wall time minus that forward time: building, tracing, restoring, input
pipeline. Measured before and after the two loops; their mean is used.

  python benchmarks/evaluate_many.py --num_runs=8 --num_images=1000
"""

import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
import numpy as np
import tensorflow as tf
import tqdm

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _ROOT)
sys.path.insert(0, os.path.join(_ROOT, "tests"))

from heldout_tf import checkpoints  # pylint: disable=g-import-not-at-top
from heldout_tf import data
from heldout_tf import evaluation
from heldout_tf import models
from heldout_tf import runs
import release_fixtures

_NUM_RUNS = flags.DEFINE_integer("num_runs", 8, "K: checkpoints to evaluate.")
_NUM_IMAGES = flags.DEFINE_integer("num_images", 1000,
                                   "Evaluation images per checkpoint.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 200, "Evaluation batch size.")
_NUM_CLASSES = flags.DEFINE_integer("num_classes", 10, "Model output classes.")
_WORK_DIR = flags.DEFINE_string(
    "work_dir", None, "Where the synthetic runs are written (and reused on a "
    "later call); a temporary directory when unset.")

ARCH = "inception"
EXPERIMENT = "synthetic-inception"
RATIO = 0.5
SPLIT = "test"


def write_runs(root, num_runs, num_classes):
  """Writes (or reuses) `num_runs` random checkpoints; returns run dirs."""
  paths = []
  for run in tqdm.trange(num_runs, desc="write runs", leave=False):
    path = runs.run_dir(root, EXPERIMENT, RATIO, run)
    try:
      checkpoints.find_checkpoint(path)
    except checkpoints.CheckpointNotFoundError:
      model = release_fixtures.randomize(
          models.build_model(ARCH, num_classes), ARCH, seed=run)
      checkpoints.save(model, os.path.join(path, runs.CHECKPOINTS_DIRNAME),
                       step=100, epoch=10, global_step=100)
    paths.append(path)
  return paths


def synthetic_dataset(num_images, num_classes, seed=0):
  """In-memory uint8 images behind the same pipeline as CIFAR evaluation."""
  rng = np.random.default_rng(seed)
  arrays = {
      "image": rng.integers(0, 256, (num_images, 32, 32, 3), dtype=np.uint8),
      "label": rng.integers(0, num_classes, num_images).astype(np.int64),
      "index": np.arange(num_images, dtype=np.int64),
  }

  def make_split(split):
    del split
    ds = tf.data.Dataset.from_tensor_slices(arrays).map(
        lambda ex: dict(ex, image=tf.cast(ex["image"], tf.float32) / 255.0))
    return ds, num_images

  return data.Dataset("synthetic", make_split)


def pure_forward_seconds(dataset, num_classes, passes):
  """Seconds per pass of only the forward passes, already traced."""
  model = models.ensure_built(models.build_model(ARCH, num_classes), ARCH)
  forward = tf.function(lambda x: model(x, is_training=False))
  batches, _ = dataset.batches(SPLIT, _BATCH_SIZE.value)
  images = [b["image"] for b in batches]
  for x in images:  # Trace and warm up.
    forward(x).numpy()
  times = []
  for _ in range(passes):
    start = time.perf_counter()
    for x in images:
      forward(x).numpy()
    times.append(time.perf_counter() - start)
  return float(np.mean(times))


def evaluate_naive(paths, dataset, num_classes):
  """Fresh model + fresh tf.function + restore + evaluate, per run."""
  logits, seconds, parts = [], [], []
  for path in tqdm.tqdm(paths, desc="naive", leave=False):
    start = time.perf_counter()
    model = models.ensure_built(models.build_model(ARCH, num_classes), ARCH)
    forward = tf.function(lambda x, m=model: m(x, is_training=False))
    built = time.perf_counter()
    checkpoints.restore(model, path)
    restored = time.perf_counter()
    batches, _ = dataset.batches(SPLIT, _BATCH_SIZE.value)
    out, first = [], None
    for batch in batches:
      out.append(forward(batch["image"]).numpy())
      first = first or time.perf_counter()
    end = time.perf_counter()
    logits.append(np.concatenate(out))
    seconds.append(end - start)
    parts.append((built - start, restored - built, first - restored))
  return logits, np.array(seconds), np.array(parts)


def evaluate_kit(paths, dataset, num_classes):
  """One model for all runs: restore + `evaluation.evaluate` per run."""
  start = time.perf_counter()
  model = models.ensure_built(models.build_model(ARCH, num_classes), ARCH)
  setup = time.perf_counter() - start
  logits, seconds, restore_seconds = [], [], []
  for path in tqdm.tqdm(paths, desc="kit", leave=False):
    start = time.perf_counter()
    checkpoints.restore(model, path)
    restored = time.perf_counter()
    result = evaluation.evaluate(model, dataset, SPLIT, _BATCH_SIZE.value,
                                 progress=False)
    seconds.append(time.perf_counter() - start)
    restore_seconds.append(restored - start)
    logits.append(result.logits)
  return logits, setup, np.array(seconds), np.array(restore_seconds)


def main(argv):
  del argv
  k, n = _NUM_RUNS.value, _NUM_IMAGES.value
  num_classes = _NUM_CLASSES.value
  print(f"K={k} checkpoints x {n} images, batch {_BATCH_SIZE.value}, "
        f"SmallInception/{num_classes}, TF {tf.__version__}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
  with tempfile.TemporaryDirectory() as tmp:
    root = _WORK_DIR.value or tmp
    paths = write_runs(root, k, num_classes)
    dataset = synthetic_dataset(n, num_classes)

    passes = max(2, k // 2)
    forward_before = pure_forward_seconds(dataset, num_classes, passes)
    naive_logits, naive_s, naive_parts = evaluate_naive(
        paths, dataset, num_classes)
    kit_logits, kit_setup, kit_s, kit_restore = evaluate_kit(
        paths, dataset, num_classes)
    forward_after = pure_forward_seconds(dataset, num_classes, passes)

  for r, (a, b) in enumerate(zip(naive_logits, kit_logits)):
    if not np.array_equal(np.argmax(a, -1), np.argmax(b, -1)):
      raise AssertionError(f"run {r}: kit and naive predictions differ")
  max_diff = max(float(np.abs(a - b).max())
                 for a, b in zip(naive_logits, kit_logits))

  forward = (forward_before + forward_after) / 2
  naive_total = naive_s.sum()
  kit_total = kit_setup + kit_s.sum()
  naive_overhead = naive_total / k - forward
  kit_overhead = kit_total / k - forward
  kit_steady = float(np.mean(kit_s[1:] if k > 1 else kit_s)) - forward
  build, restore, first_batch = naive_parts.mean(axis=0)

  print(f"pure forward: {forward:.3f} s per checkpoint "
        f"({n / forward:.0f} img/s; before {forward_before:.3f} s, after "
        f"{forward_after:.3f} s) -> {k * forward:.2f} s for K runs")
  print(f"naive: total {naive_total:.2f} s, overhead {naive_overhead:.3f} s "
        f"per checkpoint (build {build:.3f} s, restore {restore:.3f} s, "
        f"first batch incl. tracing {first_batch:.3f} s)")
  print(f"kit:   total {kit_total:.2f} s, overhead {kit_overhead:.3f} s per "
        f"checkpoint incl. one-time setup (build {kit_setup:.3f} s + first "
        f"trace); steady state {kit_steady:.3f} s (restore "
        f"{kit_restore.mean():.3f} s)")
  print(f"overhead naive/kit: {naive_overhead / kit_overhead:.1f}x "
        f"(target >= 5x); steady state "
        f"{naive_overhead / max(kit_steady, 1e-3):.1f}x")
  print(f"kit total / pure forward: {kit_total / (k * forward):.3f} "
        f"(target <= 1.10); naive total / pure forward: "
        f"{naive_total / (k * forward):.3f}")
  print(f"predictions identical; max |logit difference| {max_diff:.2e}; "
        f"load average now {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
  app.run(main)
