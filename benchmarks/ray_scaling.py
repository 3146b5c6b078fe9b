"""The Ray engine against the local engine on this machine, and a projection.

The same N runs (the embedded digits, 4 000 training / 1 000 test examples,
784-512-256-10 MLP, float32) are trained three ways into separate roots:

- local: `mnist_example.train.train_stage`, one process (TF uses every
  core);
- Ray, one task at a time: a local Ray instance with every core given to
  each task (`cpus_per_task` = cores), i.e. the same cores and threads as
  the local engine, so the difference in wall time is the Ray overhead
  (starting workers, importing TensorFlow and loading the data in each,
  shipping tasks, waiting);
- Ray, one task per core: `cpus_per_task=1`, the configuration a cluster
  would run.

The collections must be byte-identical (checked). The overhead target is
<= 10 % of the local wall time for >= 64 runs. The per-task dispatch cost
is measured with no-op tasks.

The projection for the paper setup (2 000 runs, 60 000 training + 10 000
test examples, ratio 0.7, 10 epochs, batch 128) times one block of
`--paper_group_size` models on synthetic MNIST-sized data in this process
(a few stacked-engine training steps, extrapolated to the block's 3 290,
plus evaluating each model on the 70 000 images as a collection records
it), and spreads the ceil(2000 / G) blocks over
1, 8 and 64 nodes like this one (one task per node using all its cores),
adding the measured per-task overhead and one worker start-up per node.

Other processes share the CPU: the load average is printed first and last;
ratios measured within one run are the meaningful figures.

  flock /tmp/bench.lock python benchmarks/ray_scaling.py
  python benchmarks/ray_scaling.py --num_runs=128 --group_size=8 --epochs=3
"""

import argparse
import dataclasses
import math
import os
import shutil
import sys
import tempfile
import time
import zipfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

if __name__ == "__main__":
  from heldout_tf import cli  # pylint: disable=g-import-not-at-top
  cli.quiet_tensorflow()

# pylint: disable=g-import-not-at-top,g-bad-import-order
import numpy as np

from heldout_tf import collection
from heldout_tf import estimates
from heldout_tf.collection import layout
from heldout_tf.data import image_data
from heldout_tf.training import engines
from heldout_tf.training import recipes
from heldout_tf.training import records
from heldout_tf.training import settings as settings_lib
from heldout_tf.training import run_plan
from heldout_tf.estimates import on_ray
from mnist_example import blocks
from mnist_example import common
from mnist_example import train
# pylint: enable=g-import-not-at-top,g-bad-import-order

PAPER = dict(common.PAPER_PRESET, train_size=60000, test_size=10000)
NODES = (1, 8, 64)


def ray_spec(options, data, precision="float32"):
  """The collection `train.train_stage` makes, as a `collection.Spec`
  (workers check the data's fingerprint against the driver's)."""
  config = common.train_config(options, precision)
  fingerprint = train.data_fingerprint(data)
  return collection.Spec(
      options.root, train.EXPERIMENT, options.ratio, options.group_size,
      blocks.TrainBlocks,
      (dataclasses.replace(options, dataset=data.name), precision,
       options.group_size, fingerprint),
      config=common.recorded_config(
          config, options.group_size, data, label_noise=options.label_noise,
          data_fingerprint=fingerprint))


def collection_bytes(root):
  """{(run, member): bytes} of every aux_arrays.npz, plus checkpoint data."""
  out = {}
  for found in layout.list_runs(root, train.EXPERIMENT):
    with zipfile.ZipFile(os.path.join(found.path, layout.AUX_FILENAME)) as zf:
      for name in zf.namelist():
        out[(found.run, name)] = zf.read(name)
    ckpt = os.path.join(found.path, layout.CHECKPOINTS_DIRNAME)
    for name in os.listdir(ckpt):
      if ".data-" in name:
        with open(os.path.join(ckpt, name), "rb") as f:
          out[(found.run, "checkpoint data")] = f.read()
  return out


def noop(x):
  return x


