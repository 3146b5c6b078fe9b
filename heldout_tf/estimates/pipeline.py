"""`compute`: every requested estimate of a collection, as a dict of arrays.

`compute(runs)` is `compute_from_counts(counting.counts_for(runs), runs=runs)`
for runs of the target 'correct' (the papers' estimates); for a target
'margin' or 'probability' (`runs.target`) the same estimates of that value
come from `targets`, under keys that name it (`targets.key`).
A sharded (e.g. Ray) estimate maps `loading.load_runs_from` +
`counting.counts_for` over shards of runs, sums the `CountsByRatio`, and
calls `compute_from_counts` on the sum: byte-identical to `compute`. Pairs
need the matrices themselves: pass `runs`, or pairs found elsewhere (e.g.
`estimators.pairs_in_block` mapped over blocks, joined by `merge_pairs`).
"""

import numpy as np

from heldout_tf.estimates import counting
from heldout_tf.estimates import estimators
from heldout_tf.estimates import loading
from heldout_tf.estimates import targets
from heldout_tf.estimates.counting import EstimateError

WHAT = ("mem", "infl", "pairs", "cscores")
DEFAULT_WHAT = ("mem", "pairs", "cscores")
# C-scores are held-out accuracy: of correctness only.
DEFAULT_WHAT_OF_VALUES = ("mem", "pairs")


def parse_what(what, target="correct"):
  """('mem', 'pairs') from 'mem,pairs' or an iterable; validates names.

  'auto' (or None) is `DEFAULT_WHAT` for the target 'correct' and
  `DEFAULT_WHAT_OF_VALUES` for the others, which have no C-scores.
  """
  loading.check_target(target)
  if what is None or what == "auto":
    return DEFAULT_WHAT if target == "correct" else DEFAULT_WHAT_OF_VALUES
  if isinstance(what, str):
    what = what.split(",")
  what = tuple(w.strip() for w in what if w.strip())
  unknown = [w for w in what if w not in WHAT]
  if unknown or not what:
    raise EstimateError(f"unknown estimate(s) {unknown or what}: choose from "
                        f"{','.join(WHAT)}")
  if "cscores" in what and target != "correct":
    raise EstimateError("cscores are held-out accuracy: they need the "
                        f"target 'correct', not {target!r}")
  return what


def _check_labels(labels, n_train):
  if labels is None:
    return None
  labels = np.asarray(labels)
  if labels.shape != (n_train,):
    raise EstimateError(f"labels must have shape ({n_train},), has "
                        f"{labels.shape}")
  return labels


def compute(runs, what="auto", infl_threshold=0.15,
            mem_threshold=0.25, memory_budget=estimators.DEFAULT_MEMORY_BUDGET,
            labels=None, progress=True) -> dict:
  """Computes the requested estimates of a `Runs`; returns a dict of arrays.

  Keys: always `experiment`, `num_runs`, `n_train`, `n_test`, `ratios`,
  `runs_per_ratio`, `run_ids`, `run_ratios` (each run used, in order),
  `target`, `n_in`, `n_out`, `num_never_held_out`,
  `num_never_trained`; 'mem' -> `memorization`, `memorization_se` (its
  standard error, `Counts.memorization_se`), `num_nan_memorization`;
  'infl' -> `influence` [n_test, n_train] float32; 'pairs' -> `tr_idx`,
  `tt_idx`, `infl`, `mem`, `infl_threshold`, `mem_threshold`; 'cscores' ->
  `cscores` (averaged over ratios), `cscores_se`, `cscores_by_ratio`
  [ratios, n_train], `num_nan_cscores`; `labels` if given (checked first:
  shape [n_train]).

  For `runs.target` 'margin' or 'probability' the estimates are those of
  `targets` and their keys end in `_<target>` (`memorization_margin`,
  `memorization_se_margin` (Welch), `num_nan_memorization_margin`,
  `influence_margin`, `tr_idx_margin`, `tt_idx_margin`, `infl_margin`,
  `infl_se_margin`, `mem_margin`, `infl_threshold_margin`,
  `mem_threshold_margin`), plus `test_variance_<target>` [n_test], which
  the run planner (`planning`) uses; no 'cscores'.
  """
  target = runs.target
  what = parse_what(what, target)
  labels = _check_labels(labels, runs.n_train)
  if target == "correct":
    return compute_from_counts(
        counting.counts_for(runs), what, n_test=runs.n_test,
        experiment=runs.experiment, runs=runs,
        infl_threshold=infl_threshold, mem_threshold=mem_threshold,
        memory_budget=memory_budget, labels=labels, progress=progress,
        run_ids=runs.run_ids, run_ratios=runs.ratios)
  counts = counting.counts_for(runs)
  result = _common(counts, runs.n_test, runs.experiment, runs.run_ids,
                   runs.ratios, target)
  estimators.log_undefined(f"{target} memorization and influence",
                           counts.total)
  values_train = runs.target_values("train")
  values_test = runs.target_values("test")
  key = lambda name: targets.key(name, target)
  result[key("test_variance")] = targets.test_variance(values_test)
  if "mem" in what:
    mem, se = targets.memorization(runs.mask, values_train)
    result[key("memorization")] = mem
    result[key("memorization_se")] = se
    result[key("num_nan_memorization")] = np.array(int(np.isnan(mem).sum()))
  if "infl" in what:
    result[key("influence")] = targets.influence(runs.mask, values_test,
                                                 memory_budget)
  if "pairs" in what:
    pairs = targets.high_influence_pairs(
        runs.mask, values_train, values_test, infl_threshold, mem_threshold,
        memory_budget, progress=progress)
    result.update({key(k): v for k, v in pairs.items()})
    result[key("infl_threshold")] = np.array(float(infl_threshold))
    result[key("mem_threshold")] = np.array(float(mem_threshold))
  if labels is not None:
    result["labels"] = labels
  return result


