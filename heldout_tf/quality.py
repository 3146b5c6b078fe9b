r"""Data-quality scores of any held-out collection trained with signals.

Scores every training example of a collection made by `python -m
heldout_tf.train ... --signals` with held-out memorization, 1 - C-score,
held-out loss, TracIn, AUM and confident learning (`heldout_tf.scores`;
second-split forgetting where the runs recorded it), and writes

  <root>/<experiment>/<ratio>/quality/scores.npz     (or --out DIR)
  <root>/<experiment>/<ratio>/quality/detection.csv  (known noise only)
  <root>/<experiment>/<ratio>/quality/report.html
  <root>/<experiment>/<ratio>/quality/manifest.json  (written last)

  python -m heldout_tf.quality --root ./runs --experiment cifar10-resnet9
  python -m heldout_tf.quality --root ./runs --dataset npz:my_data.npz

With --num_runs it first trains (or resumes) that many runs with signals,
on the training set with --noise applied (seeded by --seed and recorded in
config.json), then scores them; detection.csv says how well each score
finds the noisy examples:

  python -m heldout_tf.quality --root ./noisy --dataset mnist --model mlp \
      --recipe mnist-mlp --noise label:0.1 --num_runs 8

The labels are the collection's data loaded again (--dataset, default the
one config.json names) with its recorded noise; its fingerprint must match.
"""

from typing import Optional, Sequence

from heldout_tf import cli
from heldout_tf import errors
from heldout_tf import layout
from heldout_tf import noise
from heldout_tf import train

PROG = "python -m heldout_tf.quality"
# Flags that only mean something when --num_runs trains runs.
TRAIN_FLAGS = ("model", "model_options", "recipe", "noise", "seed", "epochs",
               "batch_size", "learning_rate", "precision", "group_size")


def build_parser() -> cli.Parser:
  """The command line (no TensorFlow imported)."""
  parser = cli.Parser(PROG, __doc__)
  cli.add_root(parser, default="./heldout_runs")
  parser.add_argument("--experiment", default="",
                      help="The experiment to score; empty: the only one "
                      "under --root (training: <dataset>-<architecture>).")
  parser.add_argument("--ratio", default=None,
                      help="The subset ratio to score; unset: the only one "
                      "(training: 0.7).")
  parser.add_argument("--out", default=None, metavar="DIR",
                      help="Directory for the outputs; unset: "
                      "<root>/<experiment>/<ratio>/quality.")
  parser.add_argument("--dataset", default="",
                      help="The data the runs were trained on (mnist, "
                      "npz:FILE or a tfds name); empty: the one recorded "
                      "in config.json.")
  parser.add_argument("--data_dir", default=None, metavar="DIR",
                      help="The tfds data directory (never downloads).")
  cli.add_bool(parser, "report", True, "Also write report.html.")
  training = parser.add_argument_group(
      "training (with --num_runs: train or resume, then score)")
  training.add_argument("--num_runs", type=int, default=0,
                        help="Train runs 0..N-1 with signals first (0: "
                        "score the collection as it is).")
  training.add_argument("--model", default=None,
                        help="As heldout_tf.train --model.")
  training.add_argument("--model_options", default=None, metavar="JSON",
                        help="As heldout_tf.train --model_options.")
  training.add_argument("--recipe", default=None,
                        help="As heldout_tf.train --recipe.")
  training.add_argument(
      "--noise", action="append", default=None, metavar="KIND:FRACTION",
      help=f"kind:fraction[@intensity], kinds {', '.join(noise.KINDS)}; "
      "repeat or comma-separate to combine; seeded by --seed, recorded.")
  training.add_argument("--seed", type=int, default=None,
                        help="As heldout_tf.train --seed (unset: 0).")
  for flag, kind in (("epochs", int), ("batch_size", int),
                     ("learning_rate", float)):
    training.add_argument(f"--{flag}", type=kind, default=None,
                          help=f"Override the recipe's {flag}.")
  training.add_argument("--precision", choices=train.PRECISION_CHOICES,
                        default=None, help="As heldout_tf.train --precision "
                        "(unset: auto).")
  training.add_argument("--group_size", type=int, default=None,
                        help="As heldout_tf.train --group_size (unset: the "
                        "recorded one, else 1).")
  cli.add_engine(parser, "the training (one task per block of runs)")
  cli.add_progress(parser)
  return parser


def parse_args(argv: Optional[Sequence[str]] = None):
  """Flags -> `(ScoreOptions, model_blocks.Options or None)`, checked."""
  # pylint: disable=g-import-not-at-top
  from heldout_tf import model_blocks
  from heldout_tf import quality_scores
  # pylint: enable=g-import-not-at-top
  args = build_parser().parse_args(argv)
  cli.check_engine(args)
  ratio = None if args.ratio is None else layout.ratio_value(args.ratio,
                                                             "--ratio")
  options = quality_scores.ScoreOptions(
      root=args.root, experiment=args.experiment, ratio=ratio, out=args.out,
      dataset=args.dataset, data_dir=args.data_dir, report=args.report,
      progress=args.progress)
  given = [f for f in TRAIN_FLAGS if getattr(args, f) is not None]
  if args.num_runs < 0:
    raise errors.UsageError(f"--num_runs must be >= 0, got {args.num_runs}")
  if not args.num_runs:
    if given or args.engine != "local":
      flags = [f"--{f}" for f in given] + (
          ["--engine"] if args.engine != "local" else [])
      raise errors.UsageError(
          f"{', '.join(flags)}: training flags need --num_runs N (without "
          "it the collection under --root is scored as it is)")
    return options, None
  if ratio is not None and not ratio < 1.0:
    raise errors.UsageError(f"--ratio must be below 1 (runs must hold "
                            f"examples out), got {args.ratio}")
  if args.num_runs < 2:
    raise errors.UsageError(f"--num_runs must be >= 2 for held-out scores, "
                            f"got {args.num_runs}")
  value = lambda flag, default: (default if getattr(args, flag) is None
                                 else getattr(args, flag))
  train_options = model_blocks.Options(
      dataset=args.dataset, data_dir=args.data_dir,
      model=value("model", ""),
      model_options=train.parse_model_options(value("model_options", "")),
      recipe=value("recipe", ""), ratios=(ratio or 0.7,),
      num_runs=(args.num_runs,), root=args.root,
      experiment=args.experiment, seed=value("seed", 0),
      epochs=value("epochs", 0), batch_size=value("batch_size", 0),
      learning_rate=value("learning_rate", 0.0),
      precision=value("precision", "auto"),
      group_size=value("group_size", 0), signals=True,
      noise=",".join(args.noise or ()), engine=args.engine,
      ray_address=args.ray_address, progress=args.progress)
  train_options.check()
  return options, train_options


def _print(result):
  # pylint: disable=g-import-not-at-top
  from heldout_tf import detection
  # pylint: enable=g-import-not-at-top
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
  print("Wrote " + ", ".join(result.paths.values()))


def main(argv: Optional[Sequence[str]] = None):
  options, train_options = parse_args(argv)  # No TensorFlow yet.
  cli.quiet_tensorflow()
  from heldout_tf import quality_scores  # pylint: disable=g-import-not-at-top
  if train_options is None:
    result = quality_scores.score(options)
  else:
    result = quality_scores.train_and_score(train_options, options)
  _print(result)


if __name__ == "__main__":
  cli.run(main)
