"""Training N subset MLPs: one at a time vs the ensemble, float32 vs bfloat16.

All methods train the same runs (784-512-256-10 MLP, SGD momentum, batch
128, each on its own random subset of a 60 000-example MNIST-sized training
set, `--epochs` epochs) in one process:

- plain loop: one model at a time as typically written, which is
  `heldout_tf.training.ensemble.train_alone` in float32 (the reference semantics):
  per run a fresh sonnet `models.MLP`, `snt.optimizers.Momentum` and
  `tf.function` step, fed NumPy batches `images[idx]`;
- ensemble float32 and ensemble bfloat16 (taking turns group by group):
  `heldout_tf.training.ensemble.EnsembleTrainer`, G models per compiled step, with
  `TrainConfig.precision` 'float32' and 'bfloat16' (mixed precision:
  bfloat16 matmuls, float32 weights, momentum and loss).

Throughput is reported as models/hour and as achieved GFLOP/s (the matmul
FLOPs of the forward and backward passes), against the float32 AND bfloat16
peaks of a large `tf.matmul` measured in the same run. The full paper setup
(2000 runs, 60 000 examples, ratio 0.7, 10 epochs, batch 128, plus evaluating
every model on the 70 000 train and test images) is projected for both
precisions. `--profile` traces the ops of the real step (where the step's
time goes), and `--quality_runs` checks that bfloat16 runs learn what
float32 runs learn on the embedded digits with label noise (test accuracy
and memorization AUC of the noisy labels).

The machine's load average is printed first and last: other processes make
the figures noisy; ratios measured within one run are the meaningful ones.

  python benchmarks/train_many.py
  python benchmarks/train_many.py --num_models=128 --group_size=32
  python benchmarks/train_many.py --no-speed --no-profile   # quality check only
"""

import argparse
import collections
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

if __name__ == "__main__":
  from heldout_tf import cli  # pylint: disable=g-import-not-at-top
  cli.quiet_tensorflow()

# pylint: disable=g-import-not-at-top,g-bad-import-order
import numpy as np
from sklearn import metrics
import tensorflow as tf

from heldout_tf import cli
from heldout_tf import estimates
from heldout_tf.core import hardware
from heldout_tf.core import progress
from heldout_tf.training import ensemble
from mnist_example import common
from mnist_example import data as data_lib
# pylint: enable=g-import-not-at-top,g-bad-import-order

PAPER = dict(common.PAPER_PRESET, train_size=60000, test_size=10000)
PRECISIONS = ("float32", "bfloat16")


def parse_args(argv):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--num_models", type=int, default=64,
                      help="Runs trained by each ensemble (the float32 and "
                      "bfloat16 ensembles take turns group by group).")
  parser.add_argument("--plain_models", type=int, default=8,
                      help="Runs trained by the (slow) plain loop.")
  parser.add_argument("--epochs", type=int, default=1, help="Epochs per run.")
  parser.add_argument("--train_size", type=int, default=60000,
                      help="Synthetic training examples.")
  parser.add_argument("--group_size", type=int, default=0,
                      help="Ensemble group size; 0: the automatic choice.")
  parser.add_argument("--jit_compile", action="store_true",
                      help="XLA-compile the ensemble step.")
  parser.add_argument("--peak_size", type=int, default=3072,
                      help="Matrix side of the peak-measuring matmul.")
  parser.add_argument("--speed", action=argparse.BooleanOptionalAction,
                      default=True, help="Measure throughput (--no-speed: "
                      "only the profile and quality check).")
  parser.add_argument("--profile", action=argparse.BooleanOptionalAction,
                      default=True, help="Trace each op of the step.")
  parser.add_argument("--quality_runs", type=int, default=64,
                      help="Runs per precision of the digits quality check "
                      "(0: skip it).")
  parser.add_argument("--quality_epochs", type=int, default=3,
                      help="Epochs after which test accuracies are compared.")
  parser.add_argument("--auc_epochs", type=int, default=10,
                      help="Epochs after which the memorization AUC of the "
                      "noisy labels is compared.")
  parser.add_argument("--label_noise", type=float, default=0.1,
                      help="Label noise of the quality check.")
  options = parser.parse_args(argv)
  for name in ("num_models", "plain_models", "epochs", "train_size",
               "peak_size", "quality_epochs", "auc_epochs"):
    if getattr(options, name) < 1:
      parser.error(f"--{name} must be >= 1")
  if options.group_size < 0 or options.quality_runs < 0:
    parser.error("--group_size and --quality_runs must be >= 0")
  return options


