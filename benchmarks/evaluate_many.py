"""Evaluating K runs of one experiment: naive loop vs the kit's way.

Both evaluate the same K synthetic SmallInception checkpoints on the same
in-memory images, in one process:

- naive: per run, what a typical user writes: build a fresh model, wrap it
  in a fresh `tf.function` (the fair "naive compiled" baseline: an eager loop
  would be slower still), `tf.train.Checkpoint(model=model).restore(prefix)`
  (deferred: the values land when the first call creates the variables),
  and run the batches through it;
- kit: build one model once; per run, `checkpoints.restore` (strict) then
  `evaluation.evaluate`, which reuses the model's traced forward pass.

The pure forward-pass time is the same batches, already materialised as
tensors, run through an already-traced function. Per-checkpoint overhead is
time minus that forward time: building, tracing, restoring, input pipeline.
Runs are interleaved (pure pass, then naive and kit in alternating order,
next run) so load from other processes hits all three alike. An untimed full
garbage collection precedes every timed step, so no step pays for collecting
another's garbage; this favours the naive way, whose discarded models and
graphs are that garbage. Process CPU time is printed beside wall time: other
processes on the machine disturb it much less (medians are printed for the
same reason).

  python benchmarks/evaluate_many.py --num_runs=8 --num_images=1000
"""

import gc
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
from absl import logging
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


def clock():
  """Now, as (wall, process CPU) seconds.

  CPU time counts only this process's threads, so it is far less disturbed
  by other processes sharing the machine than wall time is.
  """
  return np.array([time.perf_counter(), time.process_time()])


class PureForward:
  """The batches as ready tensors through an already-traced function."""

  def __init__(self, dataset, num_classes):
    model = models.ensure_built(models.build_model(ARCH, num_classes), ARCH)
    self._forward = tf.function(lambda x: model(x, is_training=False))
    batches, _ = dataset.batches(SPLIT, _BATCH_SIZE.value)
    self._images = [b["image"] for b in batches]
    self.num_batches = len(self._images)
    self()  # Trace and warm up.

  def __call__(self):
    """Runs one pass over the batches; returns its (wall, CPU) seconds."""
    start = clock()
    for x in self._images:
      self._forward(x).numpy()
    return clock() - start


def iterate_pipeline(dataset):
  """Iterates the input pipeline alone; returns its (wall, CPU) seconds."""
  start = clock()
  batches, _ = dataset.batches(SPLIT, _BATCH_SIZE.value)
  for batch in batches:
    batch["image"].numpy()
  return clock() - start


def evaluate_naive(path, dataset, num_classes):
  """Fresh model + tf.function + tf.train.Checkpoint restore + evaluate.

  Returns logits, (wall, CPU) seconds, and those of building, restoring and
  the first batch (variable creation, deferred restore, tracing and one
  forward pass).
  """
  prefix = checkpoints.find_checkpoint(path)  # Untimed: users know it.
  start = clock()
  model = models.build_model(ARCH, num_classes)
  forward = tf.function(lambda x: model(x, is_training=False))
  built = clock()
  tf.train.Checkpoint(model=model).restore(prefix).expect_partial()
  restored = clock()
  batches, _ = dataset.batches(SPLIT, _BATCH_SIZE.value)
  logits, first = [], None
  for batch in batches:
    logits.append(forward(batch["image"]).numpy())
    if first is None:
      first = clock()
  seconds = clock() - start
  return (np.concatenate(logits), seconds,
          np.array([built - start, restored - built, first - restored]))


class KitEvaluator:
  """One model for all runs: restore + `evaluation.evaluate` per run."""

  def __init__(self, num_classes):
    self._num_classes = num_classes
    self._model = None

  def __call__(self, path, dataset):
    """Evaluates one run; returns logits, (wall, CPU) seconds, and those of
    the restore."""
    start = clock()
    if self._model is None:  # One-time setup, timed with the first run.
      self._model = models.ensure_built(
          models.build_model(ARCH, self._num_classes), ARCH)
    restore_start = clock()
    checkpoints.restore(self._model, path)
    restored = clock()
    result = evaluation.evaluate(self._model, dataset, SPLIT,
                                 _BATCH_SIZE.value, progress=False)
    return result.logits, clock() - start, restored - restore_start


def ratio(naive_overhead, kit_overhead):
  """`naive_overhead / kit_overhead` as text, when the latter is positive."""
  if kit_overhead <= 0:  # Below the run-to-run noise of the forward pass.
    return f"inf (kit overhead {kit_overhead:.3f} s <= 0)"
  return f"{naive_overhead / kit_overhead:.1f}x"


