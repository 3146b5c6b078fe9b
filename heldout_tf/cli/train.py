r"""Makes a held-out collection for any image data and model.

Trains --num_runs models per subset ratio, each on its own random subset of
the training set, and writes each in the released layout

  <root>/<experiment>/<ratio>/<run>/checkpoints/ckpt-<epochs>.{index,data-*}
  <root>/<experiment>/<ratio>/<run>/aux_arrays.npz

so estimate, evaluate and export work on it. Re-running the same
command resumes: finished runs are skipped and a run killed mid-way
continues from its last epoch checkpoint with the same final bits.

  heldout train --dataset cifar10 --data_dir ~/tensorflow_datasets \
      --model small_inception --recipe released --ratios 0.7 --num_runs 200
  heldout train --dataset npz:my_data.npz --model resnet9 \
      --ratios 0.1:0.9:0.1 --num_runs 20 --root ./cscores
  heldout train --dataset npz:my_digits.npz --model my_nets:mlp64 \
      --recipe mnist-mlp --signals

(`python -m heldout_tf.cli.train` is the same.) The workflow is
`heldout_tf.training.workflow.make`; every flag below is a field of its
`Options`.

Data: a tfds name (prepared in --data_dir, never downloaded without
--download), npz:FILE (x_train, y_train, x_test, y_test; uint8 images),
mnist or digits. Models: small_inception, resnet9, mlp, resnet50, or
module:function returning an snt.Module (`--model my_nets:build` finds
./my_nets.py, as python -m would; it needs --recipe). Recipes: mnist-mlp,
released, resnet9; the one in use is printed with where each setting comes
from (see docs/collections.md, "Your first hour").
"""

from typing import Optional, Sequence

from heldout_tf import cli
from heldout_tf.cli import flags

PROG = "heldout train"


def build_parser(prog: str = PROG, doc: str = __doc__,
                 defaults: Optional[dict] = None) -> cli.Parser:
  """The command line (no TensorFlow imported); `defaults` replace some of
  `flags.DEFAULTS` (a preset's)."""
  d = dict(flags.DEFAULTS, **(defaults or {}))
  parser = cli.Parser(prog, doc)
  flags.add_data_flags(parser, d)
  parser.add_argument("--ratios", default=",".join(map(str, d["ratios"])),
                      help="Subset ratio(s): 0.7, 0.1,0.5 or 0.1:0.9:0.1.")
  runs = parser.add_mutually_exclusive_group()
  runs.add_argument("--num_runs", type=int, default=d["num_runs"][0],
                    help="Runs at each ratio.")
  runs.add_argument("--runs_per_ratio", default=None, metavar="N[,N...]",
                    help="Runs per ratio: one count, or one per ratio.")
  cli.add_root(parser, default=d["root"])
  cli.add_experiment(parser, default=d["experiment"],
                     help="The experiment's directory name; empty: "
                     "<dataset>-<model>.")
  flags.add_training_flags(parser, d)
  cli.add_bool(parser, "signals", d["signals"],
               "Also write each run's per-epoch data-quality signals "
               "(<run>/signals.npz: margins, correctness, last-layer TracIn, "
               "out-of-sample probabilities, second-split forgetting with "
               "--ssft_epochs) for heldout quality.")
  cli.add_bool(parser, "save_checkpoints", d["save_checkpoints"],
               "Write each run's checkpoints/ckpt-<N> (--nosave_checkpoints: "
               "aux arrays only; such runs cannot be re-evaluated).")
  parser.add_argument("--shard", default=d["shard"], metavar="I/N",
                      help="Train only the i-th of n sets of whole blocks.")
  cli.add_bool(parser, "jit_compile", d["jit_compile"],
               "Compile steps with XLA.")
  cli.add_engine(parser, "the training (one task per block of runs)")
  cli.add_progress(parser)
  return parser


def options_from(args):
  """Parsed flags -> checked `workflow.Options`."""
  cli.check_engine(args)
  if args.runs_per_ratio is not None:
    counts = flags.parse_counts(args.runs_per_ratio, "runs_per_ratio")
  else:
    counts = (args.num_runs,)
  return flags.options_from(args, num_runs=counts)


def parse_args(argv: Optional[Sequence[str]] = None):
  """Flags -> checked `workflow.Options`."""
  return options_from(build_parser().parse_args(argv))


def main(argv: Optional[Sequence[str]] = None):
  options = parse_args(argv)  # --help and bad flags: no TensorFlow.
  cli.quiet_tensorflow()
  from heldout_tf.training import workflow  # pylint: disable=g-import-not-at-top
  workflow.make(options)


if __name__ == "__main__":
  cli.run(main)
