"""Evaluating K runs of one experiment: naive loop vs the kit's way.

Both evaluate the same K synthetic SmallInception checkpoints on the same
in-memory images, in one process:

- naive: per run, what a typical user writes: build a fresh model, wrap it
  in a fresh `tf.function` (the fair "naive compiled" baseline: an eager loop
  would be slower still), `tf.train.Checkpoint(model=model).restore(prefix)`
  (deferred: the values land when the first call creates the variables),
  and run the batches through it;
- kit: `heldout_tf.collection.reevaluation.evaluate_runs`, the loop `heldout evaluate`
  uses: one model built once and the split read once; per run a strict
  `checkpoints.restore`, reading aux_arrays.npz, `evaluation.evaluate`
  (which reuses the model's traced forward pass) and the cross-check.

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

The synthetic runs (random weights, aux_arrays.npz from the model's own
predictions) come from `heldout_tf.synthetic` (the offline stand-ins).
"""

from heldout_tf import cli

if __name__ == "__main__":
  cli.quiet_tensorflow()  # Imports TensorFlow, hiding its start-up lines.

# pylint: disable=g-import-not-at-top,g-bad-import-order
import argparse
import gc
import os
import tempfile
import time

import numpy as np
import tensorflow as tf

from heldout_tf.collection import checkpoints
from heldout_tf.collection import evaluation
from heldout_tf.collection import reevaluation
from heldout_tf.collection import layout
from heldout_tf import models
from heldout_tf.core import progress
from heldout_tf import synthetic

ARCH = "small_inception"
EXPERIMENT = "synthetic-inception"
RATIO = 0.5
SPLIT = "test"
N_TRAIN = 100  # Training examples of the synthetic runs' aux_arrays.


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--num_runs", type=int, default=8,
                      help="K: checkpoints to evaluate.")
  parser.add_argument("--num_images", type=int, default=1000,
                      help="Evaluation images per checkpoint.")
  parser.add_argument("--batch_size", type=int, default=200,
                      help="Evaluation batch size.")
  parser.add_argument("--num_classes", type=int, default=10,
                      help="Model output classes.")
  parser.add_argument("--work_dir", default=None,
                      help="Where the synthetic runs are written (and reused "
                      "on a later call); a temporary directory when unset.")
  args = parser.parse_args(argv)
  for name in ("num_runs", "num_images", "batch_size", "num_classes"):
    if getattr(args, name) < 1:
      parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
  return args


def write_runs(root, num_runs, arrays, num_classes):
  """Writes (or reuses) `num_runs` synthetic runs; returns their dirs."""
  paths = []
  model = models.build_model(ARCH, num_classes)
  with progress.bar(num_runs, "write runs", "run") as bar:
    for run in range(num_runs):
      path = layout.run_dir(root, EXPERIMENT, RATIO, run)
      if reevaluation.missing_files(path) is not None:
        synthetic.write_release_run(root, EXPERIMENT, RATIO, run, model, ARCH,
                                    arrays, seed=run, step=100, epoch=10)
      paths.append(path)
      bar.update(1)
  return paths


def clock():
  """Now, as (wall, process CPU) seconds.

  CPU time counts only this process's threads, so it is far less disturbed
  by other processes sharing the machine than wall time is.
  """
  return np.array([time.perf_counter(), time.process_time()])


class PureForward:
  """The batches as ready tensors through an already-traced function."""

  def __init__(self, dataset, num_classes, batch_size):
    model = models.ensure_built(models.build_model(ARCH, num_classes), ARCH)
    self._forward = tf.function(lambda x: model(x, is_training=False))
    batches, _ = dataset.batches(SPLIT, batch_size)
    self._images = [b["image"] for b in batches]
    self.num_batches = len(self._images)
    self()  # Trace and warm up.

  def __call__(self):
    """Runs one pass over the batches; returns its (wall, CPU) seconds."""
    start = clock()
    for x in self._images:
      self._forward(x).numpy()
    return clock() - start