def report(column, name, k, n, forward, naive, naive_parts, kit, kit_restore,
           pipeline, batch_forward):
  """Prints the figures of one clock (column 0: wall, 1: CPU)."""
  forward, naive, kit = forward[:, column], naive[:, column], kit[:, column]
  naive_overhead = (naive - forward).mean()
  kit_overhead = (kit - forward).mean()
  kit_steady = (kit - forward)[1:].mean() if k > 1 else kit_overhead
  build, restore, first = naive_parts[:, :, column].mean(axis=0)
  print(f"--- {name} time ---")
  print(f"pure forward: {forward.sum():.2f} s for K runs "
        f"({k * n / forward.sum():.0f} img/s; {forward.min():.2f}.."
        f"{forward.max():.2f} s per run)")
  print(f"naive: total {naive.sum():.2f} s; overhead {naive_overhead:.3f} s "
        f"per checkpoint, median {np.median(naive - forward):.3f} (build "
        f"{build:.3f}, restore call {restore:.3f}, first call: variables + "
        f"deferred restore + tracing ~{first - batch_forward[column]:.3f} s)")
  print(f"kit:   total {kit.sum():.2f} s; overhead {kit_overhead:.3f} s per "
        f"checkpoint incl. one-time setup ({kit[0] - forward[0]:.3f} s in run "
        f"0), {kit_steady:.3f} s steady state, median "
        f"{np.median(kit - forward):.3f} (restore "
        f"{kit_restore[:, column].mean():.3f}, input pipeline alone "
        f"{pipeline[:, column].mean():.3f} s)")
  print(f"overhead naive / kit: {ratio(naive_overhead, kit_overhead)} incl. "
        f"setup, {ratio(naive_overhead, kit_steady)} steady state (target >= "
        f"5x)")
  # The kit's steady overhead can fall below the run-to-run noise of the
  # forward pass; its directly measured parts bound it instead.
  kit_parts = (kit_restore[:, column].mean() + pipeline[:, column].mean() +
               (kit[0] - forward[0]) / k)
  print(f"overhead naive / kit from the kit's measured parts (restore + "
        f"input pipeline + setup / K = {kit_parts:.3f} s): "
        f"{ratio(naive_overhead, kit_parts)}")
  print(f"total / pure forward: kit {kit.sum() / forward.sum():.3f} (target "
        f"<= 1.10), naive {naive.sum() / forward.sum():.3f}; per-run median: "
        f"kit {np.median(kit / forward):.3f}, naive "
        f"{np.median(naive / forward):.3f}")
  print("per run (pure / naive / kit s): " + ", ".join(
      f"{f:.2f}/{a:.2f}/{b:.2f}" for f, a, b in zip(forward, naive, kit)))


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # TF's per-save INFO lines.
  k, n = _NUM_RUNS.value, _NUM_IMAGES.value
  num_classes = _NUM_CLASSES.value
  print(f"K={k} checkpoints x {n} images, batch {_BATCH_SIZE.value}, "
        f"SmallInception/{num_classes}, TF {tf.__version__}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
  with tempfile.TemporaryDirectory() as tmp:
    paths = write_runs(_WORK_DIR.value or tmp, k, num_classes)
    dataset = synthetic_dataset(n, num_classes)
    pure = PureForward(dataset, num_classes)
    kit = KitEvaluator(num_classes)
    # Interleaved rounds, so load from other processes hits all three alike.
    forward, naive, naive_parts, kit_s, kit_restore, pipeline = (
        [], [], [], [], [], [])
    for path in tqdm.tqdm(paths, desc="pure / naive / kit per run"):
      gc.collect()
      forward.append(pure())
      gc.collect()
      pipeline.append(iterate_pipeline(dataset))
      # Alternate which goes first, so neither always finds warmer caches.
      for way in ("naive", "kit") if len(naive) % 2 == 0 else ("kit", "naive"):
        # Untimed: without it, the next timed step pays for collecting the
        # naive way's discarded models and graphs (~0.2-0.5 s CPU measured).
        gc.collect()
        if way == "naive":
          naive_logits, seconds, parts = evaluate_naive(path, dataset,
                                                        num_classes)
          naive.append(seconds)
          naive_parts.append(parts)
        else:
          kit_logits, seconds, restore_seconds = kit(path, dataset)
          kit_s.append(seconds)
          kit_restore.append(restore_seconds)
      if not np.array_equal(naive_logits, kit_logits):
        raise AssertionError(f"{path}: kit and naive logits differ")
  forward = np.array(forward)
  figures = dict(k=k, n=n, forward=forward, naive=np.array(naive),
                 naive_parts=np.array(naive_parts), kit=np.array(kit_s),
                 kit_restore=np.array(kit_restore),
                 pipeline=np.array(pipeline),
                 batch_forward=forward.mean(axis=0) / pure.num_batches)
  report(0, "wall", **figures)
  report(1, "process CPU", **figures)
  print(f"kit and naive logits identical for all {k} runs; load average now "
        f"{os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
  app.run(main)