def dispatch_seconds(ray, count=200):
  """Mean wall time per trivial task (submit + run + get), warm workers."""
  task = ray.remote(noop).options(num_cpus=1)
  ray.get([task.remote(i) for i in range(8)])  # Start the workers.
  start = time.perf_counter()
  ray.get([task.remote(i) for i in range(count)])
  return (time.perf_counter() - start) / count


def paper_group_seconds(group_size, steps=24):
  """Projected seconds to train + evaluate one paper-setup block of G
  (the stacked engine, float32, on random MNIST-sized data)."""
  rng = np.random.default_rng(0)
  n_train, n_test = PAPER["train_size"], PAPER["test_size"]
  images = rng.integers(0, 256, (n_train + n_test, 28, 28, 1), np.uint8)
  labels = rng.integers(0, 10, n_train + n_test)
  data = image_data.ImageData("random", "random", images[:n_train],
                              labels[:n_train], images[n_train:],
                              labels[n_train:], 10)
  recipe = recipes.get("mnist-mlp").replace(
      epochs=PAPER["epochs"], batch_size=PAPER["batch_size"])
  settings = settings_lib.TrainSettings(recipe, "mlp", PAPER["ratio"],
                                        trainer="stacked")
  engine = engines.make("stacked", settings, data, group_size)
  stamps = []

  def on_step(done, total):
    del done, total
    stamps.append(time.perf_counter())
    if len(stamps) > 2 + steps:  # Two warm-up steps (tracing), then timed.
      raise _Timed()

  try:
    engine.train(list(range(group_size)), on_step=on_step)
  except _Timed:
    pass
  per_step = (stamps[-1] - stamps[2]) / steps
  recorder = records.Recorder(settings, data)  # What `write` evaluates.
  model = run_plan.fresh_model(settings, data, 0)
  recorder.correctness(model, "test")  # Warm-up.
  start = time.perf_counter()
  for split in ("train", "test"):
    recorder.correctness(model, split)
  per_model_eval = time.perf_counter() - start
  paper_steps = PAPER["epochs"] * math.ceil(
      round(PAPER["ratio"] * n_train) / PAPER["batch_size"])
  return (paper_steps * per_step + group_size * per_model_eval, per_step,
          paper_steps)


class _Timed(Exception):
  """Ends a timed `train` call once its steps are measured."""


