r"""Fits linear datamodels of a collection: per test example, a linear model
of its margin on the runs' training masks (Ilyas et al. 2022).

  heldout datamodels --root DIR --experiment mnist-mlp --fit_runs 0-399 \
      --out dm.npz
  heldout datamodels --root DIR --experiment mnist-mlp --fit_runs 0-1599 \
      --method ridge --out dm-ridge.npz --engine ray

(`heldout datamodels` is `python -m heldout_tf.cli.datamodels`.) Reads each
fit run's aux_arrays.npz and margins.npz (written by the trainer or by
`heldout evaluate --split both --record margins`). The last
--select_fraction of the fit runs choose the regularisation (--selection),
the others are fitted; the weights are then refitted on all of them
(--norefit: not). Writes the top --top_k positive and negative
weights per test example, the same as pairs in the published format
(tr_idx, tt_idx, infl), the runs used and the settings
(`heldout_tf.estimates.datamodels`) to --out, atomically. Judge the file
with `heldout lds` on runs outside --fit_runs.
"""

import os

from heldout_tf import cli
from heldout_tf.core import errors
from heldout_tf.core import files
from heldout_tf.core import sizes
from heldout_tf.collection import layout
from heldout_tf.collection import selection
from heldout_tf.estimates import datamodels  # No TensorFlow.

PROG = "heldout datamodels"
METHODS = ("l1", "ridge")


def build_parser() -> cli.Parser:
  """The command line's flags (imports no TensorFlow)."""
  parser = cli.Parser(PROG, __doc__)
  cli.add_root(parser, required=True)
  cli.add_experiment(parser, required=True, default=None,
                     help="The <experiment> directory, e.g. mnist-mlp.")
  parser.add_argument("--fit_runs", required=True, metavar="LIST",
                      help="Run ids to fit on (at every ratio), e.g. 0-399; "
                      "'all': every run (then no run is left to judge the "
                      "datamodels).")
  parser.add_argument("--out", default=None, metavar="FILE.npz",
                      help="The datamodels file to write (unset: <root>/"
                      "<experiment>/<ratio>/attribution/datamodels.npz, "
                      "where heldout report finds it, when the runs are "
                      "at one ratio).")
  parser.add_argument("--ratios", default="all", metavar="LIST",
                      help="Subset ratios to use, e.g. 0.5.")
  parser.add_argument("--method", default="l1", choices=METHODS,
                      help="l1: the paper's sparse regression, lambda "
                      "along a path; ridge: closed form through the dual.")
  parser.add_argument("--top_k", type=int, default=100,
                      help="Weights kept per test example and sign.")
  parser.add_argument("--select_fraction", type=float, default=0.1,
                      help="Share of the fit runs (the last ones) that "
                      "choose the regularisation.")
  parser.add_argument("--selection", default="global",
                      choices=("global", "per_target"),
                      help="global: one regularisation relative to each "
                      "test example's own scale, chosen on up to "
                      "--selection_targets test examples (ours); "
                      "per_target: each test example its own (the "
                      "paper's).")
  parser.add_argument("--selection_targets", type=int, default=1000,
                      help="global: test examples the choice is made on.")
  cli.add_bool(parser, "refit", True, "Refit on all fit runs at the chosen "
               "regularisation (the paper's); --norefit: keep the fit "
               "without the selection runs.")
  parser.add_argument("--num_lambdas", type=int, default=None,
                      help="Values on the regularisation path (default: "
                      "10 for l1, 13 for ridge).")
  parser.add_argument("--lambda_min_ratio", type=float, default=None,
                      help="l1: the path's end relative to each test "
                      "example's lambda_max (default 0.01); ridge: the "
                      "grid's start relative to the data's scale (default "
                      "0.001).")
  parser.add_argument("--memory_budget", default="4GB", metavar="SIZE",
                      help="Working memory per fit (sets how many test "
                      "examples are fitted at once).")
  parser.add_argument("--mmap_dir", default=None, metavar="DIR",
                      help="Keep the loaded masks and margins in "
                      "memory-mapped files here.")
  cli.add_engine(parser, "the fits (one task per block of test examples)")
  cli.add_progress(parser)
  return parser


def parse_args(argv=None):
  """The flags, checked; `errors.UsageError` naming the flag."""
  args = build_parser().parse_args(argv)
  args.fit_runs = selection.parse_run_ids(args.fit_runs, "--fit_runs")
  args.ratios = selection.parse_ratios(args.ratios)
  sizes.parse_bytes(args.memory_budget, "--memory_budget")
  if args.out is None:
    args.out = cli.one_ratio_path(args.root, args.experiment, args.ratios,
                                  layout.DATAMODELS_FILENAME)
  if args.out is not None and os.path.isdir(args.out):
    raise errors.UsageError(f"--out {args.out} is a directory; give a file "
                            "name such as dm.npz")
  cli.check_engine(args)
  if args.engine == "ray" and args.mmap_dir is not None:
    raise errors.UsageError("--mmap_dir does not apply with --engine ray")
  changes = {k: getattr(args, k) for k in ("num_lambdas", "lambda_min_ratio")
             if getattr(args, k) is not None}
  try:
    args.settings = datamodels.Settings.for_method(
        args.method, top_k=args.top_k, select_fraction=args.select_fraction,
        selection=args.selection, selection_targets=args.selection_targets,
        refit=args.refit, **changes)
  except datamodels.EstimateError as e:  # Names the setting first.
    name = str(e).split(" ", 1)[0]
    raise errors.UsageError(f"--{name}: {e}") from None
  return args


def main(argv=None):
  args = parse_args(argv)
  if args.out is not None:  # None: no runs, which the fit says.
    files.check_writable(args.out)
  if args.engine == "ray":
    from heldout_tf.estimates import on_ray  # pylint: disable=g-import-not-at-top
    result = on_ray.datamodels_on_ray(
        args.root, args.experiment, args.fit_runs, args.ratios,
        settings=args.settings, memory_budget=args.memory_budget,
        address=args.ray_address, progress=args.progress)
  else:
    result = datamodels.fit_collection(
        args.root, args.experiment, args.fit_runs, args.ratios,
        settings=args.settings, memory_budget=args.memory_budget,
        progress=args.progress, mmap_dir=args.mmap_dir)
  datamodels.save(args.out, result)
  print(datamodels.summary(result))
  print(f"wrote {args.out}")


if __name__ == "__main__":
  cli.run(main)
