r"""Data-quality scores of any held-out collection trained with signals.

Scores every training example of a collection made by `python -m
heldout_tf.cli.train ... --signals` with held-out memorization, 1 - C-score,
held-out loss, TracIn, AUM, confident learning and second-split
forgetting (where the runs recorded it: --ssft_epochs), and writes

  <root>/<experiment>/<ratio>/quality/scores.npz     (or --out DIR)
  <root>/<experiment>/<ratio>/quality/detection.csv  (known noise only)
  <root>/<experiment>/<ratio>/quality/removal.csv    (--removal_models N)
  <root>/<experiment>/<ratio>/quality/*.png          (roc, precision_at_k,
                                    top_suspicious, removal)
  <root>/<experiment>/<ratio>/quality/report.html
  <root>/<experiment>/<ratio>/quality/manifest.json  (written last)

  python -m heldout_tf.cli.quality --root ./runs --experiment cifar10-resnet9
  python -m heldout_tf.cli.quality --root ./runs --dataset npz:my_data.npz \
      --removal_models 4

With --num_runs it first trains (or resumes) that many runs with signals
(and --ssft_epochs of second-split training after each), on the training
set with --noise applied (seeded by --seed and recorded in config.json),
then scores them; detection.csv says how well each score finds the noisy
examples, the removal ablation what removing each score's top examples
does to the clean test accuracy of retrained models:

  python -m heldout_tf.cli.quality --root ./noisy --dataset mnist --model mlp \
      --recipe mnist-mlp --noise label:0.1 --num_runs 8

`python -m mnist_example.quality` is this command with MNIST defaults.
The labels are the collection's data loaded again (--dataset, default the
one config.json names) with its recorded noise; its fingerprint must match.
"""

from typing import Optional, Sequence

from heldout_tf import cli
from heldout_tf.quality import detection
from heldout_tf.core import errors
from heldout_tf.collection import layout
from heldout_tf.cli import train

PROG = "python -m heldout_tf.cli.quality"
# Every flag's default; a preset (`mnist_example.quality`) passes its own.
DEFAULTS = dict(
    train.TRAINING_DEFAULTS, root="./heldout_runs", experiment="", ratio=None,
    out=None, dataset="", data_dir=None, report=True, figures=True,
    removal_models=0,
    removal_fractions=detection.DEFAULT_REMOVAL_FRACTIONS,
    num_runs=0, ssft_epochs=5)


def build_parser(prog: str = PROG, doc: str = __doc__,
                 defaults: Optional[dict] = None) -> cli.Parser:
  """The command line (no TensorFlow imported); `defaults` replace some of
  `DEFAULTS` (a preset's)."""
  d = dict(DEFAULTS, **(defaults or {}))
  parser = cli.Parser(prog, doc)
  cli.add_root(parser, default=d["root"])
  parser.add_argument("--experiment", default=d["experiment"],
                      help="The experiment to score; empty: the only one "
                      "under --root (training: <dataset>-<architecture>).")
  parser.add_argument("--ratio", default=d["ratio"],
                      help="The subset ratio to score; unset: the only one "
                      "(training: 0.7).")
  parser.add_argument("--out", default=d["out"], metavar="DIR",
                      help="Directory for the outputs; unset: "
                      "<root>/<experiment>/<ratio>/quality.")
  parser.add_argument("--dataset", default=d["dataset"],
                      help="The data the runs were trained on (mnist, "
                      "digits, npz:FILE or a tfds name); empty: the one "
                      "recorded in config.json.")
  parser.add_argument("--data_dir", default=d["data_dir"], metavar="DIR",
                      help="The tfds data directory (never downloads).")
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
  training = parser.add_argument_group(
      "training (with --num_runs: train or resume, then score)")
  training.add_argument("--num_runs", type=int, default=d["num_runs"],
                        help="Train runs 0..N-1 with signals first (0: "
                        "score the collection as it is).")
  train.add_training_flags(training, d)
  cli.add_engine(parser, "the training (one task per block of runs)")
  cli.add_progress(parser)
  return parser


def parse_args(argv: Optional[Sequence[str]] = None,
               defaults: Optional[dict] = None, prog: str = PROG):
  """Flags -> `(ScoreOptions, model_blocks.Options or None)`, checked."""
  # pylint: disable=g-import-not-at-top
  from heldout_tf.training import model_blocks
  from heldout_tf.quality import workflow
  # pylint: enable=g-import-not-at-top
  d = dict(DEFAULTS, **(defaults or {}))
  args = build_parser(prog, "", defaults).parse_args(argv)
  cli.check_engine(args)
  ratio = None if args.ratio is None else layout.ratio_value(args.ratio,
                                                             "--ratio")
  if args.removal_models < 0:
    raise errors.UsageError(f"--removal_models must be >= 0, got "
                            f"{args.removal_models}")
  detection.parse_fractions(args.removal_fractions)
  options = workflow.ScoreOptions(
      root=args.root, experiment=args.experiment, ratio=ratio, out=args.out,
      dataset=args.dataset, data_dir=args.data_dir, report=args.report,
      figures=args.figures, removal_models=args.removal_models,
      removal_fractions=args.removal_fractions, model=args.model,
      progress=args.progress)
  if args.num_runs < 0:
    raise errors.UsageError(f"--num_runs must be >= 0, got {args.num_runs}")
  if not args.num_runs:
    # --model names the collection's own model for the removal ablation
    # (a recorded user module is imported only when named here).
    given = [f"--{f}" for f in train.TRAINING_DEFAULTS
             if getattr(args, f) != (",".join(d[f]) if f == "noise"
                                      else d[f])
             and not (f == "model" and args.removal_models)]
    if args.engine != "local":
      given.append("--engine")
    if given:
      raise errors.UsageError(
          f"{', '.join(given)}: training flags need --num_runs N (without "
          "it the collection under --root is scored as it is)")
    return options, None
  if ratio is not None and not ratio < 1.0:
    raise errors.UsageError(f"--ratio must be below 1 (runs must hold "
                            f"examples out), got {args.ratio}")
  if args.num_runs < 2:
    raise errors.UsageError(f"--num_runs must be >= 2 for held-out scores, "
                            f"got {args.num_runs}")
  train_options = model_blocks.Options(
      dataset=args.dataset, data_dir=args.data_dir, ratios=(ratio or 0.7,),
      num_runs=(args.num_runs,), root=args.root,
      experiment=args.experiment, signals=True, engine=args.engine,
      ray_address=args.ray_address, progress=args.progress,
      **train.training_values(args))
  train_options.check()
  return options, train_options


def print_result(result):
  """The summary lines of a `workflow.Result`."""
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
        defaults: Optional[dict] = None, prog: str = PROG):
  """Parses the flags (with a preset's `defaults`), trains if asked,
  scores, prints; returns the `workflow.Result`."""
  options, train_options = parse_args(argv, defaults, prog)  # No TF yet.
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
