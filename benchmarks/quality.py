"""What recording data-quality signals costs, in time and memory.

1. Time: the same block of G runs trained twice in one process, without
   hooks and with `heldout_tf.signals.SignalRecorder` as `on_epoch_end`
   (alternating, best of `--repeats`), on the embedded digits (4 000
   examples) or a synthetic MNIST-sized slice. Target: <= 1.5x.
2. Memory at real-MNIST size (60 000 examples x 2 000 runs), projected from
   a slice: the recorder's peak (numpy allocations, `tracemalloc`) for one
   group on `--slice` examples scales linearly in examples, and the score
   time totals (`signals.load_totals`) do not grow with the number of runs
   (measured on 4 and 16 runs); per-run file size is measured too.
3. `--default_run`: one default `python -m mnist_example.quality` (its
   detection table), timed.

  python benchmarks/quality.py
  python benchmarks/quality.py --default_run --out /tmp/quality_default
"""

import argparse
import os
import sys
import tempfile
import time
import tracemalloc

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from heldout_tf import cli  # pylint: disable=g-import-not-at-top

cli.quiet_tensorflow()

import numpy as np  # pylint: disable=g-import-not-at-top,g-bad-import-order

from heldout_tf import signals  # pylint: disable=g-import-not-at-top
from heldout_tf import sizes
from heldout_tf import training
from mnist_example import data as data_lib

MNIST_TRAIN, MNIST_RUNS = 60000, 2000


def _train(trainer, runs, images, labels, forward=None):
  """Seconds to train `runs`; with signals when `forward` is given."""
  config = trainer.config
  hook = None
  if forward is not None:
    subsets = [training.subset_indices(config, r, len(labels)) for r in runs]
    recorder = signals.SignalRecorder(images, labels, subsets,
                                      config.learning_rate, config.epochs,
                                      data_lib.NUM_CLASSES, forward=forward)
    hook = recorder.on_epoch_end
  start = time.perf_counter()
  trainer.train(runs, on_epoch_end=hook)
  return time.perf_counter() - start


def time_overhead(group_size, epochs, repeats):
  data = data_lib.load("digits")
  images, labels = data.train_images, data.train_labels
  config = training.TrainConfig(epochs=epochs)
  trainer = training.EnsembleTrainer(images, labels, config)
  runs = list(range(group_size))
  forward = signals.GatheredForward(images)  # One per dataset, as quality.
  _train(trainer, runs, images, labels, forward)  # Compile both paths.
  plain, recorded = [], []
  for _ in range(repeats):
    plain.append(_train(trainer, runs, images, labels))
    recorded.append(_train(trainer, runs, images, labels, forward))
  ratio = min(recorded) / min(plain)
  print(f"time: {group_size} runs x {epochs} epochs on {len(labels)} "
        f"digits: without signals {min(plain):.2f} s, with "
        f"{min(recorded):.2f} s (best of {repeats}): {ratio:.2f}x "
        f"(all: {', '.join(f'{t:.2f}' for t in plain)} vs "
        f"{', '.join(f'{t:.2f}' for t in recorded)})", flush=True)
  return ratio


class _FakeView:
  def params(self):
    return []


class _FakeForward:
  """Random features and logits of the right shapes, chunk by chunk like
  `signals.GatheredForward` (the recorder's own numpy memory only)."""

  def __init__(self, groups, hidden=256, classes=10, seed=0,
               chunk=signals.DEFAULT_CHUNK):
    self.groups, self.hidden, self.classes = groups, hidden, classes
    self.chunk = chunk
    self.rng = np.random.default_rng(seed)

  def __call__(self, params, idx):
    del params
    for start in range(0, idx.shape[1], self.chunk):
      cols = slice(start, start + self.chunk)
      c = len(range(*cols.indices(idx.shape[1])))
      yield (cols,
             self.rng.random([self.groups, c, self.hidden], np.float32),
             self.rng.standard_normal([self.groups, c, self.classes],
                                      np.float32))