def _common(counts: counting.CountsByRatio, n_test, experiment, run_ids,
            run_ratios, target="correct") -> dict:
  """The keys every result has (see `compute`)."""
  c = counts.total
  num_runs = int(np.sum(counts.runs_per_ratio))
  run_ids = (np.full(num_runs, -1, np.int64) if run_ids is None
             else np.asarray(run_ids, np.int64))
  run_ratios = (np.full(num_runs, np.nan) if run_ratios is None
                else np.asarray(run_ratios, np.float64))
  return {
      "experiment": np.array(experiment),
      "target": np.array(target),
      "num_runs": np.array(num_runs),
      "n_train": np.array(len(c.n_in)),
      "n_test": np.array(int(n_test)),
      "ratios": np.array(counts.ratios, np.float64),
      "runs_per_ratio": counts.runs_per_ratio,
      "run_ids": run_ids,
      "run_ratios": run_ratios,
      "n_in": c.n_in,
      "n_out": c.n_out,
      "num_never_held_out": np.array(c.num_never_held_out),
      "num_never_trained": np.array(c.num_never_trained),
  }


def compute_from_counts(counts: counting.CountsByRatio, what=DEFAULT_WHAT, *,
                        n_test, experiment="", runs=None, pairs=None,
                        infl_threshold=0.15, mem_threshold=0.25,
                        memory_budget=estimators.DEFAULT_MEMORY_BUDGET,
                        labels=None, progress=True, run_ids=None,
                        run_ratios=None) -> dict:
  """`compute`'s result from counts (the reduce step of a sharded estimate),
  for the target 'correct'.

  Args:
    counts: the summed `counting.counts_for` of every run (shard).
    what: estimates, as for `compute`.
    n_test: number of test examples.
    experiment: name stored in the result.
    runs: the `Runs` themselves; needed for 'infl', and for 'pairs' unless
      `pairs` is given.
    pairs: 'pairs' found elsewhere (`tr_idx`, `tt_idx`, `infl`; `mem` is
      filled in from the counts), e.g. blocks joined by `merge_pairs`.
    infl_threshold, mem_threshold, memory_budget, labels, progress: as for
      `compute`.
    run_ids, run_ratios: each counted run's id and subset ratio, in order
      (stored: scores fitted on these runs must not be judged on them;
      unknown: -1 and NaN).
  """
  what = parse_what(what)
  c = counts.total
  labels = _check_labels(labels, len(c.n_in))
  needs_runs = [w for w in what
                if w == "infl" or (w == "pairs" and pairs is None)]
  if needs_runs and runs is None:
    raise EstimateError(f"{','.join(needs_runs)} need the runs' matrices: "
                        "pass runs=")
  result = _common(counts, n_test, experiment, run_ids, run_ratios)
  mem = c.memorization
  estimators.log_undefined("memorization and influence", c)
  if "mem" in what:
    result["memorization"] = mem
    result["memorization_se"] = c.memorization_se
    result["num_nan_memorization"] = np.array(int(np.isnan(mem).sum()))
  if "infl" in what:
    result["influence"] = estimators.influence(runs.mask, runs.correct_test,
                                               memory_budget)
  if "pairs" in what:
    if pairs is None:
      pairs = estimators.high_influence_pairs(
          runs.mask, runs.correct_train, runs.correct_test, infl_threshold,
          mem_threshold, memory_budget, progress=progress, known_counts=c)
    else:
      pairs = estimators.merge_pairs([pairs], mem)
    result.update(pairs)
    result["infl_threshold"] = np.array(float(infl_threshold))
    result["mem_threshold"] = np.array(float(mem_threshold))
  if "cscores" in what:
    by_ratio = estimators.heldout_accuracy(counts.per_ratio)
    scores = estimators.average_over_ratios(by_ratio)
    result["cscores"] = scores
    result["cscores_se"] = estimators.averaged_se(np.stack(
        [r.heldout_accuracy_variance for r in counts.per_ratio]))
    result["cscores_by_ratio"] = by_ratio
    result["num_nan_cscores"] = np.array(int(np.isnan(scores).sum()))
  if labels is not None:
    result["labels"] = labels
  return result