def load_line() -> str:
  one, five, fifteen = os.getloadavg()
  return (f"load average {one:.2f} / {five:.2f} / {fifteen:.2f} (1 / 5 / 15 "
          f"min) on {os.cpu_count()} CPUs")


def _best_seconds(fn, args, repeats, calls=1):
  """Best wall time of `calls` back-to-back calls of `fn(*args)`."""
  fn(*args).numpy()  # Trace and warm up.
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    for _ in range(calls):
      out = fn(*args)
    out.numpy()
    best = min(best, (time.perf_counter() - start) / calls)
  return best


def matmul_peak_gflops(n: int, dtype, repeats: int = 5) -> float:
  """Best GFLOP/s of an n x n x n `tf.matmul` in `dtype`."""
  a = tf.cast(tf.random.normal([n, n]), dtype)
  b = tf.cast(tf.random.normal([n, n]), dtype)
  matmul = tf.function(lambda a, b: tf.matmul(a, b)[:1, :1])
  return 2 * n ** 3 / _best_seconds(matmul, (a, b), repeats) / 1e9


def train_flops_per_example(config, input_dim: int) -> float:
  """Matmul FLOPs of one example's forward + backward pass.

  Forward and weight gradients: 2 * in * out each per layer; input
  gradients for every layer but the first (the images need none).
  """
  sizes = config.layer_sizes(input_dim)
  macs = sum(i * o for i, o in sizes)
  return 2 * (2 * macs + macs - sizes[0][0] * sizes[0][1])


def train_plain(images, labels, config, runs):
  """`train_alone` (float32), run by run; returns its seconds."""
  start = time.perf_counter()
  with progress.bar(len(runs), "plain loop", "run") as bar:
    for run in runs:
      ensemble.train_alone(images, labels, config, run)
      bar.update(1)
  return time.perf_counter() - start


def train_ensembles(trainers, runs, group_size):
  """Each trainer on `runs`, `group_size` at a time; {name: seconds}.

  The trainers take turns group by group, so a change in the machine's load
  affects all of them alike.
  """
  warm_up = np.tile(np.arange(2 * next(iter(trainers.values())).config
                              .batch_size), (group_size, 1))
  for trainer in trainers.values():  # Trace outside the timed region.
    trainer.train(runs[:group_size], subsets=warm_up, epochs=1)
  seconds = dict.fromkeys(trainers, 0.0)
  with progress.bar(len(runs) * len(trainers), "ensembles", "run") as bar:
    for first in range(0, len(runs), group_size):
      group = runs[first:first + group_size]
      for name, trainer in trainers.items():
        start = time.perf_counter()
        trainer.train(group)
        seconds[name] += time.perf_counter() - start
        bar.update(len(group))
  return seconds


def eval_seconds_per_model_example(trainer, runs, images) -> float:
  """Seconds `predict` takes per model and example (at initial weights)."""
  config, input_dim = trainer.config, trainer.input_dim
  params = [np.stack(layer) for layer in zip(
      *[ensemble.init_params(config, r, input_dim) for r in runs])]
  result = ensemble.GroupResult(runs, params, np.zeros([len(runs), 1], int))
  trainer.predict(result, images[:1024])  # Trace.
  start = time.perf_counter()
  trainer.predict(result, images)
  return (time.perf_counter() - start) / (len(runs) * len(images))


def _category(node_name: str, op_type: str) -> str:
  if "MatMul" in op_type:
    kind = "backward" if "gradient_tape" in node_name else "forward"
    return f"matmul {kind} ({op_type})"
  if op_type == "ResourceApplyMomentum":
    return "momentum update (float32, all params)"
  if op_type == "Cast":
    kind = "backward" if "gradient_tape" in node_name else "forward"
    return f"cast {kind} (weights, activations, gradients)"
  if op_type == "Sum" and "gradient_tape" in node_name:
    return "bias gradients (Sum over the batch)"
  if op_type in ("GatherV2", "ResourceGather"):
    return "gather batch"
  return "other (bias, ReLU, softmax, loss, ...)"


