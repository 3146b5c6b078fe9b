r"""Computes memorization, influence and C-scores from a collection of runs.

  heldout estimate --root DIR --experiment cifar10-inception \
      --out estimates.npz --ratios 0.7 --what mem,pairs,cscores
  heldout estimate --root DIR --experiment cifar10-inception \
      --out estimates.npz --compare cifar10-cscores-orig-order.npz
  heldout estimate --root DIR --experiment mnist-mlp --target margin \
      --runs 0-399 --out est.npz --plan_se 0.02

(`heldout estimate` is `python -m heldout_tf.cli.estimate`.) Reads every
<root>/<experiment>/<ratio>/<run>/aux_arrays.npz, writes the estimates (see
`heldout_tf.estimates.compute` for the keys) atomically to --out and prints
a short summary with the estimates' standard errors (and a warning when the
pairs thresholds are within two of them of zero). With --compare also prints
how the estimates agree with a published score file
(`heldout_tf.estimates.comparison.compare`).

--target margin (or probability) estimates the same differences of means on
each run's final margin (correct-label probability) from its margins.npz
(`heldout_tf.estimates.targets`; keys end in _margin), with Welch's standard
errors. --runs keeps only some runs (e.g. the runs an attribution is fitted
on; `heldout lds` then judges it on the others). --plan_se SE prints how
many runs each estimate needs for standard error SE, from the collection's
own variance (`heldout_tf.estimates.planning`).
"""

import os

from heldout_tf import cli
from heldout_tf.core import errors
from heldout_tf.core import files
from heldout_tf import estimates  # No TensorFlow.
from heldout_tf.collection import selection
from heldout_tf.core import sizes

PROG = "heldout estimate"


def build_parser() -> cli.Parser:
  """The command line's flags (imports no TensorFlow)."""
  parser = cli.Parser(PROG, __doc__)
  cli.add_root(parser, required=True)
  cli.add_experiment(parser, required=True, default=None,
                     help="The <experiment> directory, e.g. "
                     "cifar10-inception.")
  parser.add_argument("--out", required=True, metavar="FILE.npz",
                      help="The estimates file to write.")
  parser.add_argument("--ratios", default="all", metavar="LIST",
                      help="Subset ratios to use, e.g. 0.3,0.7.")
  parser.add_argument("--runs", default="all", metavar="LIST",
                      help="Run ids to use (at every ratio), e.g. 0-399; "
                      "'all': every run on disk.")
  parser.add_argument(
      "--target", default="correct", choices=estimates.TARGETS,
      help="What each run contributes per example: its 0/1 correctness "
      "(aux_arrays.npz, the papers' estimates), or its final margin or "
      "correct-label probability (margins.npz).")
  parser.add_argument(
      "--what", default="auto", metavar="LIST",
      help="Estimates to compute, from mem,infl,pairs,cscores; 'auto': "
      f"{','.join(estimates.DEFAULT_WHAT)} (--target correct), "
      f"{','.join(estimates.DEFAULT_WHAT_OF_VALUES)} (other targets: "
      "C-scores are held-out accuracy). 'infl' is the dense [n_test, "
      "n_train] float32 matrix (opt-in: 2.4 GB for MNIST).")
  parser.add_argument("--infl_threshold", type=float, default=0.15,
                      help="Pairs: minimum influence.")
  parser.add_argument("--mem_threshold", type=float, default=0.25,
                      help="Pairs: minimum memorization of the training "
                      "example.")
  parser.add_argument(
      "--memory_budget", default=estimates.DEFAULT_MEMORY_BUDGET,
      metavar="SIZE",
      help="Working memory for pairs and the dense influence, e.g. 4GB, "
      "512MB.")
  parser.add_argument(
      "--mmap_dir", default=None, metavar="DIR",
      help="Keep the loaded [runs, examples] matrices in memory-mapped .npy "
      "files in this directory instead of memory (ImageNet scale: 5.2 GB "
      "as bool).")
  parser.add_argument(
      "--compare", default=None, metavar="FILE",
      help="A published score file (C-scores, memorization/influence or "
      "high-influence pairs) to compare the estimates with.")
  parser.add_argument("--data_dir", default=None, metavar="DIR",
                      help="--compare: tfds data directory (for the tfds "
                      "<-> original example order).")
  parser.add_argument("--compare_plot", default=None, metavar="FILE.png",
                      help="--compare: scatter plot PNG (default: --out "
                      "without .npz + '_compare.png').")
  parser.add_argument(
      "--plan_se", type=float, default=None, metavar="SE",
      help="Also print how many runs each estimate needs for this standard "
      "error (from the collection's own variance).")
  cli.add_engine(parser, "the counting (over shards of runs) and the pairs "
                 "(over blocks of test examples; --target correct only)")
  cli.add_progress(parser)
  return parser


