r"""Exports one run's model as ONNX, safetensors or npz.

  python -m heldout_tf.cli.export --experiment cifar10-inception \
      --run_dir <root>/cifar10-inception/0.7/0 --format onnx --out m.onnx

`--run_dir` is a run directory, its `checkpoints/` directory or a
`ckpt-<N>` prefix; the checkpoint is restored strictly. `--out` is the file
written (atomically: a failed export leaves none). `--check` (the default)
verifies the file before it is written: ONNX Runtime logits equal
TensorFlow's on `--batch_size` random inputs (relative difference <= 1e-4),
safetensors/npz values equal the checkpoint's; a run with non-finite
weights cannot be checked. See `heldout_tf.models.exports`.
"""

from typing import Optional, Sequence

from heldout_tf import cli
from heldout_tf.models import exports  # No TensorFlow until an export runs.


def build_parser() -> cli.Parser:
  parser = cli.Parser("heldout export", __doc__)
  cli.add_experiment(parser, required=True, default=None,
                     help="e.g. cifar10-inception, imagenet-resnet50, "
                     "mnist-mlp")
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


def main(argv: Optional[Sequence[str]] = None) -> int:
  args = build_parser().parse_args(argv)
  cli.quiet_tensorflow()
  info = exports.export(args.experiment, args.run_dir, args.out, args.format,
                        check=args.check, batch_size=args.batch_size)
  print(exports.summary(info))
  return 0


if __name__ == "__main__":
  cli.run(main)
