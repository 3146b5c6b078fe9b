"""Training N subset MLPs: one model at a time vs the ensemble trainer.

Both train the same N runs (784-512-256-10 MLP, SGD momentum, batch 128,
each on its own random subset of a 60 000-example MNIST-sized training set,
`--epochs` epochs) in one process:

- plain loop: one model at a time as typically written, which is
  `heldout_tf.training.train_alone` (the reference semantics): per run a
  fresh sonnet `models.MLP`, `snt.optimizers.Momentum` and `tf.function`
  step, fed NumPy batches `images[idx]`;
- tuned loop: one model at a time, made as strong as such a loop gets: one
  model and one compiled step reused for every run (per run: assign its
  initial weights, zero the momentum, run its batches), the batch gathered
  inside the step from the in-memory images, as the ensemble does;
- ensemble: `heldout_tf.training.EnsembleTrainer`, G models per compiled step.

Throughput is reported as models/hour and as achieved GFLOP/s (the matmul
FLOPs of the forward and backward passes), against the fp32 peak of a large
`tf.matmul` measured in the same run. The full paper setup (2000 runs, 60 000
examples, ratio 0.7, 10 epochs, batch 128, plus evaluating every model on the
70 000 train and test images) is projected from the ensemble's rates.

  python benchmarks/train_many.py
  python benchmarks/train_many.py --num_models=32 --group_sizes=8,16,32
"""

import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# As mnist_example.train does: oneDNN kernels (off by default on AMD CPUs).
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
import numpy as np
import sonnet as snt
import tensorflow as tf
import tqdm

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from heldout_tf import training  # pylint: disable=g-import-not-at-top

_NUM_MODELS = flags.DEFINE_integer("num_models", 32, "N: runs trained by "
                                   "each method.")
_EPOCHS = flags.DEFINE_integer("epochs", 1, "Epochs per run.")
_TRAIN_SIZE = flags.DEFINE_integer("train_size", 60000,
                                   "Synthetic training examples.")
_GROUP_SIZES = flags.DEFINE_list("group_sizes", [], "Ensemble group sizes to "
                                 "measure; empty: the automatic choice.")
_JIT = flags.DEFINE_bool("jit_compile", False, "XLA-compile the ensemble "
                         "step.")
_PEAK_SIZE = flags.DEFINE_integer("peak_size", 3072, "Matrix side of the "
                                  "peak-measuring matmul.")

PAPER = dict(num_runs=2000, train_size=60000, test_size=10000, ratio=0.7,
             epochs=10, batch_size=128)


def matmul_peak_gflops(n: int, repeats: int = 5) -> float:
  """Best fp32 GFLOP/s of an n x n x n `tf.matmul`."""
  a = tf.random.normal([n, n])
  b = tf.random.normal([n, n])
  matmul = tf.function(lambda a, b: tf.reduce_sum(tf.matmul(a, b)))
  matmul(a, b).numpy()  # Trace and warm up.
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    matmul(a, b).numpy()
    best = min(best, time.perf_counter() - start)
  return 2 * n ** 3 / best / 1e9


def train_flops_per_example(config: training.TrainConfig,
                            input_dim: int) -> float:
  """Matmul FLOPs of one example's forward + backward pass.

  Forward and weight gradients: 2 * in * out each per layer; input
  gradients for every layer but the first (the images need none).
  """
  sizes = config.layer_sizes(input_dim)
  macs = sum(i * o for i, o in sizes)
  return 2 * (2 * macs + macs - sizes[0][0] * sizes[0][1])


def eval_flops_per_example(config, input_dim) -> float:
  return 2 * sum(i * o for i, o in config.layer_sizes(input_dim))


def train_plain(images, labels, config, runs, bar):
  """`train_alone`, run by run; returns its seconds."""
  start = time.perf_counter()
  for run in runs:
    training.train_alone(images, labels, config, run)
    bar.update(1)
  return time.perf_counter() - start


def train_tuned(images, labels, config, runs, bar):
  """The tuned per-model loop; returns its seconds."""
  num_examples, input_dim = images.shape
  images_t, labels_t = tf.constant(images), tf.constant(labels)
  module = training.build_module(
      config, training.init_params(config, 0, input_dim), input_dim)
  optimizer = snt.optimizers.Momentum(config.learning_rate, config.momentum)

  @tf.function
  def step(idx):
    x, y = tf.gather(images_t, idx), tf.gather(labels_t, idx)
    with tf.GradientTape() as tape:
      loss = tf.reduce_mean(
          tf.nn.sparse_softmax_cross_entropy_with_logits(y, module(x)))
    variables = module.trainable_variables
    optimizer.apply(tape.gradient(loss, variables), variables)

  # Trace once (on a copy of the weights) outside the timed region.
  step(tf.constant(np.arange(config.batch_size, dtype=np.int32)))
  start = time.perf_counter()
  for run in runs:
    training.set_params(module, training.init_params(config, run, input_dim))
    for accumulator in optimizer.accumulated_momentum:
      accumulator.assign(tf.zeros_like(accumulator))
    for idx in training.batches(config, run, num_examples):
      step(tf.constant(idx.astype(np.int32)))
    bar.update(1)
  [v.numpy() for v in module.trainable_variables]  # Wait for the last step.
  return time.perf_counter() - start


