"""What recording data-quality signals costs, in time and memory.

1. Time: the same group of G MLP runs (`heldout_tf.training.group.
   GroupTrainer`, the trainer of `heldout quality` and its MNIST preset)
   trained in one process without signals, with signals, and with signals
   plus a second-split phase (alternating, best of `--repeats`), on the
   embedded digits (4 000 examples). Target for signals: <= 1.5x.
2. Memory at real-MNIST size (60 000 examples x 2 000 runs), projected from
   a slice: the score time totals (`signals.load_totals`) do not grow with
   the number of runs (measured on 4 and 16 runs); per-run file size too.
   While training, a run's sums are `[m]` arrays (a few MB at 60 000).
3. `--default_run`: one default `python -m mnist_example.quality` (its
   detection and removal tables), timed.

  python benchmarks/quality.py
  python benchmarks/quality.py --default_run --out /tmp/quality_default
"""

import argparse
import dataclasses
import os
import sys
import tempfile
import time
import tracemalloc

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from heldout_tf import cli  # pylint: disable=g-import-not-at-top

cli.quiet_tensorflow()

import numpy as np  # pylint: disable=g-import-not-at-top,g-bad-import-order

from heldout_tf.data import sources  # pylint: disable=g-import-not-at-top
from heldout_tf.training import group as group_lib
from heldout_tf.training import recipes
from heldout_tf.training import settings as settings_lib
from heldout_tf.collection import signals
from heldout_tf.core import sizes

MNIST_TRAIN, MNIST_RUNS = 60000, 2000


def _seconds(group, runs):
  start = time.perf_counter()
  group.train(runs)
  return time.perf_counter() - start


def time_overhead(group_size, epochs, repeats, ssft_epochs=5):
  """Best-of-`repeats` seconds of one group without signals, with them,
  and with them plus `ssft_epochs` of second-split training."""
  data = sources.load("digits")
  recipe = recipes.get("mnist-mlp").replace(epochs=epochs)
  plain = settings_lib.TrainSettings(recipe, "mlp", 0.7)
  variants = {
      "without signals": plain,
      "with signals": dataclasses.replace(plain, signals=True),
      f"with signals + {ssft_epochs} SSFT epochs": dataclasses.replace(
          plain, signals=True, ssft_epochs=ssft_epochs)}
  groups = {name: group_lib.GroupTrainer(settings, data, group_size)
            for name, settings in variants.items()}
  runs = list(range(group_size))
  for group in groups.values():  # Compile every path first.
    group.train(runs)
  times = {name: [] for name in groups}
  for _ in range(repeats):
    for name, group in groups.items():
      times[name].append(_seconds(group, runs))
  base = min(times["without signals"])
  for name, values in times.items():
    print(f"time: {group_size} runs x {epochs} epochs on "
          f"{len(data.train_labels)} digits, {name}: {min(values):.2f} s (best of {repeats}; "
          f"{min(values) / base:.2f}x; all "
          f"{', '.join(f'{t:.2f}' for t in values)})", flush=True)
  return min(times["with signals"]) / base


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


def memory(slice_n):
  scale = MNIST_TRAIN / slice_n
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
  quality.run(["--root", out, "--noprogress"])
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
  memory(args.slice)
  if args.default_run:
    default_run(args.out)
  print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
  main()
