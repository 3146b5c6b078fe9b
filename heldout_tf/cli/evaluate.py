r"""Restores runs, re-evaluates them and cross-checks aux_arrays.npz.

  heldout evaluate --experiment cifar10-inception --ratios 0.7 --runs 0
  heldout evaluate --root ./runs --experiment my_digits-mlp --runs 0-3
  heldout evaluate --experiment cifar10-inception --runs all --split train
  heldout evaluate --experiment cifar10-inception --runs 0-99 \
      --split both --record margins
  heldout evaluate --experiment imagenet-resnet50 \
      --data_dir ~/tensorflow_datasets --imagenet_index_map index.csv

(`heldout evaluate` is `python -m heldout_tf.cli.evaluate`; `python demo.py` in a
clone is the same command.) Any collection: released runs (their
experiment's model and pipeline), or one `heldout train` made, rebuilt from
its config.json (its model, and its data with the recorded noise; a user
module only when --model names it again). For each run: the checkpoint's epoch and global
step, the subset percentage, the accuracy, and `N out of M predictions
match` against the run's recorded correctness. One model, one compiled
forward pass and one read of the split serve every run
(`heldout_tf.collection.reevaluation.evaluate_collection`).

`--record margins` (with `--split both`: each run is evaluated on its whole
training set and its test set) also writes each run's `margins.npz` beside
its `aux_arrays.npz`, which stays as it is: the final model's margin and
correct-label probability per example, for `heldout estimate --target
margin`, `heldout datamodels` and `heldout lds`
(`heldout_tf.collection.margins`). A run whose recomputed predictions
differ from its recorded correctness gets no file (its logits are not the
ones the recorded bits came from); the command says so and exits 1.

Exit status: 0 done; 1 a bad input (`error: ...`, e.g. a corrupt checkpoint,
a missing dataset), a run whose margins were not written, or, with
--require_match, a prediction that does not match; 2 bad flags, or runs not
on disk (with download instructions).
"""

import os
import sys

from heldout_tf import cli
from heldout_tf.core import errors
from heldout_tf.collection import layout
from heldout_tf.collection import selection
from heldout_tf.collection import experiments

PROG = "heldout evaluate"
ROOT_ENV = "HELDOUT_ROOT"
DEFAULT_ROOT = "~/heldout-checkpoints"
DEFAULT_EXPERIMENT = "cifar10-inception"
MISMATCHES_SHOWN = 10


def default_root() -> str:
  """$HELDOUT_ROOT, else ~/heldout-checkpoints."""
  return os.environ.get(ROOT_ENV) or os.path.expanduser(DEFAULT_ROOT)


def build_parser(prog: str = PROG) -> cli.Parser:
  """The command line's flags (imports no TensorFlow)."""
  parser = cli.Parser(prog, __doc__)
  parser.add_argument("--experiment", default="", metavar="NAME",
                      help="The experiment directory under --root: a "
                      f"released one ({', '.join(sorted(experiments.RELEASED))})"
                      " or one heldout train made; empty: the only one "
                      f"there (none: {DEFAULT_EXPERIMENT}).")
  cli.add_root(parser, help="The collection root, holding <experiment>/"
               f"<ratio>/<run>/ (unset: ${ROOT_ENV} or {DEFAULT_ROOT}).")
  parser.add_argument("--ratios", default="0.7", metavar="LIST",
                      help="Subset ratios of the runs to evaluate, e.g. "
                      "0.7 or 0.1,0.7; 'all': every ratio on disk.")
  parser.add_argument("--runs", default="0", metavar="LIST",
                      help="Run ids to evaluate: ids and ranges, e.g. 0,3 "
                      "or 0-9; 'all': every run on disk.")
  parser.add_argument("--split", default="test",
                      choices=["test", "train", "both"],
                      help="Split to evaluate ('train': the whole training "
                      "set, trained-on and held-out examples; 'both': "
                      "train, then test, one restore per run).")
  parser.add_argument("--record", default=None, choices=["margins"],
                      help="Also write each run's margins.npz (final "
                      "margins and label probabilities; needs --split "
                      "both).")
  parser.add_argument("--data_dir", default=None, metavar="DIR",
                      help="tfds data_dir (CIFAR); for ImageNet the indexed "
                      "TFRecord directory or a prepared tfds imagenet2012 "
                      "directory.")
  parser.add_argument("--imagenet_index_map", default=None, metavar="FILE",
                      help="ImageNet from a tfds imagenet2012 --data_dir: "
                      "file of split,file_name,index lines giving each "
                      "image's canonical index.")
  parser.add_argument("--download", action="store_true",
                      help="Let tfds download the dataset (CIFAR).")
  cli.add_recorded_sources(parser)
  parser.add_argument("--batch_size", type=int, default=200,
                      help="Evaluation batch size.")
  parser.add_argument("--require_match", action="store_true",
                      help="Exit 1 when any prediction does not match.")
  cli.add_progress(parser)
  return parser