def train_ensemble(trainer, runs, group_size, bar):
  """The ensemble trainer on `runs`, `group_size` at a time; seconds."""
  trainer.train(runs[:group_size])  # Trace outside the timed region.
  start = time.perf_counter()
  for first in range(0, len(runs), group_size):
    group = runs[first:first + group_size]
    trainer.train(group)
    bar.update(len(group))
  return time.perf_counter() - start


def main(argv):
  del argv
  config = training.TrainConfig(epochs=_EPOCHS.value)
  rng = np.random.default_rng(0)
  n = _TRAIN_SIZE.value
  images = rng.random([n, 784], dtype=np.float32)
  labels = rng.integers(0, 10, n).astype(np.int32)
  num_models = _NUM_MODELS.value
  runs = list(range(num_models))
  steps = config.epochs * config.steps_per_epoch(n)
  model_steps = num_models * steps
  flops_per_step = train_flops_per_example(config, 784) * config.batch_size
  print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPUs, oneDNN "
        f"{os.environ['TF_ENABLE_ONEDNN_OPTS']}; N={num_models} models x "
        f"{steps} steps (batch {config.batch_size}, {n} examples, ratio "
        f"{config.ratio}); {flops_per_step / 1e6:.0f} MFLOP per model-step")

  peak = matmul_peak_gflops(_PEAK_SIZE.value)
  print(f"measured fp32 matmul peak ({_PEAK_SIZE.value}^3 tf.matmul): "
        f"{peak:.1f} GFLOP/s")

  def report(name, seconds):
    gflops = model_steps * flops_per_step / seconds / 1e9
    per_hour = 3600 * num_models / seconds
    print(f"{name:<28} {seconds:7.1f} s  {per_hour:8.0f} models/h  "
          f"{gflops:6.1f} GFLOP/s ({100 * gflops / peak:4.1f}% of peak)",
          flush=True)
    return per_hour, gflops

  with tqdm.tqdm(total=num_models, desc="plain loop", unit="model",
                 leave=False) as bar:
    plain, _ = report("plain loop, one at a time",
                      train_plain(images, labels, config, runs, bar))
  with tqdm.tqdm(total=num_models, desc="tuned loop", unit="model",
                 leave=False) as bar:
    tuned, _ = report("tuned loop, one at a time",
                      train_tuned(images, labels, config, runs, bar))

  trainer = training.EnsembleTrainer(images, labels, config,
                                     jit_compile=_JIT.value)
  group_sizes = [int(g) for g in _GROUP_SIZES.value] or [
      training.auto_group_size(config)]
  best_rate, best_group, best_gflops = 0.0, None, 0.0
  for group_size in group_sizes:
    group_size = min(group_size, num_models)
    with tqdm.tqdm(total=num_models, desc=f"ensemble G={group_size}",
                   unit="model", leave=False) as bar:
      seconds = train_ensemble(trainer, runs, group_size, bar)
    rate, gflops = report(f"ensemble G={group_size}"
                  + (" (XLA)" if _JIT.value else ""), seconds)
    print(f"  speed-up: {rate / plain:.2f}x over the plain loop, "
          f"{rate / tuned:.2f}x over the tuned loop")
    if rate > best_rate:
      best_rate, best_group, best_gflops = rate, group_size, gflops

  # Projection of the paper setup from the best ensemble rate, plus the
  # evaluation of every model on all train and test images.
  group = trainer.train(runs[:best_group])
  eval_images = images[:min(n, 20000)]
  trainer.predict(group, eval_images[:1024])  # Trace.
  start = time.perf_counter()
  trainer.predict(group, eval_images)
  eval_per_model_example = (time.perf_counter() - start) / (
      best_group * len(eval_images))
  paper_config = training.TrainConfig(
      ratio=PAPER["ratio"], epochs=PAPER["epochs"],
      batch_size=PAPER["batch_size"])
  paper_steps = paper_config.epochs * paper_config.steps_per_epoch(
      PAPER["train_size"])
  train_hours = PAPER["num_runs"] * paper_steps / steps / best_rate
  eval_hours = (PAPER["num_runs"] * (PAPER["train_size"] + PAPER["test_size"])
                * eval_per_model_example / 3600)
  hours = {name: PAPER["num_runs"] * paper_steps / steps / rate
           for name, rate in [("plain", plain), ("tuned", tuned)]}
  print(f"paper setup projection (2000 runs x {paper_steps} steps, then "
        f"each model evaluated on 70 000 images): ensemble G={best_group} "
        f"{train_hours + eval_hours:.1f} h ({train_hours:.1f} h training + "
        f"{eval_hours:.2f} h evaluation); training one model at a time: "
        f"{hours['plain']:.1f} h (plain loop), {hours['tuned']:.1f} h (tuned "
        "loop)")
  fraction = best_gflops / peak
  for name, rate in [("plain", plain), ("tuned", tuned)]:
    print(f"target: speed-up over the {name} loop {best_rate / rate:.2f}x "
          f"(>= 4x: {'met' if best_rate >= 4 * rate else 'NOT met'})")
  print(f"target: {100 * fraction:.0f}% of "
        f"measured peak (>= 60%: {'met' if fraction >= 0.6 else 'NOT met'})")


if __name__ == "__main__":
  app.run(main)