def parse_args(argv=None):
  """The flags, checked; `errors.UsageError` naming the flag for a bad
  value."""
  args = build_parser().parse_args(argv)
  _check(args)
  return args


def _check(args):
  """Validates flag values before any work; UsageError naming the flag."""
  try:
    args.what = estimates.parse_what(
        "auto" if args.what.strip() == "auto" else
        [w.strip() for w in args.what.split(",") if w.strip()], args.target)
  except estimates.EstimateError as e:
    raise errors.UsageError(f"--what: {e}") from None
  sizes.parse_bytes(args.memory_budget, "--memory_budget")
  args.ratios = selection.parse_ratios(args.ratios)
  args.runs = selection.parse_run_ids(args.runs)
  if args.plan_se is not None and not args.plan_se > 0:
    raise errors.UsageError(f"--plan_se must be > 0, got {args.plan_se}")
  for name in ("infl_threshold", "mem_threshold"):
    value = getattr(args, name)
    if value != value:  # NaN selects nothing, silently.
      raise errors.UsageError(f"--{name} must be a number, got nan")
  cli.check_engine(args)
  if args.engine == "ray" and args.mmap_dir is not None:
    raise errors.UsageError("--mmap_dir does not apply with --engine ray "
                            "(each task holds only its shard of runs)")
  if args.engine == "ray" and (args.target != "correct" or
                               args.runs is not None):
    raise errors.UsageError("--engine ray estimates --target correct on "
                            "every run: leave out --target and --runs, or "
                            "use --engine local")
  if args.compare is not None and args.target != "correct":
    raise errors.UsageError("--compare needs --target correct (the "
                            "published scores are of correctness)")
  if args.compare_plot is None and args.compare is not None:
    base = args.out[:-4] if args.out.endswith(".npz") else args.out
    args.compare_plot = base + "_compare.png"
  if args.compare_plot is not None and _same_file(args.compare_plot,
                                                   args.out):
    raise errors.UsageError(f"--compare_plot {args.compare_plot} is the "
                            "--out file; give the plot another name")


def _same_file(a: str, b: str) -> bool:
  return os.path.realpath(a) == os.path.realpath(b)


def _published():
  from heldout_tf.estimates import published  # pylint: disable=g-import-not-at-top
  return published


def _comparison():
  from heldout_tf.estimates import comparison  # pylint: disable=g-import-not-at-top
  return comparison


def main(argv=None):
  args = parse_args(argv)
  files.check_writable(args.out)
  if args.compare is not None:  # Bad inputs and outputs fail before the work.
    _published().check_compatible(args.compare, args.experiment)
    _published().load(args.compare)
    files.check_writable(args.compare_plot)
  if args.engine == "ray":
    # pylint: disable-next=g-import-not-at-top
    from heldout_tf.estimates import on_ray
    result = on_ray.estimate_on_ray(
        args.root, args.experiment, args.ratios, what=args.what,
        infl_threshold=args.infl_threshold, mem_threshold=args.mem_threshold,
        memory_budget=args.memory_budget, address=args.ray_address,
        progress=args.progress)
  else:
    runs = estimates.load_runs(args.root, args.experiment, args.ratios,
                               mmap_dir=args.mmap_dir, run_ids=args.runs,
                               target=args.target, progress=args.progress)
    result = estimates.compute(
        runs, args.what, infl_threshold=args.infl_threshold,
        mem_threshold=args.mem_threshold, memory_budget=args.memory_budget,
        progress=args.progress)
  estimates.save_estimates(args.out, result)
  print(estimates.summary(result))
  if args.plan_se is not None:
    print("\n".join(estimates.planning.summary_lines(result, args.plan_se)))
  print(f"wrote {args.out}")
  if args.compare is not None:
    print(_comparison().compare(result, args.compare,
                                experiment=args.experiment,
                                data_dir=args.data_dir,
                                plot_path=args.compare_plot))


if __name__ == "__main__":
  cli.run(main)