def step_profile(precision, group_size, steps=5):
  """Per-op times of the real ensemble step, traced by TensorFlow.

  Builds the step of `EnsembleTrainer` in a graph and runs it in a session
  with `RunOptions.FULL_TRACE`; returns `(categories, top_ops, wall)`:
  milliseconds per step by op category and by op (the `top_ops` slowest),
  and the traced step's mean wall time in ms.
  """
  rng = np.random.default_rng(0)
  n = 6000  # The gather's cost does not depend on the dataset size.
  config = ensemble.TrainConfig(precision=precision)
  categories, ops = collections.Counter(), collections.Counter()
  wall = 0.0
  with tf.Graph().as_default():
    trainer = ensemble.EnsembleTrainer(
        rng.random([n, 784], dtype=np.float32),
        rng.integers(0, 10, n), config)
    with tf.name_scope("profile"):  # A tf.Module needs a scope in graphs.
      group = trainer._group(group_size)  # pylint: disable=protected-access
    idx = tf.constant(rng.integers(0, n, [group_size, config.batch_size]),
                      tf.int32)
    # pylint: disable-next=protected-access
    loss = group.step(trainer._images, trainer._labels, idx)
    options = tf.compat.v1.RunOptions(
        trace_level=tf.compat.v1.RunOptions.FULL_TRACE)
    with tf.compat.v1.Session() as session:
      session.run(tf.compat.v1.global_variables_initializer())
      for _ in range(3):
        session.run(loss)  # Warm up.
      for _ in range(steps):
        metadata = tf.compat.v1.RunMetadata()
        start = time.perf_counter()
        session.run(loss, options=options, run_metadata=metadata)
        wall += (time.perf_counter() - start) * 1e3 / steps
        for device in metadata.step_stats.dev_stats:
          for node in device.node_stats:
            op_type = node.timeline_label.split(" = ")[-1].split("(")[0]
            if not op_type or op_type.startswith("_Retval"):
              continue
            ms = node.op_end_rel_micros / 1e3 / steps
            categories[_category(node.node_name, op_type)] += ms
            ops[f"{node.node_name.split('/', 1)[-1]} ({op_type})"] += ms
  return categories, ops, wall


def print_profile(profiles, group_size):
  print(f"\nper-op profile of the ensemble step, G={group_size} (TensorFlow "
        "FULL_TRACE, mean of 5 steps; ms of op time per step, % of the sum)")
  names = []
  for categories, _, _ in profiles.values():
    names += [n for n, _ in categories.most_common() if n not in names]
  print(f"  {'op category':<46}" + "".join(f"{p:>18}  " for p in profiles))
  for name in names:
    cells = ""
    for categories, _, _ in profiles.values():
      total = sum(categories.values())
      ms = categories.get(name, 0.0)
      cells += f"{ms:9.2f} ({100 * ms / total:5.1f}%)  "
    print(f"  {name:<46}{cells}")
  cells = "".join(f"{sum(c.values()):9.2f}{'':9}" for c, _, _ in
                  profiles.values())
  print(f"  {'sum of op times':<46}{cells}")
  cells = "".join(f"{wall:9.2f}{'':9}" for _, _, wall in profiles.values())
  print(f"  {'wall time of a traced step':<46}{cells}")
  for precision, (_, ops, _) in profiles.items():
    print(f"  slowest ops, {precision}:")
    for name, ms in ops.most_common(8):
      print(f"    {ms:8.2f} ms  {name}")