def fmt_time(seconds):
  if seconds >= 3600:
    return f"{seconds / 3600:.2f} h"
  if seconds >= 120:
    return f"{seconds / 60:.1f} min"
  return f"{seconds:.1f} s"


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--num_runs", type=int, default=64)
  parser.add_argument("--group_size", type=int, default=8)
  parser.add_argument("--epochs", type=int, default=4)
  parser.add_argument("--paper_group_size", type=int, default=32)
  parser.add_argument("--keep", action="store_true",
                      help="keep the three output directories")
  args = parser.parse_args(argv)
  import ray  # pylint: disable=g-import-not-at-top
  cores = os.cpu_count()
  print(f"load average at start: {os.getloadavg()}; {cores} CPUs; "
        f"{args.num_runs} runs in blocks of {args.group_size}, "
        f"{args.epochs} epochs, embedded digits", flush=True)
  work = tempfile.mkdtemp(prefix="ray_scaling_")
  outs = {name: os.path.join(work, name)
          for name in ("local", "ray_seq", "ray_par")}
  options = {name: train.Options(
      root=out, num_runs=args.num_runs, epochs=args.epochs,
      group_size=args.group_size, precision="float32", dataset="digits",
      stage="train", progress=False) for name, out in outs.items()}
  data = train.load_data(options["local"])
  blocks = math.ceil(args.num_runs / args.group_size)

  start = time.perf_counter()
  train.train_stage(options["local"], data)
  local = time.perf_counter() - start

  start = time.perf_counter()
  ray.init(address="local", num_cpus=cores, include_dashboard=False,
           configure_logging=False,
           runtime_env={"env_vars": {"TF_CPP_MIN_LOG_LEVEL": "3"}})
  init = time.perf_counter() - start
  try:
    seq_report = collection.train(
        ray_spec(options["ray_seq"], data), range(args.num_runs),
        engine="ray", cpus_per_task=cores, progress=False)
    seq = seq_report["seconds"]
    par = collection.train(
        ray_spec(options["ray_par"], data), range(args.num_runs),
        engine="ray", cpus_per_task=1, progress=False)["seconds"]
    per_task = dispatch_seconds(ray)
    start = time.perf_counter()
    est_ray = on_ray.estimate_on_ray(
        outs["ray_par"], train.EXPERIMENT, progress=False)
    est_ray_seconds = time.perf_counter() - start
  finally:
    ray.shutdown()
  start = time.perf_counter()
  est_local = estimates.compute(estimates.load_runs(
      outs["local"], train.EXPERIMENT, progress=False), progress=False)
  est_local_seconds = time.perf_counter() - start

  reference = collection_bytes(outs["local"])
  same = all(collection_bytes(outs[k]) == reference
             for k in ("ray_seq", "ray_par"))
  same_estimates = sorted(est_ray) == sorted(est_local) and all(
      np.asarray(est_ray[k]).tobytes() == np.asarray(est_local[k]).tobytes()
      and np.asarray(est_ray[k]).dtype == np.asarray(est_local[k]).dtype
      for k in est_local)
  overhead = seq - local
  # One task at a time: the wall time is setup + training + the rest.
  scheduling = seq - seq_report["setup_seconds"] - seq_report["train_seconds"]
  print(f"\n| engine | wall | vs local |\n|---|---|---|\n"
        f"| local (`train_stage`, {cores} threads) | {local:.1f} s | 1.00 |\n"
        f"| Ray, 1 task × {cores} CPUs at a time | {seq:.1f} s | "
        f"{seq / local:.2f} |\n"
        f"| Ray, {cores} tasks × 1 CPU | {par:.1f} s | {par / local:.2f} |\n"
        f"| `ray.init` (once per driver, not in the above) | {init:.1f} s "
        "| |")
  print(f"\nRay overhead (same cores): {overhead:+.1f} s in total = "
        f"{100 * overhead / local:+.1f} % of the local wall time "
        f"({'met' if overhead <= 0.1 * local else 'NOT met'}: target <= "
        f"10 %), {overhead / blocks:+.2f} s per task over {blocks} tasks; "
        f"no-op task round trip {1e3 * per_task:.2f} ms")
  ray_only = seq_report["setup_seconds"] + scheduling
  print(f"Ray-only costs measured inside the one-at-a-time run: worker "
        f"setup (import TF, load the data, build the trainer) "
        f"{seq_report['setup_seconds']:.1f} s, scheduling and waiting "
        f"{scheduling:.1f} s = {100 * ray_only / local:.1f} % of the local "
        f"wall time; training {seq_report['train_seconds']:.1f} s")
  print(f"collections byte-identical (aux arrays and checkpoint data): "
        f"{same}")
  print(f"estimates: local {est_local_seconds:.2f} s, Ray "
        f"{est_ray_seconds:.2f} s (incl. worker start-up); identical: "
        f"{same_estimates}")

  group, per_step, steps = paper_group_seconds(args.paper_group_size)
  paper_blocks = math.ceil(PAPER["num_runs"] / args.paper_group_size)
  startup = seq_report["setup_seconds"]  # One worker start-up per node.
  print(f"\nPaper setup projection (G={args.paper_group_size}: "
        f"{paper_blocks} blocks of {steps} steps; measured "
        f"{1e3 * per_step:.0f} ms/step, {fmt_time(group)} per block incl. "
        f"evaluating 70 000 images), nodes like this one ({cores} CPUs, "
        "one task per node):")
  print("| nodes | rounds | projected wall |\n|---|---|---|")
  for nodes in NODES:
    rounds = math.ceil(paper_blocks / nodes)
    total = rounds * (group + per_task) + startup
    print(f"| {nodes} | {rounds} | {fmt_time(total)} |")
  print(f"\nload average at end: {os.getloadavg()}")
  if not args.keep:
    shutil.rmtree(work, ignore_errors=True)
  else:
    print(f"outputs kept in {work}")
  return 0 if same and same_estimates else 1


if __name__ == "__main__":
  sys.exit(main())
