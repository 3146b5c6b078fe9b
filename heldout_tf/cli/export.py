r"""Exports one run's model as ONNX, safetensors or npz.

  heldout export --experiment cifar10-inception \
      --run_dir <root>/cifar10-inception/0.7/0 --format onnx --out m.onnx
  heldout export --run_dir ./runs/my_digits-mlp/0.7/0 --format npz \
      --out run0.npz

(`heldout export` is `python -m heldout_tf.cli.export`.) A run of a
collection `heldout train` made is exported with the model its
config.json records (--experiment, if given, must be its experiment; a
user module is imported only when --model names it again); a released
run's model is its experiment's (--experiment required).

`--run_dir` is a run directory, its `checkpoints/` directory or a
`ckpt-<N>` prefix; the checkpoint is restored strictly. `--out` is the file
written (atomically: a failed export leaves none). `--check` (the default)
verifies the file before it is written: ONNX Runtime logits equal
TensorFlow's on `--batch_size` random inputs (relative difference <= 1e-4),
safetensors/npz values equal the checkpoint's; a run with non-finite
weights cannot be checked. See `heldout_tf.collection.exports`.
"""

import os
from typing import Optional, Sequence

from heldout_tf import cli
from heldout_tf.collection import experiments
from heldout_tf.collection import recorded
from heldout_tf.core import errors
from heldout_tf.collection import exports  # No TensorFlow until an export runs.


def build_parser() -> cli.Parser:
  parser = cli.Parser("heldout export", __doc__)
  cli.add_experiment(parser, help="e.g. cifar10-inception, "
                     "imagenet-resnet50, mnist-mlp; empty: the one whose "
                     "config.json is beside --run_dir (heldout train "
                     "collections).")
  cli.add_recorded_sources(parser, dataset=False)
  parser.add_argument("--run_dir", required=True, metavar="DIR",
                      help="Run directory, its checkpoints/ or a ckpt-N "
                      "prefix.")
  parser.add_argument("--format", required=True, choices=exports.FORMATS)
  parser.add_argument("--out", required=True, metavar="FILE",
                      help="The file to write.")
  parser.add_argument("--batch_size", type=int,
                      default=exports.DEFAULT_CHECK_BATCH,
                      help="Random inputs of the ONNX parity check (1 to "
                      f"{exports.MAX_CHECK_BATCH}).")
  cli.add_bool(parser, "check", True, "Verify the export before writing it "
               "(--nocheck skips it).")
  return parser


def model_spec(args) -> exports.ModelSpec:
  """The run's model: the one recorded beside --run_dir, else
  --experiment's (no TensorFlow imported)."""
  if not (os.path.exists(args.run_dir) or
          os.path.exists(args.run_dir + ".index")):  # A ckpt-<N> prefix.
    raise errors.PathError(f"--run_dir {args.run_dir}: no such run "
                           "directory or checkpoint")
  found = recorded.of_run_dir(args.run_dir, args.model)
  if found is None:
    if not args.experiment:
      raise errors.UsageError(
          f"--run_dir {args.run_dir}: no config.json in its ratio directory "
          "(not made by heldout train): pass --experiment (known: "
          f"{', '.join(sorted(experiments.EXPERIMENTS))})")
    if args.model:
      raise errors.UsageError(
          "--model names a heldout train collection's recorded user module; "
          f"{args.run_dir} has no config.json")
    return exports.model_spec(args.experiment)
  name = os.path.basename(os.path.dirname(recorded.ratio_dir_of(
      args.run_dir)))
  if args.experiment and args.experiment != name:
    raise errors.UsageError(
        f"--experiment {args.experiment}: --run_dir {args.run_dir} is a run "
        f"of {name} (its config.json: {found.where})")
  return found.export_spec(name)


def main(argv: Optional[Sequence[str]] = None) -> int:
  args = build_parser().parse_args(argv)
  spec = model_spec(args)
  cli.quiet_tensorflow()
  info = exports.export(spec, args.run_dir, args.out, args.format,
                        check=args.check, batch_size=args.batch_size)
  print(exports.summary(info))
  return 0


if __name__ == "__main__":
  cli.run(main)
