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
4. A diagnosis at those N (not a method: it looks at the evaluation
   runs): the LDS of l1 at every relative lambda of the default path,
   beside the selection error the default chooses by; whether any one
   lambda reaches the aim.
5. Memorization: the differences of means of the training examples' 0/1
   correctness, margin and correct-label probability from runs 0..R-1 (R
   in --mem_counts), their Spearman rank correlation over the training
   examples with a reference from the disjoint runs 400-799: each target's
   own reference (over every example, and over the examples the 0/1
   reference memorizes at all), and the 0/1 reference for the margin's and
   the probability's; whether a target reaches with R/2 runs what 0/1
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
from heldout_tf.estimates import regression
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


def lambda_ceiling(root: str, setup: dict, count: int) -> list:
  """A diagnosis, not a method: the LDS on the evaluation runs of l1 at
  every relative lambda of the default path (each refitted on runs
  0..count-1, as the default fit is), beside the selection errors the
  default chooses by. Says whether any one lambda reaches the aim."""
  settings = datamodels.Settings()
  first, stop = setup["eval_runs"]
  eval_runs = loading.load_runs(root, EXPERIMENT, run_ids=range(first, stop),
                                target="margin", target_splits=("test",),
                                progress=False)
  fit = loading.load_runs(root, EXPERIMENT, run_ids=range(count),
                          target="margin", target_splits=("test",),
                          progress=False)
  y = np.asarray(fit.values_test, np.float32)
  the_plan = datamodels.plan(fit.mask, y, settings)
  fit_rows, _ = the_plan.rows
  lam_max = regression.lambda_max(the_plan.problem.fit, y[fit_rows])
  ratios = regression.lasso_ratios(settings.num_lambdas,
                                   settings.lambda_min_ratio)
  print(f"\n== diagnosis at {count} runs: l1 at each relative lambda of the "
        "default path, judged on the evaluation runs (the default chooses "
        "by the selection error) ==")
  rows = []
  for ratio, error in zip(ratios, the_plan.choice.errors):
    weights = regression.lasso(the_plan.problem.both, y, ratio * lam_max,
                               settings.tolerance, settings.max_iterations)
    rho, _ = lds.spearman_columns(weights.predict(eval_runs.mask),
                                  eval_runs.values_test)
    chosen = ratio == the_plan.choice.ratio
    rows.append(dict(fit_runs=count, ratio=float(ratio),
                     select_error=float(error), lds=float(rho.mean()),
                     chosen=bool(chosen)))
    print(f"  lambda {ratio:6.4f} x lambda_max: selection error "
          f"{error:6.4f}, LDS {rho.mean():.3f}" + ("  (chosen)" if chosen
                                                    else ""), flush=True)
  best = max(rows, key=lambda r: r["lds"])
  print(f"  best on the evaluation runs: {best['lds']:.3f} at "
        f"{best['ratio']:.4f}; aim {AIM['l1']}: "
        f"{'within' if best['lds'] >= AIM['l1'] else 'out of'} reach of the "
        "lambda choice")
  return rows


def spearman(a, b, keep=None) -> float:
  """Spearman's rho of two vectors over the entries defined in both (and
  in `keep`)."""
  keep = ~(np.isnan(a) | np.isnan(b)) & (True if keep is None else keep)
  rho, _ = lds.spearman_columns(a[keep, None], b[keep, None])
  return float(rho[0])


MEM_TARGETS = ("correct", "margin", "probability")


def memorization_study(root: str, setup: dict) -> list:
  """Per run count R: each target's memorization from runs 0..R-1 against
  its own reference (over every training example, and over those the 0/1
  reference memorizes at all), and the margin's and probability's against
  the 0/1 reference."""
  first, stop = setup["mem_reference"]
  counts = setup["mem_counts"]
  loaded = {target: loading.load_runs(
      root, EXPERIMENT, run_ids=range(stop), target=target,
      target_splits=("train",), progress=False)
            for target in ("margin", "probability")}
  runs = loaded["margin"]

  def estimate(target, part):
    if target == "correct":
      return estimators.memorization(runs.mask[part],
                                     runs.correct_train[part])
    return targets.memorization(runs.mask[part],
                                loaded[target].values_train[part])[0]

  reference = {t: estimate(t, slice(first, stop)) for t in MEM_TARGETS}
  memorized = reference["correct"] > 0
  print(f"\n== memorization of {runs.n_train} training examples: Spearman "
        f"with a reference from runs {first}-{stop - 1} "
        f"({int(np.sum(~memorized))} of them 0/1 memorization <= 0 there, "
        f"{int(np.sum(reference['correct'] == 0))} exactly 0) ==")
  print("        every example, own reference | 0/1 reference | examples "
        f"with 0/1 reference > 0 ({int(memorized.sum())}), own reference")
  print("  runs     0/1  margin  probability | margin  probability |    "
        "0/1  margin  probability")
  rows = []
  for count in counts:
    found = {t: estimate(t, slice(0, count)) for t in MEM_TARGETS}
    row = {"runs": count}
    for t in MEM_TARGETS:
      row[t] = spearman(found[t], reference[t])
      row[f"{t}_memorized"] = spearman(found[t], reference[t], memorized)
    for t in MEM_TARGETS[1:]:
      row[f"{t}_vs_correct"] = spearman(found[t], reference["correct"])
    rows.append(row)
    print(f"  {count:>4}  {row['correct']:6.3f}  {row['margin']:6.3f}  "
          f"{row['probability']:11.3f} | {row['margin_vs_correct']:6.3f}  "
          f"{row['probability_vs_correct']:11.3f} | "
          f"{row['correct_memorized']:6.3f}  {row['margin_memorized']:6.3f}"
          f"  {row['probability_memorized']:11.3f}")
  by_count = {r["runs"]: r for r in rows}
  for count in counts:
    if count // 2 not in by_count:
      continue
    full = by_count[count]
    half = by_count[count // 2]
    for t in MEM_TARGETS[1:]:
      for suffix, where in (("", "every example"),
                            ("_memorized", "memorized examples")):
        a, b = half[t + suffix], full["correct" + suffix]
        print(f"  {where}: {t} with {count // 2} runs {a:.3f} "
              f"{'>=' if a >= b else '<'} 0/1 with {count} runs {b:.3f}")
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
  ceiling = [row for count in setup["fit_counts"]
             if count >= AIM["from_runs"] or count == max(setup["fit_counts"])
             for row in lambda_ceiling(root, setup, count)]
  memorization = memorization_study(root, setup)
  print(f"\nanalysis {time.perf_counter() - start:.0f} s; load average "
        f"{os.getloadavg()}")
  if args.out:
    keep = ("trained", "skipped", "seconds", "wall_seconds", "precision",
            "trainer", "group_size", "test_accuracy")
    with open(args.out, "w") as f:
      json.dump(dict(setup=setup, collection={k: made.get(k) for k in keep},
                     trajectories={k: trajectories.get(k) for k in keep},
                     lds=rows, aims=aims, lambda_ceiling=ceiling,
                     memorization=memorization), f,
                indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
