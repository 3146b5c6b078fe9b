r"""Data-quality scores of any held-out collection trained with signals.

Scores every training example of a collection made by `heldout train
... --signals` with held-out memorization, 1 - C-score,
held-out loss, TracIn, AUM, confident learning and second-split
forgetting (where the runs recorded it: --ssft_epochs), and writes

  <root>/<experiment>/<ratio>/quality/scores.npz     (or --out_dir DIR)
  <root>/<experiment>/<ratio>/quality/detection.csv  (known noise only)
  <root>/<experiment>/<ratio>/quality/removal.csv    (--removal_models N)
  <root>/<experiment>/<ratio>/quality/*.png          (roc, precision_at_k,
                                    top_suspicious, removal)
  <root>/<experiment>/<ratio>/quality/report.html
  <root>/<experiment>/<ratio>/quality/manifest.json  (written last)

  heldout quality --root ./runs --experiment cifar10-resnet9
  heldout quality --root ./runs --dataset npz:my_data.npz --removal_models 4

With --num_runs it first trains (or resumes) that many runs with signals
(and --ssft_epochs of second-split training after each), on the training
set with --noise applied (seeded by --seed and recorded in config.json),
then scores them; detection.csv says how well each score finds the noisy
examples, the removal ablation what removing each score's top examples
does to the clean test accuracy of retrained models:

  heldout quality --root ./noisy --dataset mnist --model mlp \
      --recipe mnist-mlp --noise label:0.1 --num_runs 8

(`python -m heldout_tf.cli.quality` is the same command; `python -m
mnist_example.quality` is it with MNIST defaults.)
The labels are the collection's data loaded again (--dataset, default the
one config.json names) with its recorded noise; its fingerprint must match.
"""

import sys
from typing import Optional, Sequence

from heldout_tf import cli
from heldout_tf.cli import flags
from heldout_tf.collection import selection
from heldout_tf.core import errors
from heldout_tf.quality import detection

PROG = "heldout quality"
# The training flags this command takes (with --num_runs), and every
# flag's default; a preset (`mnist_example.quality`) passes its own.
TRAINING_FLAGS = ("dataset", "data_dir", "download", "noise", "train_size", "test_size",
                  "model", "model_options", "recipe", "seed", "epochs",
                  "batch_size", "learning_rate", "precision", "trainer",
                  "group_size", "checkpoint_every", "ssft_epochs",
                  "trajectory_runs")
DEFAULTS = dict(
    flags.DEFAULTS, root="./heldout_runs", experiment="", ratios=None,
    out_dir=None, report=True, figures=True, removal_models=0,
    removal_fractions=detection.DEFAULT_REMOVAL_FRACTIONS, num_runs=0,
    ssft_epochs=5)


def build_parser(prog: str = PROG, doc: str = __doc__,
                 defaults: Optional[dict] = None) -> cli.Parser:
  """The command line (no TensorFlow imported); `defaults` replace some of
  `DEFAULTS` (a preset's)."""
  d = dict(DEFAULTS, **(defaults or {}))
  parser = cli.Parser(prog, doc)
  cli.add_root(parser, default=d["root"])
  cli.add_experiment(parser, default=d["experiment"],
                     help="The experiment to score; empty: the only one "
                     "under --root (training: <dataset>-<model>).")
  parser.add_argument("--ratios", default=d["ratios"], metavar="RATIO",
                      help="The subset ratio to score (one); unset: the "
                      "only one (training: 0.7).")
  parser.add_argument("--out_dir", default=d["out_dir"], metavar="DIR",
                      help="Directory for the outputs; unset: "
                      "<root>/<experiment>/<ratio>/quality.")
  cli.add_bool(parser, "report", d["report"], "Also write report.html.")
  cli.add_bool(parser, "figures", d["figures"],
               "Also write the figures (roc.png, precision_at_k.png with "
               "known noise; top_suspicious.png; removal.png).")
  parser.add_argument("--removal_models", type=int,
                      default=d["removal_models"],
                      help="Removal ablation: models retrained without the "
                      "top examples of each score, per fraction (0: none).")
  parser.add_argument("--removal_fractions", default=d["removal_fractions"],
                      help="Fractions of the training set the ablation "
                      "removes, comma-separated.")
  data = parser.add_argument_group(
      "data (empty --dataset: the one the collection recorded)")
  flags.add_data_flags(data, d)
  training = parser.add_argument_group(
      "training (with --num_runs: train or resume, then score; --model "
      "also names a recorded user module for --removal_models)")
  training.add_argument("--num_runs", type=int, default=d["num_runs"],
                        help="Train runs 0..N-1 with signals first (0: "
                        "score the collection as it is).")
  flags.add_training_flags(training, d)
  cli.add_engine(parser, "the training (one task per block of runs)")
  cli.add_progress(parser)
  return parser