def iterate_pipeline(dataset, batch_size):
  """Iterates the input pipeline alone; returns its (wall, CPU) seconds."""
  start = clock()
  batches, _ = dataset.batches(SPLIT, batch_size)
  for batch in batches:
    batch["image"].numpy()
  return clock() - start


def evaluate_naive(path, dataset, num_classes, batch_size):
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
  batches, _ = dataset.batches(SPLIT, batch_size)
  logits, first = [], None
  for batch in batches:
    logits.append(forward(batch["image"]).numpy())
    if first is None:
      first = clock()
  seconds = clock() - start
  return (np.concatenate(logits), seconds,
          np.array([built - start, restored - built, first - restored]))


class KitEvaluator:
  """`reevaluation.evaluate_runs` over all runs, one run per call."""

  def __init__(self, paths, dataset, num_classes, batch_size):
    self._runs = reevaluation.evaluate_runs(
        synthetic.experiment(ARCH, num_classes, EXPERIMENT), paths, dataset,
        SPLIT, batch_size, progress=False)

  def __call__(self):
    """Evaluates the next run (the first builds the model); returns its
    `RunEvaluation`, (wall, CPU) seconds, and the restore's wall seconds
    (for both clocks: restore runs on one thread)."""
    start = clock()
    evaluated = next(self._runs)
    seconds = clock() - start
    return evaluated, seconds, np.array([evaluated.restore_seconds] * 2)


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


def main(argv=None):
  args = parse_args(argv)
  k, n = args.num_runs, args.num_images
  num_classes, batch_size = args.num_classes, args.batch_size
  print(f"K={k} checkpoints x {n} images, batch {batch_size}, "
        f"SmallInception/{num_classes}, TF {tf.__version__}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
  arrays = synthetic.random_cifar_arrays(N_TRAIN, n, num_classes)
  dataset = synthetic.in_memory_dataset(arrays)
  with tempfile.TemporaryDirectory() as tmp:
    paths = write_runs(args.work_dir or tmp, k, arrays, num_classes)
    pure = PureForward(dataset, num_classes, batch_size)
    kit = KitEvaluator(paths, dataset, num_classes, batch_size)
    # Interleaved rounds, so load from other processes hits all three alike.
    forward, naive, naive_parts, kit_s, kit_restore, pipeline = (
        [], [], [], [], [], [])
    matched = 0
    with progress.bar(k, "pure / naive / kit per run", "run") as bar:
      for path in paths:
        gc.collect()
        forward.append(pure())
        gc.collect()
        pipeline.append(iterate_pipeline(dataset, batch_size))
        # Alternate which goes first, so neither always finds warmer caches.
        order = ("naive", "kit") if len(naive) % 2 == 0 else ("kit", "naive")
        for way in order:
          # Untimed: without it, the next timed step pays for collecting the
          # naive way's discarded models and graphs (~0.2-0.5 s CPU
          # measured).
          gc.collect()
          if way == "naive":
            naive_logits, seconds, parts = evaluate_naive(
                path, dataset, num_classes, batch_size)
            naive.append(seconds)
            naive_parts.append(parts)
          else:
            evaluated, seconds, restore_seconds = kit()
            kit_s.append(seconds)
            kit_restore.append(restore_seconds)
        if evaluated.path != path:
          raise AssertionError(f"kit evaluated {evaluated.path}, not {path}")
        if not np.array_equal(naive_logits, evaluated.result.logits):
          raise AssertionError(f"{path}: kit and naive logits differ")
        matched += evaluated.check.ok
        bar.update(1)
  forward = np.array(forward)
  figures = dict(k=k, n=n, forward=forward, naive=np.array(naive),
                 naive_parts=np.array(naive_parts), kit=np.array(kit_s),
                 kit_restore=np.array(kit_restore),
                 pipeline=np.array(pipeline),
                 batch_forward=forward.mean(axis=0) / pure.num_batches)
  report(0, "wall", **figures)
  report(1, "process CPU", **figures)
  print(f"kit and naive logits identical for all {k} runs; cross-check: "
        f"{matched} of {k} runs match their aux_arrays; load average now "
        f"{os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
  cli.run(main)
