r"""The attribution study: the LDS of every built-in method against the
number of fitting runs, and memorization from margins against 0/1, on an
MNIST MLP collection small enough for many runs.

  python benchmarks/attribution.py --root ./attribution_runs
  python benchmarks/attribution.py --quick        # a check that it runs

1. The collection (timed): `heldout train --dataset digits --train_size
   2000 --test_size 500 --ratios 0.5 --num_runs 800 --model mlp --recipe
   mnist-mlp` (the first 2 000 / 500 of the embedded offline digits; the
   engine and precision the workflow picks; every run's margins recorded by
   its trainer), as experiment digits-mlp under --root. Finished runs are
   kept: a second call on the same --root trains nothing.
2. Trajectories for TracIn: K runs of the same settings that keep every
   epoch's checkpoint (`--trajectory_runs K`, which the group engine
   trains), as experiment digits-mlp-trajectories (its runs draw the same
   subsets as runs 0..K-1, being the same seed's).
3. LDS (`heldout_tf.estimates.lds`) on evaluation runs 700-799 of the
   built-in methods fitted on runs 0..N-1 for N in --fit_counts: the
   papers' difference of means of 0/1 correctness (dom_correct) and of the
   margin (dom_margin), ridge and l1 datamodels (defaults: lambda chosen on
   the last 10% of the fitting runs, never on the evaluation runs), and l1
   with other honest settings (a finer lambda path; a larger selection
   split; the paper's per-example choice); TracIn on the last layer from
   the trajectories of the first k runs, k in --tracin_counts. Undefined
   correlations count as 0 and are counted. Printed: each method's LDS
   +/- SE, its ratios to the two differences of means measured here, and
   the aim (l1 >= 0.35, >= 5x dom_correct, >= 1.5x dom_margin, at every
   N >= 400).
4. Memorization: the differences of means of the training margins and of
   0/1 correctness from runs 0..R-1 (R in --mem_counts), their Spearman
   rank correlation over the training examples with a reference from the
   disjoint runs 400-799: each target's own reference, and the papers' 0/1
   one for the margin's; whether margins reach with R/2 runs what 0/1
   reaches with R.

--quick: 120 runs of the first 500 / 200 digits, 3 epochs, evaluation runs
100-119, N in 25, 50, 100 (a check that the script runs, not the study).
--out FILE.json keeps every number printed.
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

if __name__ == "__main__":
  from heldout_tf import cli  # pylint: disable=g-import-not-at-top
  cli.quiet_tensorflow()

# pylint: disable=g-import-not-at-top,g-bad-import-order
import numpy as np

from heldout_tf.core import sizes
from heldout_tf.estimates import attributions
from heldout_tf.estimates import datamodels
from heldout_tf.estimates import estimators
from heldout_tf.estimates import lds
from heldout_tf.estimates import loading
from heldout_tf.estimates import targets
from heldout_tf.estimates import tracin
from heldout_tf.training import workflow
# pylint: enable=g-import-not-at-top,g-bad-import-order

EXPERIMENT = "digits-mlp"
TRAJECTORIES = "digits-mlp-trajectories"
AIM = dict(l1=0.35, over_correct=5.0, over_margin=1.5, from_runs=400)
FULL = dict(train_size=2000, test_size=500, num_runs=800, epochs=0,
            eval_runs=(700, 800), fit_counts="100,200,400,700",
            tracin_counts="1,4,16", mem_counts="25,50,100,200,400",
            mem_reference=(400, 800))
QUICK = dict(train_size=500, test_size=200, num_runs=120, epochs=3,
             eval_runs=(100, 120), fit_counts="25,50,100",
             tracin_counts="1,2", mem_counts="12,25,50",
             mem_reference=(50, 100))
# l1 with other settings, each choosing lambda without the evaluation runs.
L1_VARIANTS = {
    "l1, 32 lambdas down to 0.3%": dict(num_lambdas=32,
                                         lambda_min_ratio=0.003),
    "l1, lambda chosen on the last 20%": dict(select_fraction=0.2),
    "l1, lambda per test example (paper's)": dict(selection="per_target"),
}


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--root", default="./attribution_runs",
                      help="Where the collections are made (kept).")
  parser.add_argument("--quick", action="store_true",
                      help="A small check that the script runs.")
  parser.add_argument("--fit_counts", default=None,
                      help="Fitting run counts N (runs 0..N-1).")
  parser.add_argument("--tracin_counts", default=None,
                      help="Trajectory runs k for TracIn.")
  parser.add_argument("--mem_counts", default=None,
                      help="Run counts R of the memorization estimates.")
  parser.add_argument("--memory_budget", default="4GB")
  parser.add_argument("--out", default=None, help="Also write a JSON here.")
  args = parser.parse_args(argv)
  setup = dict(QUICK if args.quick else FULL)
  for key in ("fit_counts", "tracin_counts", "mem_counts"):
    text = getattr(args, key) or setup[key]
    setup[key] = [int(x) for x in text.split(",") if x.strip()]
  args.setup = setup
  return args


def train(root: str, setup: dict, experiment: str, num_runs: int,
          trajectory_runs: int = 0) -> dict:
  """Makes (or finishes) one collection; its workflow report."""
  options = workflow.Options(
      dataset="digits", train_size=setup["train_size"],
      test_size=setup["test_size"], model="mlp", recipe="mnist-mlp",
      epochs=setup["epochs"], root=root, experiment=experiment,
      ratios=(0.5,), num_runs=(num_runs,), trajectory_runs=trajectory_runs,
      progress=False)
  start = time.perf_counter()
  (report,) = workflow.make(options, say=print)
  report["wall_seconds"] = time.perf_counter() - start
  return report


def score_one(eval_runs, source):
  """`(lds.Result, seconds)` of one source (fitted while scored)."""
  start = time.perf_counter()
  (result,) = lds.score(eval_runs, [source])
  return result, time.perf_counter() - start


def lds_study(root: str, setup: dict, budget) -> list:
  """Rows of (fitting runs, method, LDS, SE, undefined, seconds)."""
  first, stop = setup["eval_runs"]
  eval_runs = loading.load_runs(root, EXPERIMENT, run_ids=range(first, stop),
                                target="margin", target_splits=("test",),
                                progress=False)
  print(f"\n== LDS on {lds.run_summary(eval_runs)}, {eval_runs.n_test} test "
        "examples (undefined correlations counted as 0) ==")
  rows = []

  def show(count, result, seconds, kind):
    row = dict(fit_runs=count, method=result.name, kind=kind,
               lds=result.mean, se=result.se,
               undefined=result.num_undefined, seconds=seconds)
    rows.append(row)
    print(f"  {count:>4}  {result.name:<44} {result.mean:6.3f} +/- "
          f"{result.se:5.3f}  undefined {result.num_undefined:>3}/"
          f"{eval_runs.n_test}  ({seconds:5.1f} s)", flush=True)

  for count in setup["fit_counts"]:
    fit = loading.load_runs(root, EXPERIMENT, run_ids=range(count),
                            target="margin", target_splits=("test",),
                            progress=False)
    for method, source in zip(attributions.FROM_RUNS, attributions.builtins(
        fit, attributions.FROM_RUNS, memory_budget=budget)):
      show(count, *score_one(eval_runs, source), method)
    for name, changes in L1_VARIANTS.items():
      source = attributions.Fitted(
          name, fit, datamodels.Settings.for_method("l1", **changes), budget)
      show(count, *score_one(eval_runs, source), "l1 variant")
  for k in setup["tracin_counts"]:
    source = tracin.Source(tracin.from_collection(root, TRAJECTORIES,
                                                  run_ids=range(k)))
    show(k, *score_one(eval_runs, source), "tracin")
  return rows


def aim_check(rows: list, setup: dict) -> list:
  """Per fitting-run count: l1's ratios to the differences of means."""
  print("\n== l1 (defaults) against the differences of means measured above"
        " ==")
  out = []
  for count in setup["fit_counts"]:
    by_kind = {r["kind"]: r for r in rows if r["fit_runs"] == count and
               r["kind"] in attributions.FROM_RUNS}
    l1, correct, margin = (by_kind[k]["lds"] for k in ("l1", "dom_correct",
                                                       "dom_margin"))
    over_correct = l1 / correct if correct > 0 else float("inf")
    over_margin = l1 / margin if margin > 0 else float("inf")
    met = (l1 >= AIM["l1"] and over_correct >= AIM["over_correct"] and
           over_margin >= AIM["over_margin"])
    judged = count >= AIM["from_runs"] or count == max(setup["fit_counts"])
    out.append(dict(fit_runs=count, l1=l1, over_correct=over_correct,
                    over_margin=over_margin, met=met))
    print(f"  {count:>4} runs: l1 {l1:.3f} = {over_correct:5.1f}x dom_correct"
          f" ({correct:.3f}), {over_margin:4.2f}x dom_margin ({margin:.3f})"
          + (f"  aim {'met' if met else 'MISSED'}" if judged else ""))
  return out


