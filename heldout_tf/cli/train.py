r"""Makes a held-out collection for any image data and model.

Trains --num_runs models per subset ratio, each on its own random subset of
the training set, and writes each in the released layout

  <root>/<experiment>/<ratio>/<run>/checkpoints/ckpt-<epochs>.{index,data-*}
  <root>/<experiment>/<ratio>/<run>/aux_arrays.npz

so estimate, evaluate and export work on it. Re-running the same
command resumes: finished runs are skipped and a run killed mid-way
continues from its last epoch checkpoint with the same final bits.

  python -m heldout_tf.cli.train --dataset cifar10 --data_dir ~/tensorflow_datasets \
      --model small_inception --recipe released --ratios 0.7 --num_runs 200
  python -m heldout_tf.cli.train --dataset npz:my_data.npz --model resnet9 \
      --ratios 0.1:0.9:0.1 --num_runs 20 --root ./cscores
  python -m heldout_tf.cli.train --dataset mnist --model my_pkg.models:build \
      --recipe mnist-mlp --engine ray

Data: a tfds name (prepared in --data_dir, never downloaded without
--download), npz:FILE (x_train, y_train, x_test, y_test; uint8 images),
mnist or digits. Models: small_inception, resnet9, mlp, or module:function
returning an snt.Module. Recipes: mnist-mlp, released, resnet9 (see
docs/collections.md for which settings are the papers').
"""

import argparse
import json
from typing import Optional, Sequence

from heldout_tf import cli
from heldout_tf.core import errors
from heldout_tf.collection import layout
from heldout_tf.data import noise

PROG = "heldout train"
PRECISION_CHOICES = ("auto", "float32", "bfloat16", "float16")


def parse_ratios(text: str):
  """'0.7' | '0.1,0.5' | '0.1:0.9:0.1' (start:stop:step, stop included) ->
  sorted distinct ratios in (0, 1]."""
  try:
    if ":" in text:
      start, stop, step = (float(x) for x in text.split(":"))
      if step <= 0:
        raise ValueError
      count = int(round((stop - start) / step)) + 1
      values = [start + k * step for k in range(max(count, 0))]
    else:
      values = [float(x) for x in text.split(",")]
  except ValueError:
    raise errors.UsageError(
        f"--ratios {text!r}: expected a ratio (0.7), a list (0.1,0.5) or "
        "start:stop:step (0.1:0.9:0.1)") from None
  if not values or not all(0 < round(v, 6) <= 1 for v in values):
    raise errors.UsageError(f"--ratios {text!r}: ratios must be in (0, 1]")
  return tuple(sorted({float(layout.format_ratio(round(v, 6)))
                       for v in values}))


def parse_counts(text: str, flag: str):
  try:
    counts = tuple(int(x) for x in text.split(","))
  except ValueError:
    raise errors.UsageError(
        f"--{flag} {text!r}: expected a count or one count per ratio "
        "(20,20,40)") from None
  return counts


def parse_model_options(text: str):
  try:
    value = json.loads(text) if text else {}
  except ValueError:
    value = None
  if not isinstance(value, dict):
    raise errors.UsageError(f"--model_options {text!r}: expected a JSON "
                            'object, e.g. \'{"width": 0.5}\'')
  return tuple(sorted(value.items()))


# The flags that say how runs train, shared with `heldout quality` and its
# MNIST preset (which pass their own defaults): name -> `heldout train`'s.
TRAINING_DEFAULTS = dict(
    model="", model_options="", recipe="", seed=0, epochs=0, batch_size=0,
    learning_rate=0.0, precision="auto", group_size=0, checkpoint_every=1,
    noise=(), ssft_epochs=0, trajectory_runs=0, train_size=0, test_size=0)


class _Repeated(argparse.Action):
  """A repeatable flag whose given values replace its default (argparse's
  'append' would add them to it)."""

  def __call__(self, parser, namespace, values, option_string=None):
    given = getattr(namespace, self.dest)
    given = [] if given is self.default else list(given)
    setattr(namespace, self.dest, given + [values])