def recorder_peak(n, group_size, epochs=2):
  """Peak numpy bytes of one group's recorder on n examples."""
  images = np.zeros([n, 784], np.float32)
  labels = np.arange(n) % 10
  subsets = [np.sort(np.random.default_rng(g).choice(n, int(0.7 * n),
                                                     replace=False))
             for g in range(group_size)]
  tracemalloc.start()
  tracemalloc.reset_peak()
  base = tracemalloc.get_traced_memory()[0]
  recorder = signals.SignalRecorder(images, labels, subsets, 0.1, epochs, 10,
                                    forward=_FakeForward(group_size))
  view = _FakeView()
  for e in range(epochs):
    recorder.on_epoch_end(e, view)
  for g in range(group_size):
    recorder.run_signals(g)
  peak = tracemalloc.get_traced_memory()[1] - base
  tracemalloc.stop()
  return peak


def totals_peak(n, num_runs, directory):
  paths = []
  rng = np.random.default_rng(0)
  for r in range(num_runs):
    subset = np.sort(rng.choice(n, int(0.7 * n), replace=False))
    heldout = np.setdiff1d(np.arange(n), subset)
    m = len(subset)
    path = os.path.join(directory, f"{r}.npz")
    signals.RunSignals(
        n_train=n, num_classes=10, epochs=10, learning_rate=0.1,
        subset=subset, margin_sum=rng.random(m), correct_epochs=np.zeros(
            m, np.int32), tracin_sum=rng.random(m), heldout=heldout,
        heldout_probs=np.full([len(heldout), 10], 0.1, np.float32),
        ssft_epochs=5, forget_epoch=np.zeros(m, np.int32)).save(path)
    paths.append(path)
  tracemalloc.start()
  base = tracemalloc.get_traced_memory()[0]
  signals.load_totals(paths, n, 10, progress=False, check_runs=False)
  peak = tracemalloc.get_traced_memory()[1] - base
  tracemalloc.stop()
  return peak, os.path.getsize(paths[0])


def memory(slice_n, group_size):
  scale = MNIST_TRAIN / slice_n
  # Peak = fixed (per-chunk temporaries) + per example: two slices give both.
  half, full = (recorder_peak(slice_n // 2, group_size),
                recorder_peak(slice_n, group_size))
  per_example = (full - half) / (slice_n - slice_n // 2)
  projected = full + per_example * (MNIST_TRAIN - slice_n)
  print(f"memory: recorder peak for {group_size} models: "
        f"{sizes.format_bytes(half)} on {slice_n // 2} examples, "
        f"{sizes.format_bytes(full)} on {slice_n} -> {MNIST_TRAIN}: "
        f"{sizes.format_bytes(projected)} (independent of the number of runs "
        "and epochs)")
  with tempfile.TemporaryDirectory() as d:
    few, per_run = totals_peak(slice_n, 4, d)
  with tempfile.TemporaryDirectory() as d:
    many, _ = totals_peak(slice_n, 16, d)
  print(f"memory: score-time totals on {slice_n} examples: 4 runs "
        f"{sizes.format_bytes(few)}, 16 runs {sizes.format_bytes(many)} -> "
        f"{MNIST_TRAIN} x {MNIST_RUNS} runs: ~"
        f"{sizes.format_bytes(max(few, many) * scale)}")
  print(f"disk: signals.npz {sizes.format_bytes(per_run)} per run at "
        f"{slice_n} -> {sizes.format_bytes(per_run * scale)} per run, "
        f"{sizes.format_bytes(per_run * scale * MNIST_RUNS)} for "
        f"{MNIST_RUNS} runs at {MNIST_TRAIN}")


def default_run(out):
  from mnist_example import quality  # pylint: disable=g-import-not-at-top
  start = time.perf_counter()
  quality.run(quality.Options(root=out))
  print(f"default run: {time.perf_counter() - start:.0f} s wall, load "
        f"average now {os.getloadavg()}")


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--group_size", type=int, default=16)
  p.add_argument("--epochs", type=int, default=3)
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--slice", type=int, default=6000)
  p.add_argument("--default_run", action="store_true")
  p.add_argument("--out", default=os.path.join(tempfile.gettempdir(),
                                               "quality_default"))
  args = p.parse_args()
  print(f"load average at start: {os.getloadavg()}; cpus {os.cpu_count()}")
  time_overhead(args.group_size, args.epochs, args.repeats)
  memory(args.slice, args.group_size)
  if args.default_run:
    default_run(args.out)
  print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
  main()