def quality_check(options):
  """bfloat16 vs float32 on the embedded digits with label noise.

  Each precision trains the same `--quality_runs` runs for `--auc_epochs`
  epochs; the test accuracy is read after `--quality_epochs` epochs (from
  `on_epoch_end`), the memorization of the noisy labels at the end (a few
  epochs are too few to memorize them: the AUC is near 0.5 then).

  Returns:
    `(data description, {precision: (mean test accuracy, memorization AUC of
    the noisy labels)})`.
  """
  data = data_lib.load("digits", label_noise=options.label_noise, seed=0)
  n = len(data.train_labels)
  noisy = np.zeros(n, bool)
  noisy[data.noisy_idx] = True
  runs = list(range(options.quality_runs))
  epochs = max(options.quality_epochs, options.auc_epochs)
  out = {}
  for precision in PRECISIONS:
    config = ensemble.TrainConfig(epochs=epochs, precision=precision,
                                  num_classes=data_lib.NUM_CLASSES)
    trainer = ensemble.EnsembleTrainer(data.train_images, data.train_labels,
                                       config)
    group_size = min(len(runs), ensemble.MAX_GROUP_SIZE)
    mask = np.zeros([len(runs), n], bool)
    correct = np.zeros([len(runs), n], bool)
    test_accuracy = []

    def on_epoch_end(epoch, view):
      if epoch == options.quality_epochs - 1:
        _, logits = view.features_and_logits(data.test_images)
        test_accuracy.extend(
            (logits.argmax(-1) == data.test_labels[None]).mean(axis=1))

    with progress.bar(len(runs), f"quality {precision}", "run") as bar:
      for first in range(0, len(runs), group_size):
        result = trainer.train(runs[first:first + group_size],
                               on_epoch_end=on_epoch_end)
        for g, subset in enumerate(result.subsets):
          mask[first + g, subset] = True
        correct[first:first + len(result.runs)] = (
            trainer.predict(result, data.train_images)
            == data.train_labels[None])
        bar.update(len(result.runs))
    memorization = estimates.memorization(mask, correct)
    defined = np.isfinite(memorization)
    auc = metrics.roc_auc_score(noisy[defined], memorization[defined])
    out[precision] = (float(np.mean(test_accuracy)), float(auc))
  return data.description, out


def measure_speed(options, group_size):
  """Peaks, plain loop, both ensembles, projection and targets: prints."""
  rng = np.random.default_rng(0)
  n = options.train_size
  images = rng.random([n, 784], dtype=np.float32)
  labels = rng.integers(0, 10, n).astype(np.int32)
  configs = {p: ensemble.TrainConfig(epochs=options.epochs, precision=p)
             for p in PRECISIONS}
  config = configs["float32"]
  steps = config.epochs * config.steps_per_epoch(n)
  flops_per_step = train_flops_per_example(config, 784) * config.batch_size
  print(f"N={options.num_models} models per ensemble (G={group_size}), "
        f"{options.plain_models} in the plain loop, x {steps} steps (batch "
        f"{config.batch_size}, {n} examples, ratio {config.ratio}); "
        f"{flops_per_step / 1e6:.0f} MFLOP per model-step")

  peaks = {p: matmul_peak_gflops(options.peak_size,
                                 ensemble.compute_dtype(p))
           for p in PRECISIONS}
  print(f"measured matmul peaks ({options.peak_size}^3 tf.matmul): float32 "
        f"{peaks['float32']:.1f} GFLOP/s, bfloat16 {peaks['bfloat16']:.1f} "
        f"GFLOP/s ({peaks['bfloat16'] / peaks['float32']:.2f}x)", flush=True)

  def report(name, seconds, num_models):
    gflops = num_models * steps * flops_per_step / seconds / 1e9
    per_hour = 3600 * num_models / seconds
    print(f"{name:<30} {seconds:7.1f} s {per_hour:8.0f} models/h "
          f"{gflops:6.1f} GFLOP/s = {100 * gflops / peaks['float32']:5.1f}% "
          f"of fp32 peak, {100 * gflops / peaks['bfloat16']:5.1f}% of bf16 "
          "peak", flush=True)
    return per_hour, gflops

  plain, _ = report(
      "plain loop (float32)",
      train_plain(images, labels, config,
                  list(range(options.plain_models))), options.plain_models)
  runs = list(range(options.num_models))
  trainers = {p: ensemble.EnsembleTrainer(images, labels, configs[p],
                                          jit_compile=options.jit_compile)
              for p in PRECISIONS}
  seconds = train_ensembles(trainers, runs, group_size)
  rates, gflops, eval_rates = {}, {}, {}
  for precision in PRECISIONS:
    rates[precision], gflops[precision] = report(
        f"ensemble {precision} G={group_size}"
        + (" XLA" if options.jit_compile else ""), seconds[precision],
        len(runs))
    eval_rates[precision] = eval_seconds_per_model_example(
        trainers[precision], runs[:group_size], images[:min(n, 20000)])

  paper_config = ensemble.TrainConfig(
      ratio=PAPER["ratio"], epochs=PAPER["epochs"],
      batch_size=PAPER["batch_size"])
  paper_steps = paper_config.epochs * paper_config.steps_per_epoch(
      PAPER["train_size"])
  print(f"\npaper setup projection (2000 runs x {paper_steps} steps, then "
        "each model evaluated on 70 000 images):")
  for precision in PRECISIONS:
    train_hours = PAPER["num_runs"] * paper_steps / steps / rates[precision]
    eval_hours = (PAPER["num_runs"] * (PAPER["train_size"]
                                       + PAPER["test_size"])
                  * eval_rates[precision] / 3600)
    print(f"  ensemble {precision}: {train_hours + eval_hours:.2f} h "
          f"({train_hours:.2f} h training + {eval_hours:.2f} h evaluation)")
  print(f"  plain loop (float32), training only: "
        f"{PAPER['num_runs'] * paper_steps / steps / plain:.1f} h")

  bf16 = rates["bfloat16"]
  fraction = gflops["bfloat16"] / peaks["bfloat16"]
  print()
  for text, value, goal in [
      ("bfloat16 ensemble over float32 ensemble", bf16 / rates["float32"],
       1.7),
      ("bfloat16 ensemble over the plain loop", bf16 / plain, 4.0),
      ("float32 ensemble over the plain loop", rates["float32"] / plain,
       None)]:
    verdict = "" if goal is None else (
        f" (>= {goal}x: {'met' if value >= goal else 'NOT met'})")
    print(f"target: {text} {value:.2f}x{verdict}")
  print(f"target: bfloat16 ensemble at {100 * fraction:.0f}% of the bf16 peak "
        f"(>= 60%: {'met' if fraction >= 0.6 else 'NOT met'})", flush=True)