def spearman(a, b) -> float:
  """Spearman's rho of two vectors over the entries defined in both."""
  keep = ~(np.isnan(a) | np.isnan(b))
  rho, _ = lds.spearman_columns(a[keep, None], b[keep, None])
  return float(rho[0])


def memorization_study(root: str, setup: dict) -> list:
  """Rows of (runs, rho 0/1, rho margin, rho margin vs the 0/1 reference)."""
  first, stop = setup["mem_reference"]
  counts = setup["mem_counts"]
  runs = loading.load_runs(root, EXPERIMENT, run_ids=range(stop),
                           target="margin", target_splits=("train",),
                           progress=False)
  reference = slice(first, stop)
  ref_correct = estimators.memorization(runs.mask[reference],
                                        runs.correct_train[reference])
  ref_margin = targets.memorization(runs.mask[reference],
                                    runs.values_train[reference])[0]
  print(f"\n== memorization of {runs.n_train} training examples: Spearman "
        f"with a reference from runs {first}-{stop - 1} ==")
  print("  runs  0/1 vs its reference  margin vs its reference  margin vs "
        "the 0/1 reference")
  rows = []
  for count in counts:
    part = slice(0, count)
    correct = estimators.memorization(runs.mask[part],
                                      runs.correct_train[part])
    margin = targets.memorization(runs.mask[part],
                                  runs.values_train[part])[0]
    row = dict(runs=count, correct=spearman(correct, ref_correct),
               margin=spearman(margin, ref_margin),
               margin_vs_correct=spearman(margin, ref_correct))
    rows.append(row)
    print(f"  {count:>4}  {row['correct']:21.3f}  {row['margin']:23.3f}  "
          f"{row['margin_vs_correct']:27.3f}")
  by_count = {r["runs"]: r for r in rows}
  for count in counts:
    if count // 2 in by_count:
      half = by_count[count // 2]["margin"]
      full = by_count[count]["correct"]
      print(f"  margins with {count // 2} runs: {half:.3f} "
            f"{'>=' if half >= full else '<'} 0/1 with {count} runs: "
            f"{full:.3f}")
  return rows


def main(argv=None):
  args = parse_args(argv)
  setup = args.setup
  root = os.path.abspath(args.root)
  budget = sizes.parse_bytes(args.memory_budget, "--memory_budget")
  print(f"attribution study{' (--quick)' if args.quick else ''}: {setup}; "
        f"load average {os.getloadavg()}")
  made = train(root, setup, EXPERIMENT, setup["num_runs"])
  trajectories = train(root, setup, TRAJECTORIES, max(setup["tracin_counts"]),
                       trajectory_runs=max(setup["tracin_counts"]))
  start = time.perf_counter()
  rows = lds_study(root, setup, budget)
  aims = aim_check(rows, setup)
  memorization = memorization_study(root, setup)
  print(f"\nanalysis {time.perf_counter() - start:.0f} s; load average "
        f"{os.getloadavg()}")
  if args.out:
    keep = ("trained", "skipped", "seconds", "wall_seconds", "precision",
            "trainer", "group_size", "test_accuracy")
    with open(args.out, "w") as f:
      json.dump(dict(setup=setup, collection={k: made.get(k) for k in keep},
                     trajectories={k: trajectories.get(k) for k in keep},
                     lds=rows, aims=aims, memorization=memorization), f,
                indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
