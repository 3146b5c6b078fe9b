"""Inference throughput of SmallInception: ONNX Runtime vs TensorFlow.

One process, one model (random weights, non-trivial BatchNorm statistics),
the same batches of random [0, 1] 32x32x3 images (CIFAR preprocessing):

- tf: the kit's traced forward pass (`exports.inference_function`, the
  graph that is exported), on tensors already in memory;
- onnx: the file `heldout_tf.cli.export --format onnx` writes, run by an
  `onnxruntime.InferenceSession` on the CPU (default threads, all graph
  optimisations), on numpy arrays already in memory.

Rounds alternate tf / onnx so that load from other processes hits both
alike; medians of wall and process CPU time per round are printed, with the
load average before and after (other processes share the machine). The
logits are checked to agree (relative difference <= 1e-4) before timing.

  flock /tmp/bench.lock python benchmarks/export.py [--batch_size 200] \
      [--batches 5] [--rounds 5]
"""

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # pylint: disable=g-import-not-at-top
import onnxruntime as ort
import tensorflow as tf

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _ROOT)

from heldout_tf.collection import exports  # pylint: disable=g-import-not-at-top
from heldout_tf import models
from heldout_tf import synthetic


def parse_args():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--batch_size", type=int, default=200)
  parser.add_argument("--batches", type=int, default=5,
                      help="Batches per timed round.")
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--num_classes", type=int, default=10)
  return parser.parse_args()


def timed(fn):
  """`(wall seconds, process CPU seconds)` of `fn()`."""
  wall, cpu = time.perf_counter(), time.process_time()
  fn()
  return time.perf_counter() - wall, time.process_time() - cpu


def main():
  args = parse_args()
  load_before = os.getloadavg()
  spec = exports.model_spec("cifar10-inception")
  model = synthetic.randomize(
      models.build_model("small_inception", args.num_classes), "small_inception", 0)
  function = exports.inference_function(model, spec)
  start = time.perf_counter()
  onnx_bytes = exports.to_onnx(function, {"experiment": spec.experiment,
                                          "input_name": exports.INPUT_NAME,
                                          "input_shape": "[batch, 32, 32, 3]",
                                          "output": "logits"})
  convert_seconds = time.perf_counter() - start
  session = ort.InferenceSession(onnx_bytes,
                                 providers=["CPUExecutionProvider"])
  rng = np.random.default_rng(0)
  batches = [rng.uniform(size=(args.batch_size, 32, 32, 3)).astype(np.float32)
             for _ in range(args.batches)]
  tensors = [tf.constant(b) for b in batches]

  def run_tf():
    for t in tensors:
      function(t).numpy()

  def run_onnx():
    for b in batches:
      session.run([exports.OUTPUT_NAME], {exports.INPUT_NAME: b})

  difference = exports.relative_difference(
      session.run(None, {exports.INPUT_NAME: batches[0]})[0],
      function(tensors[0]).numpy())
  assert difference <= exports.PARITY_TOLERANCE, difference
  run_tf(), run_onnx()  # Warm-up: tracing, allocator, thread pools.
  times = {"tf": [], "onnx": []}
  for r in range(args.rounds):
    order = ("tf", "onnx") if r % 2 == 0 else ("onnx", "tf")
    for name in order:
      times[name].append(timed(run_tf if name == "tf" else run_onnx))
  load_after = os.getloadavg()
  images = args.batch_size * args.batches
  print(f"SmallInception/{args.num_classes}, batch {args.batch_size}, "
        f"{images} images per round, {args.rounds} rounds; "
        f"{os.cpu_count()} CPUs; TF {tf.__version__}, onnxruntime "
        f"{ort.__version__}, opset {exports.ONNX_OPSET}")
  print(f"tf2onnx conversion: {convert_seconds:.1f} s; max relative logit "
        f"difference {difference:.2g}")
  rate, cpu_rate = {}, {}
  for name, values in times.items():
    wall = statistics.median(v[0] for v in values)
    cpu = statistics.median(v[1] for v in values)
    rate[name], cpu_rate[name] = images / wall, images / cpu
    print(f"{name:>5}: median {wall:.2f} s wall ({rate[name]:.0f} img/s), "
          f"{cpu:.2f} s CPU ({images / cpu:.0f} img/CPU-s); all walls "
          f"{', '.join(f'{v[0]:.2f}' for v in values)}")
  print(f"onnx / tf throughput: {rate['onnx'] / rate['tf']:.2f}x wall, "
        f"{cpu_rate['onnx'] / cpu_rate['tf']:.2f}x per CPU second")
  print(f"load average (1, 5, 15 min): before {load_before[0]:.2f} "
        f"{load_before[1]:.2f} {load_before[2]:.2f}, after "
        f"{load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")


if __name__ == "__main__":
  main()
