"""The linear datamodeling score (LDS): how well an attribution predicts
what training on a subset does, judged on a collection's held-out runs.

An attribution tau(i, j) claims how much training example i adds to test
example j's margin. If it is right, summing it over a run's training subset
S_r predicts the margin that run's model has on j. For evaluation runs r:

  g_r(j)  = sum_{i in S_r} tau(i, j)             (predicted group effect)
  LDS(j)  = Spearman correlation over r of g_r(j) and margin_r(j)
  LDS     = mean over test examples j, with its standard error
            std_j(LDS(j)) / sqrt(n_test)

(TRAK, Park et al. 2023: `trak/tests/utils.py`; dattri's `metric.lds`).
The standard error is over test examples, for these evaluation runs.

Rules enforced here:
- the evaluation runs must be disjoint from every run a score was fitted on
  (including the runs that chose its regularisation): `LdsError` names one;
- at least `MIN_EVAL_RUNS` evaluation runs: a Spearman correlation over
  fewer is mostly noise;
- scores must have the collection's shapes and indices;
- an undefined correlation (constant prediction, e.g. a test example with
  no attribution at all, or a constant margin) counts as 0, and the table
  says how many there were: dropping them inflates the score.

  eval_runs = estimates.load_runs(root, exp, run_ids=range(400, 512),
                                  target="margin", target_splits=("test",))
  results = lds.score(eval_runs, [attributions.read("dm.npz", ...), ...])
  print(lds.table(results, eval_runs))
"""

import dataclasses
from typing import List, Optional, Sequence

import numpy as np
import scipy.stats

from heldout_tf.collection import selection
from heldout_tf.core import errors
from heldout_tf.core import files
from heldout_tf.estimates import attributions
from heldout_tf.estimates import loading
from heldout_tf.estimates import tracin

MIN_EVAL_RUNS = 20


class LdsError(errors.HeldoutError, ValueError):
  """The evaluation runs cannot judge these scores (names why)."""


def spearman_columns(a, b):
  """`(rho, undefined)` per column of `a`, `b` [runs, t]: Spearman's rank
  correlation (average ranks for ties), and where it is undefined (a
  constant column), where rho is 0."""
  ra = scipy.stats.rankdata(np.asarray(a, np.float64), axis=0)
  rb = scipy.stats.rankdata(np.asarray(b, np.float64), axis=0)
  ra -= ra.mean(axis=0)
  rb -= rb.mean(axis=0)
  denominator = np.sqrt((ra * ra).sum(axis=0) * (rb * rb).sum(axis=0))
  undefined = denominator == 0
  rho = np.where(undefined, 0.0, (ra * rb).sum(axis=0) /
                 np.where(undefined, 1.0, denominator))
  return rho, undefined


@dataclasses.dataclass
class Result:
  """One method's LDS on the evaluation runs."""
  name: str
  per_example: np.ndarray  # float64 [n_test]; undefined counted as 0.
  undefined: np.ndarray    # bool [n_test]
  num_fit_runs: int        # Runs of the collection the scores used.

  @property
  def mean(self) -> float:
    return float(np.mean(self.per_example))

  @property
  def se(self) -> float:
    """Standard error of `mean` over test examples."""
    n = len(self.per_example)
    return (float(np.std(self.per_example, ddof=1) / np.sqrt(n)) if n > 1
            else float("nan"))

  @property
  def num_undefined(self) -> int:
    return int(self.undefined.sum())


def _overlap(source, eval_keys) -> List[tuple]:
  """Evaluation runs among `source`'s fit runs (NaN ratio: any ratio)."""
  ids_any_ratio = {i for r, i in source.fit_runs if np.isnan(r)}
  exact = {(r, i) for r, i in source.fit_runs if not np.isnan(r)}
  return [(r, i) for r, i in eval_keys
          if i in ids_any_ratio or (r, i) in exact]


def _describe(run) -> str:
  ratio, run_id = run
  return (f"run {run_id}" if np.isnan(ratio) else
          f"ratio {ratio:g} run {run_id}")


def check(eval_runs: loading.Runs, sources: Sequence,
          min_eval_runs: int = MIN_EVAL_RUNS):
  """Raises LdsError unless `eval_runs` can judge every source."""
  if eval_runs.values_test is None or eval_runs.target != "margin":
    raise LdsError("the evaluation runs need their test margins: load them "
                   "with target='margin'")
  if eval_runs.num_runs < min_eval_runs:
    raise LdsError(f"{eval_runs.num_runs} evaluation runs; the LDS needs at "
                   f"least {min_eval_runs} (a rank correlation over fewer "
                   "runs is mostly noise)")
  eval_keys = list(zip(map(float, eval_runs.ratios),
                       map(int, eval_runs.run_ids)))
  for source in sources:
    source.check(eval_runs.n_train, eval_runs.n_test)
    shared = _overlap(source, eval_keys)
    if shared:
      raise LdsError(
          f"{source.name}: was fitted on {len(shared)} of the "
          f"{len(eval_keys)} evaluation runs (e.g. {_describe(shared[0])}): "
          "evaluate on runs it never saw")


def score(eval_runs: loading.Runs, sources: Sequence,
          min_eval_runs: int = MIN_EVAL_RUNS) -> List[Result]:
  """The LDS of every source on the evaluation runs (checked first)."""
  check(eval_runs, sources, min_eval_runs)
  observed = eval_runs.values_test
  results = []
  for source in sources:
    rho = np.zeros(eval_runs.n_test)
    undefined = np.zeros(eval_runs.n_test, bool)
    for cols, predicted in source.predictions(eval_runs.mask):
      rho[cols], undefined[cols] = spearman_columns(
          predicted, np.asarray(observed[:, cols]))
    results.append(Result(source.name, rho, undefined,
                          len(set(source.fit_runs))))
  return results


