r"""Exports one run's model as ONNX, safetensors or npz.

  python -m heldout_tf.export --experiment cifar10-inception \
      --run_dir <root>/cifar10-inception/0.7/0 --format onnx --out m.onnx \
      [--batch_size 4] [--check | --nocheck]

`--run_dir` is a run directory, its `checkpoints/` directory or a
`ckpt-<N>` prefix; the checkpoint is restored strictly. `--check` (the
default) verifies the file before it is written: ONNX Runtime logits equal
TensorFlow's on `--batch_size` random inputs (relative difference <= 1e-4),
safetensors/npz values equal the checkpoint's. See `heldout_tf.exports`.
"""

if __name__ == "__main__":
  from heldout_tf import cli as _cli  # pylint: disable=g-import-not-at-top
  _cli.quiet_tensorflow()

import argparse  # pylint: disable=g-import-not-at-top,g-bad-import-order
from typing import Optional, Sequence

from heldout_tf import cli
from heldout_tf import errors
from heldout_tf import exports


class _Parser(argparse.ArgumentParser):
  """Bad flags are `UsageError`s: one `error:` line, exit 1."""

  def error(self, message):
    raise errors.UsageError(message)


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
  parser = _Parser(prog="python -m heldout_tf.export",
                   description=__doc__.split("\n\n")[0].strip())
  parser.add_argument("--experiment", required=True,
                      help="e.g. cifar10-inception, imagenet-resnet50, "
                      "mnist-mlp")
  parser.add_argument("--run_dir", required=True,
                      help="Run directory, its checkpoints/ or a ckpt-N "
                      "prefix.")
  parser.add_argument("--format", required=True, choices=exports.FORMATS)
  parser.add_argument("--out", required=True, help="File to write.")
  parser.add_argument("--batch_size", type=int,
                      default=exports.DEFAULT_CHECK_BATCH,
                      help="Random inputs of the ONNX parity check.")
  check = parser.add_mutually_exclusive_group()
  check.add_argument("--check", dest="check", action="store_true",
                     default=True, help="Verify the export (default).")
  check.add_argument("--nocheck", "--no-check", dest="check",
                     action="store_false", help="Skip the verification.")
  return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
  args = parse_args(argv)
  info = exports.export(args.experiment, args.run_dir, args.out, args.format,
                        check=args.check, batch_size=args.batch_size)
  print(exports.summary(info))
  return 0


if __name__ == "__main__":
  cli.run(main)