def add_training_flags(parser, defaults: Optional[dict] = None):
  """Declares the `TRAINING_DEFAULTS` flags on `parser` (or an argument
  group), with `defaults` replacing some of their defaults."""
  d = dict(TRAINING_DEFAULTS, **(defaults or {}))
  parser.add_argument("--model", default=d["model"],
                      help="small_inception, resnet9, mlp, or "
                      "module:function returning an snt.Module; empty: the "
                      "recipe's.")
  parser.add_argument("--model_options", default=d["model_options"],
                      metavar="JSON",
                      help='Constructor options, e.g. \'{"width": 0.5}\' '
                      "for a narrower ResNet-9.")
  parser.add_argument("--recipe", default=d["recipe"],
                      help="mnist-mlp, released or resnet9; empty: the "
                      "model's (mlp -> mnist-mlp, small_inception -> "
                      "released, else resnet9).")
  parser.add_argument("--seed", type=int, default=d["seed"],
                      help="Subsets, shuffles, initialisation, augmentation "
                      "and noise are functions of (seed, run).")
  for flag, kind in (("epochs", int), ("batch_size", int),
                     ("learning_rate", float)):
    parser.add_argument(f"--{flag}", type=kind, default=d[flag],
                        help=f"Override the recipe's {flag} (0: keep).")
  parser.add_argument("--precision", choices=PRECISION_CHOICES,
                      default=d["precision"],
                      help="Training precision ('auto': the recorded one, "
                      "else bfloat16 / float16 where the device is fast in "
                      "it). Recorded correctness is always float32.")
  parser.add_argument("--group_size", type=int, default=d["group_size"],
                      help="Models trained side by side in one step; "
                      "0: the recorded one, else 1.")
  parser.add_argument("--checkpoint_every", type=int,
                      default=d["checkpoint_every"],
                      help="Epochs between a run's resume checkpoints "
                      "(0: none).")
  parser.add_argument(
      "--noise", action=_Repeated, default=",".join(d["noise"]),
      metavar="KIND:FRACTION",
      help="Known noise on the training set, seeded by --seed and "
      "recorded: kind:fraction[@intensity], kinds "
      f"{', '.join(noise.KINDS)}; repeat or comma-separate to combine "
      "('label:0' for none; given values replace the default).")
  parser.add_argument("--ssft_epochs", type=int, default=d["ssft_epochs"],
                      help="Second-split epochs after each run, on its "
                      "held-out examples, for the second-split forgetting "
                      "signal (needs signals; 0: none).")
  parser.add_argument("--trajectory_runs", type=int,
                      default=d["trajectory_runs"],
                      help="Runs 0..K-1 keep a checkpoint of every epoch "
                      "(<run>/trajectory/; -1: all).")
  parser.add_argument("--train_size", type=int, default=d["train_size"],
                      help="Use only the first N training examples (0: "
                      "all).")
  parser.add_argument("--test_size", type=int, default=d["test_size"],
                      help="Use only the first N test examples (0: all).")


def training_values(args) -> dict:
  """The `model_blocks.Options` fields of the training flags in `args`."""
  values = {name: getattr(args, name) for name in TRAINING_DEFAULTS}
  values["model_options"] = parse_model_options(args.model_options)
  values["noise"] = (args.noise if isinstance(args.noise, str)
                     else ",".join(args.noise))
  return values


def build_parser() -> cli.Parser:
  """The command line (no TensorFlow imported)."""
  parser = cli.Parser(PROG, __doc__)
  parser.add_argument("--dataset", required=True,
                      help="A tfds name (cifar10, cifar100:3.0.2, ...), "
                      "npz:FILE, mnist (tfds if prepared, else the embedded "
                      "digits) or digits.")
  parser.add_argument("--data_dir", default=None, metavar="DIR",
                      help="The tfds data directory.")
  cli.add_bool(parser, "download", False,
               "Let tfds download the dataset (network).")
  parser.add_argument("--ratios", default="0.7",
                      help="Subset ratio(s): 0.7, 0.1,0.5 or 0.1:0.9:0.1.")
  runs = parser.add_mutually_exclusive_group()
  runs.add_argument("--num_runs", type=int, default=8,
                    help="Runs at each ratio.")
  runs.add_argument("--runs_per_ratio", default=None, metavar="N[,N...]",
                    help="Runs per ratio: one count, or one per ratio.")
  cli.add_root(parser, default="./heldout_runs")
  parser.add_argument("--experiment", default="",
                      help="The experiment's directory name; empty: "
                      "<dataset>-<architecture>.")
  add_training_flags(parser)
  parser.add_argument("--shard", default="0/1", metavar="I/N",
                      help="Train only the i-th of n sets of whole blocks.")
  cli.add_bool(parser, "signals", False,
               "Also write each run's per-epoch data-quality signals "
               "(<run>/signals.npz: margins, correctness, last-layer TracIn, "
               "out-of-sample probabilities, second-split forgetting with "
               "--ssft_epochs) for heldout_tf.quality.scores.")
  cli.add_bool(parser, "jit_compile", False, "Compile steps with XLA.")
  cli.add_engine(parser, "the training (one task per block of runs)")
  cli.add_progress(parser)
  return parser


def parse_args(argv: Optional[Sequence[str]] = None):
  """Flags -> checked `model_blocks.Options`."""
  from heldout_tf.training import model_blocks  # pylint: disable=g-import-not-at-top
  args = build_parser().parse_args(argv)
  cli.check_engine(args)
  ratios = parse_ratios(args.ratios)
  if args.runs_per_ratio is not None:
    counts = parse_counts(args.runs_per_ratio, "runs_per_ratio")
  else:
    counts = (args.num_runs,)
  options = model_blocks.Options(
      dataset=args.dataset, data_dir=args.data_dir, download=args.download,
      ratios=ratios, num_runs=counts, root=args.root,
      experiment=args.experiment, signals=args.signals, shard=args.shard,
      jit_compile=args.jit_compile, engine=args.engine,
      ray_address=args.ray_address, progress=args.progress,
      **training_values(args))
  options.check()
  return options


def main(argv: Optional[Sequence[str]] = None):
  options = parse_args(argv)  # --help and bad flags: no TensorFlow.
  cli.quiet_tensorflow()
  from heldout_tf.training import model_blocks  # pylint: disable=g-import-not-at-top
  model_blocks.make(options)


if __name__ == "__main__":
  cli.run(main)
