"""The group engine against the stacked engine on the MNIST MLP.

Both engines (`heldout_tf.training.engines`) train the same runs of the
same settings: the 784-512-256-10 MLP by recipe 'mnist-mlp' (SGD momentum
0.9, batch 128, 10 epochs), ratio 0.7, on MNIST-size synthetic data
(60 000 training and 10 000 test images, 28x28x1 uint8; their content does
not matter for speed), for G in {1, 8, 16, 32} runs at once, in float32
and bfloat16. Per case the two engines take turns (`--rounds` each, the
best round counts), each round timing `--steps` steps after `--warmup`
steps (tracing and building the runs' models excluded).

Printed per case: models/hour of training (the full recipe: 10 epochs of
329 steps per run) and with the recorded evaluation (each model evaluated
on the 70 000 images by `collection.evaluation.evaluate`, the same code for
both engines, timed once), and the stacked/group ratio. The load average is
printed first and last: other processes make the figures noisy; ratios
measured within one run are the meaningful figures.

  python benchmarks/engines.py
  python benchmarks/engines.py --quick        # a small check that it runs
  python benchmarks/engines.py --group_sizes 32 --precisions bfloat16
"""

import argparse
import dataclasses
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

if __name__ == "__main__":
  from heldout_tf import cli  # pylint: disable=g-import-not-at-top
  cli.quiet_tensorflow()

# pylint: disable=g-import-not-at-top,g-bad-import-order
import numpy as np

from heldout_tf.data import image_data
from heldout_tf.training import engines
from heldout_tf.training import recipes
from heldout_tf.training import records
from heldout_tf.training import settings as settings_lib
from heldout_tf.training import run_plan
# pylint: enable=g-import-not-at-top,g-bad-import-order

MNIST = dict(n_train=60_000, n_test=10_000, ratio=0.7)


class _Enough(Exception):
  """Ends a timed `train` call once its steps are measured."""


def synthetic_mnist(n_train: int, n_test: int) -> image_data.ImageData:
  """Random 28x28x1 uint8 images with random labels of 10 classes."""
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (n_train + n_test, 28, 28, 1), np.uint8)
  labels = rng.integers(0, 10, n_train + n_test).astype(np.int64)
  return image_data.ImageData(
      "synthetic-mnist", f"{n_train} / {n_test} random 28x28x1 images",
      images[:n_train], labels[:n_train], images[n_train:],
      labels[n_train:], 10)


def seconds_per_step(engine, runs, warmup: int, steps: int) -> float:
  """Seconds of one step of `engine` training `runs`, over `steps` steps
  after `warmup` (the call is ended once they are timed)."""
  stamps = []

  def on_step(done, total):
    del done, total
    stamps.append(time.perf_counter())
    if len(stamps) > warmup + steps:
      raise _Enough()

  try:
    engine.train(runs, on_step=on_step)
  except _Enough:
    pass
  return (stamps[warmup + steps] - stamps[warmup]) / steps


def evaluation_seconds(settings, data) -> float:
  """Seconds to record one model's correctness on both splits
  (`records.Recorder`, what both engines' `write` runs), after a warm-up."""
  recorder = records.Recorder(settings, data)
  model = run_plan.fresh_model(settings, data, 0)
  for split in ("train", "test"):  # Warm-up: the dataset, the trace.
    recorder.correctness(model, split)
  start = time.perf_counter()
  for split in ("train", "test"):
    recorder.correctness(model, split)
  return time.perf_counter() - start


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--group_sizes", default="1,8,16,32")
  parser.add_argument("--precisions", default="float32,bfloat16")
  parser.add_argument("--steps", type=int, default=20,
                      help="Steps timed per round.")
  parser.add_argument("--warmup", type=int, default=3,
                      help="Steps before the timed ones, per round.")
  parser.add_argument("--rounds", type=int, default=2,
                      help="Rounds per engine and case (the best counts).")
  parser.add_argument("--quick", action="store_true",
                      help="A small check that the benchmark runs: 6 000 "
                      "training images, G in {1, 4}, 3 steps, one round.")
  args = parser.parse_args(argv)
  sizes = [int(g) for g in args.group_sizes.split(",")]
  precisions = args.precisions.split(",")
  n_train, n_test = MNIST["n_train"], MNIST["n_test"]
  if args.quick:
    n_train, n_test, sizes = 6_000, 1_000, [1, 4]
    args.steps, args.warmup, args.rounds = 3, 2, 1
  print(f"load average at start: {os.getloadavg()}; {os.cpu_count()} CPUs; "
        f"{n_train} / {n_test} images, G in {sizes}, {args.steps} steps x "
        f"{args.rounds} rounds per engine and case", flush=True)
  data = synthetic_mnist(n_train, n_test)
  recipe = recipes.get("mnist-mlp")
  run_steps = recipe.epochs * recipe.steps_per_epoch(
      round(MNIST["ratio"] * MNIST["n_train"]))
  rows = []
  evaluation = None
  for precision in precisions:
    base = settings_lib.TrainSettings(recipe, "mlp", MNIST["ratio"],
                                      precision=precision)
    for size in sizes:
      runs = list(range(size))
      made = {name: engines.make(name, dataclasses.replace(
          base, trainer=name), data, size) for name in engines.ENGINES}
      best = {name: float("inf") for name in made}
      for _ in range(args.rounds):
        for name, engine in made.items():
          best[name] = min(best[name], seconds_per_step(
              engine, runs, args.warmup, args.steps))
      if evaluation is None:  # The same evaluation for every engine.
        evaluation = evaluation_seconds(base, data)
      train_hours = {n: best[n] * run_steps / size / 3600 for n in best}
      rows.append((precision, size, train_hours, evaluation / 3600))
      print(row_text(precision, size, train_hours, evaluation / 3600),
            flush=True)
      del made
  print(f"\nevaluation: {evaluation:.2f} s per model on {n_train + n_test} "
        "images (both engines)")
  print(f"load average at end: {os.getloadavg()}")
  return rows


def row_text(precision, size, train_hours, eval_hours) -> str:
  group, stacked = train_hours["group"], train_hours["stacked"]
  with_eval = {n: 1 / (h + eval_hours) for n, h in train_hours.items()}
  return (f"{precision:9s} G={size:<3d} models/h training: group "
          f"{1 / group:7.1f}, stacked {1 / stacked:7.1f} "
          f"(x{group / stacked:.2f}); with evaluation: group "
          f"{with_eval['group']:6.1f}, stacked "
          f"{with_eval['stacked']:6.1f} "
          f"(x{with_eval['stacked'] / with_eval['group']:.2f})")


if __name__ == "__main__":
  main()