def parse_args(argv=None, prog: str = PROG):
  """The flags, checked (a bad one: `error: --flag ...`, exit 2)."""
  args = build_parser(prog).parse_args(argv)
  args.root = args.root or default_root()
  args.experiment = args.experiment or only_experiment(args.root)
  imagenet = args.experiment == "imagenet-resnet50"
  if args.imagenet_index_map and not imagenet:
    raise errors.UsageError(
        f"--imagenet_index_map does not apply to {args.experiment}.")
  if args.download and imagenet:
    raise errors.UsageError(
        "--download does not apply to ImageNet: pass --data_dir with your "
        "indexed TFRecords, or a prepared tfds imagenet2012 directory and "
        "--imagenet_index_map.")
  if args.record == "margins" and args.split != "both":
    raise errors.UsageError(
        "--record margins needs --split both (margins of the whole "
        f"training set and the test set), got --split {args.split}")
  if args.batch_size < 1:
    raise errors.UsageError(f"--batch_size must be >= 1, got "
                            f"{args.batch_size}")
  args.ratios = selection.parse_ratios(args.ratios)
  args.runs = selection.parse_run_ids(args.runs)
  return args


def only_experiment(root: str) -> str:
  """The only experiment under `root`; `DEFAULT_EXPERIMENT` when there is
  none (the download instructions name it); a `UsageError` listing them
  when there are several."""
  found = layout.list_experiments(root)
  if len(found) > 1:
    raise errors.UsageError(f"--root {root} holds {len(found)} experiments "
                            f"({', '.join(found)}): pass --experiment")
  return found[0] if found else DEFAULT_EXPERIMENT


def print_run(experiment: str, run, evaluated, header: bool = True):
  """Prints one `reevaluation.RunEvaluation` of `run` (a `layout.RunPath`);
  the run's line only with `header` (its first split)."""
  info, check = evaluated.info, evaluated.check
  if header:
    print(f"{experiment} ratio {run.ratio_name} run {run.run}: "
          f"epoch {info.epoch}, global step {info.global_step}, trained on "
          f"{100 * evaluated.subset_fraction:.1f}% of the training set")
  print(f"  {check.split} accuracy: {100 * evaluated.result.accuracy:.2f}%")
  print(f"  {check}")
  if not check.ok:
    shown = ", ".join(str(i) for i in check.mismatched_index[:MISMATCHES_SHOWN])
    more = " ..." if len(check.mismatched_index) > MISMATCHES_SHOWN else ""
    print(f"  mismatched example indices: {shown}{more}")
  if evaluated.margins is not None:
    print(f"  margins: {evaluated.margins}")
  sys.stdout.flush()


def main(argv=None, prog: str = PROG) -> int:
  args = parse_args(argv, prog)
  if not os.path.isdir(args.root):  # Before TensorFlow's seconds.
    what = "is not a directory" if os.path.exists(args.root) else (
        "does not exist")
    if args.experiment not in experiments.RELEASED:
      raise errors.UsageError(
          f"--experiment {args.experiment}: not a released experiment "
          f"({', '.join(sorted(experiments.RELEASED))}), and --root "
          f"{args.root} {what} to hold a collection of that name")
    print(f"No run found: --root {args.root} {what}.\n", file=sys.stderr)
    print(experiments.download_instructions(
        args.experiment, args.root, args.ratios[0] if args.ratios else 0.7,
        args.runs), file=sys.stderr)
    return cli.USAGE_EXIT
  cli.quiet_tensorflow()
  from heldout_tf.collection import reevaluation  # pylint: disable=g-import-not-at-top
  all_match, not_recorded, last = True, 0, None
  try:
    for run, evaluated in reevaluation.evaluate_collection(
        args.root, args.experiment, args.ratios, args.runs, args.split,
        data_dir=args.data_dir, download=args.download,
        index_map=args.imagenet_index_map, batch_size=args.batch_size,
        progress=args.progress, record_margins=args.record == "margins",
        model=args.model, dataset=args.dataset):
      print_run(args.experiment, run, evaluated, header=run != last)
      last = run
      all_match &= evaluated.check.ok
      not_recorded += bool(evaluated.margins and
                           not evaluated.margins.written)
  except reevaluation.RunNotFoundError as e:
    if args.experiment not in experiments.RELEASED:
      raise errors.UsageError(str(e)) from None
    print(f"{e}.\n", file=sys.stderr)
    ratio = args.ratios[0] if args.ratios else 0.7
    print(experiments.download_instructions(args.experiment, args.root, ratio,
                                         args.runs), file=sys.stderr)
    return cli.USAGE_EXIT
  if not_recorded:
    print(f"Margins were not written for {not_recorded} run(s): their "
          "predictions differ from the recorded correctness.",
          file=sys.stderr)
    return 1
  if args.require_match and not all_match:
    print("Some predictions do not match the recorded correctness.",
          file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  cli.run(main)
