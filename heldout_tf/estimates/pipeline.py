"""`compute`: every requested estimate of a collection, as a dict of arrays.

`compute(runs)` is `compute_from_counts(counting.counts_for(runs), runs=runs)`.
A sharded (e.g. Ray) estimate maps `loading.load_runs_from` +
`counting.counts_for` over shards of runs, sums the `CountsByRatio`, and
calls `compute_from_counts` on the sum: byte-identical to `compute`. Pairs
need the matrices themselves: pass `runs`, or pairs found elsewhere (e.g.
`estimators.pairs_in_block` mapped over blocks, joined by `merge_pairs`).
"""

import numpy as np

from heldout_tf.estimates import counting
from heldout_tf.estimates import estimators
from heldout_tf.estimates.counting import EstimateError

WHAT = ("mem", "infl", "pairs", "cscores")
DEFAULT_WHAT = ("mem", "pairs", "cscores")


def parse_what(what):
  """('mem', 'pairs') from 'mem,pairs' or an iterable; validates names."""
  if isinstance(what, str):
    what = what.split(",")
  what = tuple(w.strip() for w in what if w.strip())
  unknown = [w for w in what if w not in WHAT]
  if unknown or not what:
    raise EstimateError(f"unknown estimate(s) {unknown or what}: choose from "
                        f"{','.join(WHAT)}")
  return what


def _check_labels(labels, n_train):
  if labels is None:
    return None
  labels = np.asarray(labels)
  if labels.shape != (n_train,):
    raise EstimateError(f"labels must have shape ({n_train},), has "
                        f"{labels.shape}")
  return labels


def compute(runs, what=DEFAULT_WHAT, infl_threshold=0.15,
            mem_threshold=0.25, memory_budget=estimators.DEFAULT_MEMORY_BUDGET,
            labels=None, progress=True) -> dict:
  """Computes the requested estimates of a `Runs`; returns a dict of arrays.

  Keys: always `experiment`, `num_runs`, `n_train`, `n_test`, `ratios`,
  `runs_per_ratio`, `n_in`, `n_out`, `num_never_held_out`,
  `num_never_trained`; 'mem' -> `memorization`, `memorization_se` (its
  standard error, `Counts.memorization_se`), `num_nan_memorization`;
  'infl' -> `influence` [n_test, n_train] float32; 'pairs' -> `tr_idx`,
  `tt_idx`, `infl`, `mem`, `infl_threshold`, `mem_threshold`; 'cscores' ->
  `cscores` (averaged over ratios), `cscores_se`, `cscores_by_ratio`
  [ratios, n_train], `num_nan_cscores`; `labels` if given (checked first:
  shape [n_train]).
  """
  what = parse_what(what)
  labels = _check_labels(labels, runs.n_train)
  return compute_from_counts(
      counting.counts_for(runs), what, n_test=runs.n_test,
      experiment=runs.experiment, runs=runs, infl_threshold=infl_threshold,
      mem_threshold=mem_threshold, memory_budget=memory_budget,
      labels=labels, progress=progress)


def compute_from_counts(counts: counting.CountsByRatio, what=DEFAULT_WHAT, *,
                        n_test, experiment="", runs=None, pairs=None,
                        infl_threshold=0.15, mem_threshold=0.25,
                        memory_budget=estimators.DEFAULT_MEMORY_BUDGET,
                        labels=None, progress=True) -> dict:
  """`compute`'s result from counts (the reduce step of a sharded estimate).

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
  """
  what = parse_what(what)
  c = counts.total
  labels = _check_labels(labels, len(c.n_in))
  needs_runs = [w for w in what
                if w == "infl" or (w == "pairs" and pairs is None)]
  if needs_runs and runs is None:
    raise EstimateError(f"{','.join(needs_runs)} need the runs' matrices: "
                        "pass runs=")
  result = {
      "experiment": np.array(experiment),
      "num_runs": np.array(int(np.sum(counts.runs_per_ratio))),
      "n_train": np.array(len(c.n_in)),
      "n_test": np.array(int(n_test)),
      "ratios": np.array(counts.ratios, np.float64),
      "runs_per_ratio": counts.runs_per_ratio,
      "n_in": c.n_in,
      "n_out": c.n_out,
      "num_never_held_out": np.array(c.num_never_held_out),
      "num_never_trained": np.array(c.num_never_trained),
  }
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
