"""ResNet-9 on a 70 % CIFAR-10 subset on one GPU: seconds per model, accuracy.

Ready for a GPU machine (runs on a CPU too, slowly: use it there only as a
smoke test with small settings). Reads CIFAR-10 from a prepared tfds
directory (`--data_dir`; `--download` to fetch it where a network is).
Trains `--models` runs of the 'resnet9' recipe (ratio 0.7) with the kit's
trainer in each way of sharing the device, and prints seconds per model
(wall time / models, including each model's recorded evaluation on the
60 000 train and test images) and mean test accuracy:

- `alone`: one model at a time (`RunTrainer`), one compiled step per batch;
- `group:K`: K models side by side in one compiled step (`GroupTrainer`);
- `processes:K`: K processes sharing the GPU, each training its share of
  the models alone (what Ray fractional GPUs, `num_gpus=1/K`, amount to),
  with memory growth on so they fit together.

The fastest way is printed at the end. Aim (issue 19): >= 90 % test
accuracy in <= 10 s per model on one modern GPU.

  python benchmarks/gpu_resnet9.py --data_dir ~/tensorflow_datasets
  python benchmarks/gpu_resnet9.py --data_dir D --ways alone,group:4 \\
      --models 8 --epochs 16 --precision auto --jit
"""

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

if __name__ == "__main__":
  from heldout_tf import cli  # pylint: disable=g-import-not-at-top
  cli.quiet_tensorflow()

# pylint: disable=g-import-not-at-top,g-bad-import-order
import numpy as np
import tensorflow as tf

from heldout_tf.data import sources
from heldout_tf.core import hardware
from heldout_tf.training import group as group_lib
from heldout_tf.training import recipes
from heldout_tf.training import settings as settings_lib
from heldout_tf.training import trainer as trainer_lib
# pylint: enable=g-import-not-at-top,g-bad-import-order


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--data_dir", default=None)
  parser.add_argument("--download", action="store_true")
  parser.add_argument("--dataset", default="cifar10")
  parser.add_argument("--models", type=int, default=8)
  parser.add_argument("--ways", default="alone,group:2,group:4,processes:2")
  parser.add_argument("--epochs", type=int, default=None,
                      help="override the recipe's 24 epochs")
  parser.add_argument("--batch_size", type=int, default=None)
  parser.add_argument("--width", type=float, default=1.0)
  parser.add_argument("--precision", default="auto",
                      choices=hardware.CHOICES)
  parser.add_argument("--jit", action="store_true",
                      help="compile the step with XLA")
  parser.add_argument("--first_run", type=int, default=0)
  parser.add_argument("--worker", action="store_true",
                      help=argparse.SUPPRESS)  # One process of processes:K.
  return parser.parse_args(argv)


def settings_of(args):
  recipe = recipes.get("resnet9")
  changes = {k: v for k, v in (("epochs", args.epochs),
                               ("batch_size", args.batch_size)) if v}
  recipe = recipe.replace(**changes) if changes else recipe
  precision = hardware.resolve_precision(args.precision)
  return settings_lib.TrainSettings(
      recipe, "resnet9", 0.7, precision=precision.name,
      model_options={"width": args.width}, checkpoint_every=0), precision


def train(args, data, runs, group):
  """Trains `runs`; returns their test accuracies."""
  settings, _ = settings_of(args)
  accuracies = []
  if group > 1:
    trainer = group_lib.GroupTrainer(settings, data, group, args.jit)
    for start in range(0, len(runs), group):
      for result in trainer.train(runs[start:start + group]):
        member = trainer.members[runs.index(result.run) - start]
        member.correctness(split="train")  # Recorded, as a collection does.
        accuracies.append(member.correctness(split="test").mean())
  else:
    trainer = trainer_lib.RunTrainer(settings, data, args.jit)
    for run in runs:
      trainer.train(run)
      trainer.correctness(split="train")
      accuracies.append(trainer.correctness(split="test").mean())
  return accuracies


def warm_up(args, data, group):
  """Traces the steps once (one model, one step) so timing excludes it."""
  small = argparse.Namespace(**vars(args))
  small.epochs = 1
  settings, _ = settings_of(small)
  if group > 1:
    group_lib.GroupTrainer(settings, data, group, args.jit)
  else:
    trainer_lib.RunTrainer(settings, data, args.jit)


def run_processes(args, k):
  """`k` worker processes share the models; wall seconds, accuracies."""
  share = np.array_split(np.arange(args.models), k)
  env = dict(os.environ, TF_FORCE_GPU_ALLOW_GROWTH="true")
  base = [sys.executable, os.path.abspath(__file__), "--worker",
          f"--dataset={args.dataset}", f"--width={args.width}",
          f"--precision={args.precision}"]
  for name in ("data_dir", "epochs", "batch_size"):
    if getattr(args, name) is not None:
      base.append(f"--{name}={getattr(args, name)}")
  base += ["--jit"] * args.jit + ["--download"] * args.download
  start = time.perf_counter()
  procs = [subprocess.Popen(
      base + [f"--models={len(s)}", f"--first_run={s[0]}"],
      stdout=subprocess.PIPE, env=env, text=True) for s in share if len(s)]
  accuracies = []
  for p in procs:
    out, _ = p.communicate()
    if p.returncode:
      raise SystemExit(f"a worker failed (exit {p.returncode})")
    accuracies += json.loads(out.strip().splitlines()[-1])
  return time.perf_counter() - start, accuracies


def main():
  args = parse_args()
  data = sources.load(args.dataset, args.data_dir, args.download)
  runs = list(range(args.first_run, args.first_run + args.models))
  if args.worker:
    print(json.dumps([float(a) for a in train(args, data, runs, 1)]))
    return
  settings, precision = settings_of(args)
  gpus = tf.config.list_physical_devices("GPU")
  print(f"devices: {[g.name for g in gpus] or 'no GPU (CPU smoke test)'}; "
        f"precision {precision.name} ({precision.reason}); data "
        f"{data.description}; recipe resnet9, {settings.recipe.epochs} "
        f"epochs, batch {settings.recipe.batch_size}, ratio 0.7, width "
        f"{args.width}, jit {args.jit}")
  results = []
  for way in args.ways.split(","):
    kind, _, k = way.partition(":")
    k = int(k or 1)
    if kind == "processes":
      seconds, accuracies = run_processes(args, k)
    else:
      warm_up(args, data, k if kind == "group" else 1)
      start = time.perf_counter()
      accuracies = train(args, data, runs, k if kind == "group" else 1)
      seconds = time.perf_counter() - start
    per_model = seconds / args.models
    results.append((per_model, way, float(np.mean(accuracies))))
    print(f"{way:>12}: {per_model:8.2f} s per model, test accuracy "
          f"{100 * np.mean(accuracies):.2f} % (min {100 * min(accuracies):.2f}"
          f" %), {args.models} models", flush=True)
  best = min(results)
  met = best[0] <= 10 and best[2] >= 0.90
  print(f"fastest: {best[1]} at {best[0]:.2f} s per model, "
        f"{100 * best[2]:.2f} % test accuracy; aim (>= 90 % in <= 10 s per "
        f"model): {'met' if met else 'not met'}")


if __name__ == "__main__":
  main()
