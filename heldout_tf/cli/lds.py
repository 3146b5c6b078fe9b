r"""Judges attributions on a collection: the linear datamodeling score (LDS).

  heldout lds --root DIR --experiment mnist-mlp --eval_runs 400-511 \
      --scores dm.npz --scores est.npz --methods none
  heldout lds --root DIR --experiment mnist-mlp --eval_runs 700-799 \
      --fit_runs 0-699 --methods dom_correct,dom_margin,ridge,l1,tracin

(`heldout lds` is `python -m heldout_tf.cli.lds`.) For every evaluation run
(its aux_arrays.npz and margins.npz) and test example, the attribution's
predicted group effect (the sum of its scores over the run's training
subset) is rank-correlated with the run's margin; the table gives, per
method, the mean over test examples with its standard error, how many
correlations were undefined (a constant prediction or margin: counted as
0) and how many runs the scores were fitted on
(`heldout_tf.estimates.lds`). Score files (`--scores`, repeatable): the
output of `heldout datamodels` or `heldout estimate` (dense influence or
pairs), or your own npz with a dense `scores` [n_test, n_train] array or
`tr_idx`/`tt_idx`/`infl` pairs and the runs they used (`fit_run_ids`,
`fit_run_ratios`; empty if none). `--methods` are fitted here on
--fit_runs (default: every run not evaluated): the papers' difference of
means of 0/1 correctness (dom_correct) and of the margin (dom_margin),
ridge and l1 datamodels, and TracIn on the last layer from the trajectory
checkpoints of the fitting runs that kept them (tracin; `heldout train
--trajectory_runs K`; the table names the runs); 'all' (default): every
one the collection can give; 'none' for none. Evaluation runs that a
score was fitted on, fewer than --min_eval_runs of them, or scores whose
shapes or indices do not match the collection are refused with one error
line. The table is also written to --out (default: <ratio>/attribution/
lds.npz, where `heldout report` finds it; 'none': nowhere).
"""

import os

from heldout_tf import cli
from heldout_tf.core import errors
from heldout_tf.core import files
from heldout_tf.core import sizes
from heldout_tf.collection import layout
from heldout_tf.collection import selection
from heldout_tf.estimates import attributions  # No TensorFlow.
from heldout_tf.estimates import lds as lds_lib
from heldout_tf.estimates import tracin  # TensorFlow only when it runs.

PROG = "heldout lds"


def build_parser() -> cli.Parser:
  """The command line's flags (imports no TensorFlow)."""
  parser = cli.Parser(PROG, __doc__)
  cli.add_root(parser, required=True)
  cli.add_experiment(parser, required=True, default=None,
                     help="The <experiment> directory, e.g. mnist-mlp.")
  parser.add_argument("--eval_runs", required=True, metavar="LIST",
                      help="Run ids that judge the scores (at every ratio), "
                      "e.g. 400-511; never runs a score was fitted on.")
  parser.add_argument("--scores", action="append", default=[],
                      metavar="FILE.npz",
                      help="A score file to judge (repeat for several).")
  parser.add_argument("--methods", default=lds_lib.ALL, metavar="LIST",
                      help="Built-in methods to fit on --fit_runs and judge "
                      f"too, from {','.join(attributions.BUILTINS)}; "
                      "'all': every one the collection can give (tracin "
                      "where the fitting runs kept trajectories); 'none' "
                      "for none.")
  parser.add_argument("--fit_runs", default=None, metavar="LIST",
                      help="Run ids the built-in methods are fitted on "
                      "(default: every run not in --eval_runs).")
  parser.add_argument("--ratios", default="all", metavar="LIST",
                      help="Subset ratios to use, e.g. 0.5.")
  parser.add_argument("--min_eval_runs", type=int,
                      default=lds_lib.MIN_EVAL_RUNS,
                      help="Fewest evaluation runs accepted.")
  parser.add_argument("--memory_budget", default="4GB", metavar="SIZE",
                      help="Working memory of the built-in datamodel fits.")
  parser.add_argument("--out", default=None, metavar="FILE.npz",
                      help="Write every method's LDS per test example here "
                      "(unset: <root>/<experiment>/<ratio>/attribution/"
                      "lds.npz when the runs are at one ratio; 'none': "
                      "nowhere).")
  cli.add_recorded_sources(parser)  # For tracin.
  parser.add_argument("--data_dir", default=None, metavar="DIR",
                      help="tracin: the tfds data directory.")
  cli.add_progress(parser)
  return parser


def parse_args(argv=None):
  """The flags, checked; `errors.UsageError` naming the flag."""
  args = build_parser().parse_args(argv)
  args.eval_runs = selection.parse_run_ids(args.eval_runs, "--eval_runs")
  if args.eval_runs is None:
    raise errors.UsageError("--eval_runs: 'all' leaves no run to fit on; "
                            "give the runs that judge, e.g. 400-511")
  args.fit_runs = selection.parse_run_ids(args.fit_runs, "--fit_runs")
  args.ratios = selection.parse_ratios(args.ratios)
  sizes.parse_bytes(args.memory_budget, "--memory_budget")
  methods = [m.strip() for m in args.methods.split(",") if m.strip()]
  args.methods = [] if methods == ["none"] else methods
  unknown = [m for m in args.methods if m not in attributions.BUILTINS]
  if unknown and args.methods != [lds_lib.ALL]:
    raise errors.UsageError(f"--methods: unknown {unknown}; choose from "
                            f"{','.join(attributions.BUILTINS)}, all or "
                            "none")
  if not args.methods and not args.scores:
    raise errors.UsageError("nothing to judge: give --scores FILE or "
                            "--methods")
  if args.fit_runs is not None and not args.methods:
    raise errors.UsageError("--fit_runs is for the built-in --methods")
  if args.fit_runs is not None and set(args.fit_runs) & set(args.eval_runs):
    both = sorted(set(args.fit_runs) & set(args.eval_runs))
    raise errors.UsageError(f"--fit_runs and --eval_runs share run(s) "
                            f"{both[:5]}: the runs that judge must be new")
  if args.min_eval_runs < 2:
    raise errors.UsageError(f"--min_eval_runs must be >= 2, got "
                            f"{args.min_eval_runs}")
  for path in args.scores:
    if not os.path.isfile(path):
      raise errors.UsageError(f"--scores {path}: no such file")
  if args.out is None:
    args.out = cli.one_ratio_path(args.root, args.experiment, args.ratios,
                                  layout.LDS_FILENAME)
  elif args.out == "none":
    args.out = None
  if args.out is not None and os.path.isdir(args.out):
    raise errors.UsageError(f"--out {args.out} is a directory; give a file "
                            "name such as lds.npz")
  return args


def main(argv=None):
  args = parse_args(argv)
  if args.out is not None:
    files.check_writable(args.out)
  if attributions.TRACIN in args.methods or (
      args.methods == [lds_lib.ALL] and tracin.trajectory_runs(
          args.root, args.experiment, args.ratios)):
    cli.quiet_tensorflow()  # TracIn restores checkpoints.
  results, eval_runs = lds_lib.lds(
      args.root, args.experiment, args.eval_runs, args.scores, args.methods,
      fit_run_ids=args.fit_runs, ratios=args.ratios,
      min_eval_runs=args.min_eval_runs, memory_budget=args.memory_budget,
      progress=args.progress, model=args.model, dataset=args.dataset,
      data_dir=args.data_dir, say=print)
  print(lds_lib.table(results, eval_runs))
  if args.out is not None:
    lds_lib.save(args.out, results, eval_runs)
    print(f"wrote {args.out}")


if __name__ == "__main__":
  cli.run(main)