def run_summary(runs: loading.Runs) -> str:
  """'100 runs (ratio 0.5: runs 400-499)': the runs, compactly."""
  return describe_runs(runs.ratios, runs.run_ids)


def describe_runs(ratios, run_ids) -> str:
  """`run_summary` of runs given by their ratios (NaN: unknown) and ids."""
  parts = []
  ratios = np.asarray(ratios, np.float64)
  run_ids = np.asarray(run_ids)
  unknown = np.isnan(ratios)
  for ratio in list(np.unique(ratios[~unknown])) + (
      [np.nan] if unknown.any() else []):
    ids = run_ids[unknown if np.isnan(ratio) else ratios == ratio]
    label = "ratio unknown" if np.isnan(ratio) else f"ratio {ratio:g}"
    parts.append(f"{label}: runs {selection.format_run_ids(ids)}")
  return f"{len(run_ids)} runs ({'; '.join(parts)})"


def table(results: Sequence[Result], eval_runs: loading.Runs) -> str:
  """The methods x (mean LDS +/- SE, undefined, fitting runs) table."""
  width = max([len(r.name) for r in results] + [6])
  n_test = eval_runs.n_test
  lines = [f"LDS on {run_summary(eval_runs)}, {n_test} test examples "
           "(Spearman over the evaluation runs per test example, mean +/- "
           "standard error over test examples; undefined counted as 0)",
           f"{'method':<{width}}  {'LDS':>6}  {'+/- SE':>7}  "
           f"{'undefined':>11}  fitting runs"]
  for r in results:
    lines.append(f"{r.name:<{width}}  {r.mean:6.3f}  {r.se:7.3f}  "
                 f"{r.num_undefined:>5d}/{n_test:<5d}  {r.num_fit_runs}")
  return "\n".join(lines)


def save(path: str, results: Sequence[Result], eval_runs: loading.Runs):
  """Writes the LDS of every method atomically: `methods` [m], `lds`
  [m, n_test], `undefined` [m, n_test], `mean`, `se`, `num_undefined`,
  `num_fit_runs` [m], `eval_run_ids`, `eval_run_ratios`."""
  files.save_npz(
      path, methods=np.array([r.name for r in results]),
      lds=np.stack([r.per_example for r in results]),
      undefined=np.stack([r.undefined for r in results]),
      mean=np.array([r.mean for r in results]),
      se=np.array([r.se for r in results]),
      num_undefined=np.array([r.num_undefined for r in results]),
      num_fit_runs=np.array([r.num_fit_runs for r in results]),
      eval_run_ids=np.asarray(eval_runs.run_ids, np.int64),
      eval_run_ratios=np.asarray(eval_runs.ratios, np.float64))


ALL = "all"  # Every built-in method the collection can give.


def lds(root: str, experiment: str, eval_run_ids: Sequence[int],
        score_files: Sequence[str] = (), methods: Sequence[str] = (),
        fit_run_ids: Optional[Sequence[int]] = None, ratios=None,
        min_eval_runs: int = MIN_EVAL_RUNS, memory_budget="4GB",
        progress: bool = True, model: str = "", dataset: str = "",
        data_dir: Optional[str] = None, say=None):
  """The LDS workflow of a collection: `(results, eval_runs)`.

  Loads the evaluation runs (aux arrays and margins), reads each score
  file (`attributions.read`) and fits the built-in `methods`
  (`attributions.BUILTINS`; `[ALL]`: those fitted on runs' outputs, and
  TracIn when the fitting runs have trajectory checkpoints, else `say`
  says it is left out) on `fit_run_ids` (default: every run of the
  collection not among the evaluation runs); then `score`. `model`,
  `dataset` and `data_dir` rebuild the runs' model and data for TracIn
  (`tracin.from_collection`).
  """
  eval_runs = loading.load_runs(root, experiment, ratios, progress=progress,
                                run_ids=eval_run_ids, target="margin",
                                target_splits=("test",))
  sources = [attributions.read(path, eval_runs.n_train, eval_runs.n_test)
             for path in score_files]
  if methods and fit_run_ids is None:
    found = loading.find_runs(root, experiment, ratios)
    fit_run_ids = sorted({r.run for r in found} - set(eval_run_ids))
  if list(methods) == [ALL]:
    methods = list(attributions.FROM_RUNS)
    if tracin.trajectory_runs(root, experiment, ratios, fit_run_ids):
      methods.append(attributions.TRACIN)
    elif say is not None:
      say("TracIn left out: no trajectory checkpoints among the fitting "
          "runs (heldout train --trajectory_runs K keeps runs 0..K-1's)")
  from_runs = [m for m in methods if m != attributions.TRACIN]
  if from_runs:
    fit = loading.load_runs(root, experiment, ratios, progress=progress,
                            run_ids=fit_run_ids, target="margin",
                            target_splits=("test",))
    sources += attributions.builtins(fit, from_runs,
                                     memory_budget=memory_budget)
  if attributions.TRACIN in methods:
    sources.append(tracin.Source(tracin.from_collection(
        root, experiment, ratios, fit_run_ids, model=model, dataset=dataset,
        data_dir=data_dir)))
  return score(eval_runs, sources, min_eval_runs), eval_runs