def main(argv=None):
  options = parse_args(argv)
  print(load_line(), flush=True)
  flags = hardware.cpu_flags()
  bf16_units = [f for f in ("avx512_bf16", "amx_bf16") if f in flags]
  print(f"TensorFlow {tf.__version__}; CPU bfloat16 units: "
        f"{', '.join(bf16_units) or 'none'}; TF_ENABLE_ONEDNN_OPTS="
        f"{os.environ.get('TF_ENABLE_ONEDNN_OPTS', 'unset (default)')}")
  group_size = min(options.group_size or ensemble.auto_group_size(
      ensemble.TrainConfig()), options.num_models)
  if options.speed:
    measure_speed(options, group_size)
  if options.profile:
    profiles = {p: step_profile(p, group_size) for p in PRECISIONS}
    print_profile(profiles, group_size)

  if options.quality_runs:
    description, quality = quality_check(options)
    print(f"\nquality: {options.quality_runs} runs per precision, ratio "
          f"0.7, {100 * options.label_noise:g}% label noise; {description}")
    for precision, (accuracy, auc) in quality.items():
      print(f"  {precision:<9} mean test accuracy after "
            f"{options.quality_epochs} epochs {100 * accuracy:6.2f}%; "
            f"memorization AUC of the noisy labels after "
            f"{max(options.auc_epochs, options.quality_epochs)} epochs "
            f"{auc:.4f}")
    d_acc = 100 * (quality["bfloat16"][0] - quality["float32"][0])
    d_auc = quality["bfloat16"][1] - quality["float32"][1]
    print(f"  bfloat16 - float32: accuracy {d_acc:+.2f} points (|.| <= 0.3: "
          f"{'met' if abs(d_acc) <= 0.3 else 'NOT met'}), AUC {d_auc:+.4f} "
          f"(|.| <= 0.01: {'met' if abs(d_auc) <= 0.01 else 'NOT met'})")
  print(load_line())


if __name__ == "__main__":
  cli.run(main)