def parse_args(argv: Optional[Sequence[str]] = None,
               defaults: Optional[dict] = None, prog: str = PROG,
               doc: str = __doc__):
  """Flags -> `(ScoreOptions, workflow.Options or None)`, checked (`prog`
  and `doc`: the usage line and description of --help)."""
  from heldout_tf.quality import workflow as quality_workflow  # pylint: disable=g-import-not-at-top
  d = dict(DEFAULTS, **(defaults or {}))
  args = build_parser(prog, doc, defaults).parse_args(argv)
  cli.check_engine(args)
  ratio = selection.parse_one_ratio(args.ratios)
  if args.removal_models < 0:
    raise errors.UsageError(f"--removal_models must be >= 0, got "
                            f"{args.removal_models}")
  detection.parse_fractions(args.removal_fractions)
  options = quality_workflow.ScoreOptions(
      root=args.root, experiment=args.experiment, ratio=ratio,
      out=args.out_dir, dataset=args.dataset, data_dir=args.data_dir,
      report=args.report, figures=args.figures,
      removal_models=args.removal_models,
      removal_fractions=args.removal_fractions, model=args.model,
      progress=args.progress)
  if args.num_runs < 0:
    raise errors.UsageError(f"--num_runs must be >= 0, got {args.num_runs}")
  if not args.num_runs:
    # Without --num_runs the collection is scored as it is: training flags
    # are refused, except --dataset / --data_dir (where the recorded data
    # is now) and --model (names a recorded user module for the ablation).
    scoring = ("dataset", "data_dir") + (
        ("model",) if args.removal_models else ())
    given = [f"--{f}" for f in TRAINING_FLAGS
             if f not in scoring and _given(args, d, f)]
    if args.engine != "local":
      given.append("--engine")
    if given:
      raise errors.UsageError(
          f"{', '.join(given)}: training flags need --num_runs N (without "
          "it the collection under --root is scored as it is)")
    return options, None
  if ratio is not None and not ratio < 1.0:
    raise errors.UsageError(f"--ratios must be below 1 (runs must hold "
                            f"examples out), got {args.ratios}")
  if args.num_runs < 2:
    raise errors.UsageError(f"--num_runs must be >= 2 for held-out scores, "
                            f"got {args.num_runs}")
  train_options = flags.options_from(
      args, ratios=(ratio or 0.7,), num_runs=(args.num_runs,),
      experiment=args.experiment, root=args.root, signals=True)
  return options, train_options


def _given(args, defaults: dict, flag: str) -> bool:
  """Whether `--flag` was given a value other than its default."""
  value, default = getattr(args, flag), defaults[flag]
  if flag == "noise":
    value = ",".join(value) if isinstance(value, list) else value
  if flag == "model_options":
    default = flags._json(default)  # pylint: disable=protected-access
  return value != default


def print_result(result):
  """The summary lines of a `workflow.Result` (its warnings first, one
  `warning: ...` line each, on stderr)."""
  for warning in result.warnings:
    print(f"warning: {warning}", file=sys.stderr)
  n = len(result.data.train_labels)
  undefined = ", ".join(f"{k} {v}" for k, v in
                        result.scores.num_nan().items() if v) or "none"
  noise = (f"{len(result.noisy_idx)} noisy of {n} training examples "
           f"({result.noise})" if result.noise else
           f"{n} training examples, no recorded noise")
  print(f"\nScored {len(result.run_ids)} runs of {result.store.path}: "
        f"{noise}. Undefined (NaN) scores: {undefined}.")
  if result.detection is not None:
    print(detection.format_table(result.detection,
                                 detection.DETECTION_COLUMNS))
  if result.removal:
    print("\nRemoval ablation (clean test accuracy of the retrained "
          "models, mean and sd):")
    print(detection.format_table(result.removal,
                                 detection.REMOVAL_COLUMNS))
  written = [p for k, p in result.paths.items() if k != "manifest"]
  print("Wrote " + ", ".join(written + result.figures +
                              [result.paths["manifest"]]))


def run(argv: Optional[Sequence[str]] = None,
        defaults: Optional[dict] = None, prog: str = PROG,
        doc: str = __doc__):
  """Parses the flags (with a preset's `defaults`), trains if asked,
  scores, prints; returns the `workflow.Result`."""
  options, train_options = parse_args(argv, defaults, prog, doc)  # No TF.
  if train_options is None:
    cli.check_root(options.root)  # Before TensorFlow's seconds.
  cli.quiet_tensorflow()
  # pylint: disable=g-import-not-at-top
  from heldout_tf import report
  from heldout_tf.quality import workflow
  # pylint: enable=g-import-not-at-top
  write_report = report.write_for_quality if options.report else None
  if train_options is None:
    result = workflow.score(options, write_report=write_report)
  else:
    result = workflow.train_and_score(train_options, options,
                                      write_report=write_report)
  print_result(result)
  return result


def main(argv: Optional[Sequence[str]] = None):
  run(argv)


if __name__ == "__main__":
  cli.run(main)
