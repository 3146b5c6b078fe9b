r"""Reproduces the held-out method on MNIST, end to end, on one machine.

  python -m mnist_example.train                      # 3-4 min on 2 CPU cores
  python -m mnist_example.train --preset paper --data_dir ~/tensorflow_datasets
  python -m mnist_example.train --noise label:0.1 --root /tmp/noisy
  python -m mnist_example.train --stage train --shard 0/2 --group_size 32
  python -m mnist_example.train --stage estimate     # once every shard is done

Trains 512 MLPs (784-512-256-10, the `mnist-mlp` recipe: SGD momentum 0.9,
learning rate 0.1, batch 128, 10 epochs), each on its own random 70% of the
training set, records each model's correctness on every train and test
example in the released layout, then estimates memorization and influence
and writes, next to the runs of the ratio (`<root>/mnist-mlp/0.7/`):
estimates.npz, the high-influence pairs in the published format, figures/
and report.html. Expected on the embedded digits (4 000 train / 1 000
test, the offline default): mean test accuracy about 0.89, and with
`--noise label:0.1` the flipped labels found with a memorization ROC AUC
of about 0.85.

The training stage is `heldout train` with these defaults (`PRESET`), and
takes every flag of it:

  heldout train --root ./heldout_mnist --experiment mnist-mlp \
      --dataset mnist --model mlp --recipe mnist-mlp --ratios 0.7 \
      --num_runs 512

so the collection is made by the one workflow
(`heldout_tf.training.workflow`): resumable, shardable, on Ray, every
setting recorded. `--dataset mnist` is tfds MNIST when it is prepared in
--data_dir, else the embedded digits (the Data: line says which). The
estimate stage is `heldout_tf.estimates.workflow.estimate_collection`,
then `heldout_tf.report.write`.
"""

import os
from typing import Optional, Sequence

import numpy as np

from heldout_tf import cli
from heldout_tf.cli import train as train_command
from heldout_tf.collection import layout
from heldout_tf.core import errors

PROG = "python -m mnist_example.train"
EXPERIMENT = "mnist-mlp"
# `heldout train`'s defaults that differ: the reproduction's setup.
PRESET = dict(root="./heldout_mnist", experiment=EXPERIMENT,
              dataset="mnist", model="mlp", recipe="mnist-mlp",
              ratios=(0.7,), num_runs=(512,))
# `--preset paper`: the reference setup (2 000 runs on the full tfds MNIST,
# never the digits); explicit flags still override it.
PAPER = dict(num_runs=(2000,), dataset="mnist:3.0.1")
STAGES = ("train", "estimate", "all")


def build_parser() -> cli.Parser:
  """The command line (no TensorFlow imported)."""
  parser = train_command.build_parser(PROG, __doc__, PRESET)
  parser.add_argument("--stage", choices=STAGES, default="all",
                      help="What to run.")
  parser.add_argument("--preset", choices=("paper",), default=None,
                      help="'paper': the reference setup (2000 runs on "
                      "tfds MNIST); explicit flags still override it.")
  parser.add_argument("--infl_threshold", type=float, default=0.15,
                      help="High-influence pairs threshold.")
  parser.add_argument("--mem_threshold", type=float, default=0.25,
                      help="Memorization threshold of the pairs' training "
                      "examples.")
  return parser


def parse_args(argv: Optional[Sequence[str]] = None):
  """Flags -> `(workflow.Options, args)`, checked (`errors.UsageError`
  naming a bad flag); --help and bad flags import no TensorFlow."""
  parser = build_parser()
  args = parser.parse_args(argv)
  if args.preset == "paper":  # Explicit flags still win: parse again.
    parser.set_defaults(num_runs=PAPER["num_runs"][0],
                        dataset=PAPER["dataset"])
    args = parser.parse_args(argv)
  for name in ("infl_threshold", "mem_threshold"):
    if not np.isfinite(getattr(args, name)):
      raise errors.UsageError(f"--{name} must be a finite number, got "
                              f"{getattr(args, name)}")
  return train_command.options_from(args), args


def estimate(options, args) -> dict:
  """The estimate stage of every ratio: estimates, pairs, figures, the
  report; prints the summary. Returns `{ratio: result}`."""
  # pylint: disable=g-import-not-at-top
  from heldout_tf import collection
  from heldout_tf import estimates
  from heldout_tf import report
  from heldout_tf.collection import provenance
  from heldout_tf.estimates import workflow as estimates_workflow
  from heldout_tf.quality import detection
  from heldout_tf.training import workflow
  # pylint: enable=g-import-not-at-top
  results = {}
  for i, ratio in enumerate(options.ratios):
    store = collection.Store(options.root, options.experiment, ratio)
    config = workflow.recorded_config(store, required=True)
    data, noisy = provenance.load_recorded(config, store.config_path,
                                           data_dir=options.data_dir)
    result, paths = estimates_workflow.estimate_collection(
        store, options.runs_of(i), infl_threshold=args.infl_threshold,
        mem_threshold=args.mem_threshold, data=data, noisy=noisy,
        progress=options.progress)
    paths["report"] = report.write(
        options.root, options.experiment,
        os.path.join(store.path, layout.REPORT_FILENAME), ratio=ratio,
        estimates=paths["estimates"], data_dir=options.data_dir,
        progress=options.progress).path
    print(estimates.summary(result))
    noisy_idx = result["noisy_idx"]
    if len(noisy_idx):
      mem = np.nan_to_num(result["memorization"], nan=0.0)
      auc = detection.metrics(mem, noisy_idx)["auc"]
      print(f"noise check: {len(noisy_idx)} noisy training examples, mean "
            f"memorization {mem[noisy_idx].mean():.3f} vs "
            f"{np.delete(mem, noisy_idx).mean():.3f} for the rest; ROC AUC "
            f"{auc:.3f}")
      result["noise_auc"] = auc
    print(f"Estimates: {paths['estimates']}\nHigh-influence pairs: "
          f"{paths['pairs']}\nFigures:\n  " + "\n  ".join(paths["figures"])
          + f"\nReport (open in a browser): {paths['report']}")
    result["paths"] = paths
    results[ratio] = result
  return results


def run(options, args) -> dict:
  """Runs `args.stage`; returns what each stage reported."""
  # pylint: disable=g-import-not-at-top
  from heldout_tf import collection
  from heldout_tf.training import workflow
  # pylint: enable=g-import-not-at-top
  out = {}
  if args.stage in ("train", "all"):
    out["train"] = workflow.make(options)
  if args.stage in ("estimate", "all"):
    if args.stage == "all" and collection.is_sharded(options.shard):
      print("This is one shard: run --stage estimate once every shard is "
            "done.")
      return out
    out["estimate"] = estimate(options, args)
  return out


def main(argv: Optional[Sequence[str]] = None):
  options, args = parse_args(argv)  # --help and bad flags: no TensorFlow.
  os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # Read at TF import.
  cli.quiet_tensorflow()
  run(options, args)


if __name__ == "__main__":
  cli.run(main)
