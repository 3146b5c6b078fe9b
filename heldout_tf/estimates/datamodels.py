"""Linear datamodels of a collection (Ilyas et al. 2022), streamed over
blocks of test examples.

For each test example j, a linear model of its margin in run r on the
run's training mask:

  margin_r[j] ~ theta_j . 1_{S_r} + b_j

fitted over the collection's runs (their `margins.npz`), by l1 (the
paper's) or ridge regression (`regression`). theta_j[i] is then an
attribution: the margin training example i adds to test example j.

  result = fit_collection(root, experiment, fit_runs=range(400))
  save("dm.npz", result)

Runs: the given fit runs are ordered by (ratio, run id); the last
`select_fraction` of them (at least `MIN_SELECT_RUNS`) choose lambda and the
rest are fitted; with `refit` (default) the weights are then refitted on
all of them at the chosen lambda. Runs used in any of these ways must not
judge the datamodels: the file records them (`fit_run_*`, `select_run_*`)
and `heldout lds` refuses evaluation runs among them.

Choosing lambda (`selection`). 'per_target' (the paper's): each test
example its own lambda along its path, by its error on the selection runs.
'global' (ours, the default): one lambda relative to each test example's
own scale (l1: a fraction of its lambda_max; ridge: of the data's scale),
the one whose selection error relative to the null model's, averaged over
`selection_targets` test examples spread over the test set, is lowest;
then every test example is fitted once, at that lambda (no path). With
few selection runs a per-example choice is noisy, and for test examples
with little signal it often picks lambda_max, all weights 0: a constant
prediction, an LDS of 0. On a real MNIST MLP collection (2 000 / 500
digits, ratio 0.5; docs/attribution.md) the global choice gave an l1 LDS of
0.25 / 0.34 / 0.41 at 200 / 400 / 700 fitting runs, the per-example one
0.22 / 0.32 / 0.41 (100 / 38 / 6 of 500 test examples all zero); the global
choice is also deterministic whatever the blocks, and cheaper.

Memory: the [n_test, n_train] weights never live in memory at once (10 000
x 60 000 for MNIST). Blocks of test examples are fitted one after the other
(all targets of a block in the same matrix products), sized to
`memory_budget`; of each block only the top-k positive and top-k negative
weights per test example are kept. On Ray, blocks are mapped over tasks
(`heldout_tf.estimates.on_ray.datamodels_on_ray`).

Output (`save`, `FORMAT_VERSION` 1): the top-k per test example,
`top_pos_idx`, `top_pos_weight`, `top_neg_idx`, `top_neg_weight`
[n_test, k] (index -1 and weight 0 where a test example has fewer nonzero
weights of that sign); the same weights as pairs in the published format,
`tr_idx`, `tt_idx`, `infl` (sorted by training then test index); per test
example `intercept`, `lam` (the regularisation used), `select_mse` (its
error on the selection runs; NaN with the global choice), `num_nonzero`
(weights not 0, of all n_train: more than 2k means the top-k leave some
out); the global choice (`lambda_ratio`, `selection_errors` along the
path, `selection_sample`; NaN and empty per target); the runs
(`fit_run_ids`, `fit_run_ratios`, `select_run_ids`, `select_run_ratios`)
and the settings (`method`, `target`, `top_k`, `select_fraction`,
`selection`, `selection_targets`, `refit`, `num_lambdas`,
`lambda_min_ratio`, `lambda_max_ratio`, `tolerance`, `max_iterations`,
`patience`), `experiment`, `n_train`, `n_test`, `format_version`.

Settings. The paper's: l1 regression of the margin on standardised masks,
lambda along a path from lambda_max down, chosen by the mean squared error
on runs held out from the fit (per target, early stopping of the path:
`selection='per_target'`), refit on fit + selection runs at the chosen
lambda. Ours: the global choice (the default, above), the solver (batched
FISTA instead of SAGA), the path (16 values down to 1% of lambda_max
instead of the paper's k = 100), the selection share (10% of the fit
runs), the tolerance, ridge (closed form through the dual) and its lambda
grid, top-k storage.
"""

import dataclasses
import math
from typing import Iterator, Optional, Sequence, Tuple

import numpy as np

from heldout_tf.core import files
from heldout_tf.core import progress as progress_lib
from heldout_tf.core import sizes
from heldout_tf.estimates import estimators
from heldout_tf.estimates import loading
from heldout_tf.estimates import regression
from heldout_tf.estimates.counting import EstimateError

METHODS = ("l1", "ridge")
SELECTIONS = ("global", "per_target")
FORMAT_VERSION = 1
MIN_FIT_RUNS = 4
MIN_SELECT_RUNS = 2


@dataclasses.dataclass(frozen=True)
class Settings:
  """How datamodels are fitted (see the module docstring)."""
  method: str = "l1"
  top_k: int = 100
  select_fraction: float = 0.1
  # 'global': one lambda relative to each test example's scale, chosen on
  # `selection_targets` test examples; 'per_target': each its own (paper).
  selection: str = "global"
  selection_targets: int = 1000
  refit: bool = True
  num_lambdas: int = regression.LASSO_DEFAULTS["num_lambdas"]
  lambda_min_ratio: float = regression.LASSO_DEFAULTS["lambda_min_ratio"]
  # Ridge's grid: lambda_min_ratio..lambda_max_ratio x the data's scale.
  lambda_max_ratio: float = regression.RIDGE_DEFAULTS["lambda_max_ratio"]
  tolerance: float = regression.LASSO_DEFAULTS["tolerance"]
  max_iterations: int = regression.LASSO_DEFAULTS["max_iterations"]
  patience: int = regression.LASSO_DEFAULTS["patience"]

  def __post_init__(self):
    if self.method not in METHODS:
      raise EstimateError(f"unknown datamodel method {self.method!r}: "
                          f"choose from {', '.join(METHODS)}")
    if self.selection not in SELECTIONS:
      raise EstimateError(f"unknown selection {self.selection!r}: choose "
                          f"from {', '.join(SELECTIONS)}")
    rules = (("top_k", self.top_k >= 1, ">= 1"),
             ("selection_targets", self.selection_targets >= 1, ">= 1"),
             ("num_lambdas", self.num_lambdas >= 2, ">= 2"),
             ("max_iterations", self.max_iterations >= 1, ">= 1"),
             ("patience", self.patience >= 1, ">= 1"),
             ("select_fraction", 0 < self.select_fraction < 1, "in (0, 1)"),
             ("tolerance", self.tolerance > 0, "> 0"),
             ("lambda_min_ratio", 0 < self.lambda_min_ratio < 1,
              "in (0, 1)"),
             ("lambda_max_ratio", self.lambda_max_ratio > 0, "> 0"))
    for name, ok, requirement in rules:
      if not ok:
        raise EstimateError(f"{name} must be {requirement}, got "
                            f"{getattr(self, name)}")

  @classmethod
  def for_method(cls, method: str, **changes) -> "Settings":
    """The defaults of `method` (ridge's lambda grid differs), changed."""
    if method == "ridge":
      base = dict(num_lambdas=regression.RIDGE_DEFAULTS["num_lambdas"],
                  lambda_min_ratio=regression.RIDGE_DEFAULTS[
                      "lambda_min_ratio"])
      changes = {**base, **changes}
    return cls(method=method, **changes)


def split_rows(num_runs: int, select_fraction: float) -> Tuple[slice, slice]:
  """`(fit rows, selection rows)` of `num_runs` runs: the last
  `select_fraction` (at least `MIN_SELECT_RUNS`) choose lambda."""
  select = max(MIN_SELECT_RUNS, math.ceil(select_fraction * num_runs))
  if num_runs - select < MIN_FIT_RUNS:
    raise EstimateError(
        f"{num_runs} runs are too few for a datamodel: it needs at least "
        f"{MIN_FIT_RUNS + MIN_SELECT_RUNS} ({MIN_FIT_RUNS} to fit, "
        f"{MIN_SELECT_RUNS} to choose lambda)")
  return slice(0, num_runs - select), slice(num_runs - select, num_runs)


@dataclasses.dataclass(frozen=True)
class Choice:
  """The regularisation `selection='global'` chose for every test example."""
  ratio: float  # l1: of each example's lambda_max; ridge: of the scale.
  errors: np.ndarray  # float64 [num_lambdas]: mean relative selection error.
  sample: np.ndarray  # int64: the test examples it was chosen on.


def _path(problem, y_fit, y_select, settings, patience, refit):
  """The per-target selection along the path (lasso) or grid (ridge)."""
  if settings.method == "ridge":
    return regression.ridge(
        problem, y_fit, y_select, num_lambdas=settings.num_lambdas,
        lambda_min_ratio=settings.lambda_min_ratio,
        lambda_max_ratio=settings.lambda_max_ratio, refit=refit)
  return regression.lasso_path(
      problem, y_fit, y_select, num_lambdas=settings.num_lambdas,
      lambda_min_ratio=settings.lambda_min_ratio,
      tolerance=settings.tolerance, max_iterations=settings.max_iterations,
      patience=patience, refit=refit)


def _ratios(problem, settings) -> np.ndarray:
  if settings.method == "ridge":
    return regression.ridge_grid(problem.fit, settings.num_lambdas,
                                 settings.lambda_min_ratio,
                                 settings.lambda_max_ratio)[0]
  return regression.lasso_ratios(settings.num_lambdas,
                                 settings.lambda_min_ratio)


def choose(problem: regression.Problem, margins, rows, settings: Settings,
           block: Optional[int] = None) -> Choice:
  """The one relative regularisation of `selection='global'`: the whole
  path (no early stop) on `selection_targets` test examples spread evenly
  over the test set (`block` at a time), the value whose selection error
  relative to the null model's, averaged over them, is lowest."""
  fit_rows, select_rows = rows
  n_test = margins.shape[1]
  sample = np.unique(np.linspace(0, n_test - 1, min(
      n_test, settings.selection_targets)).round().astype(np.int64))
  errors = []
  for part in np.array_split(sample, -(-len(sample) // (block or
                                                        len(sample)))):
    y = np.asarray(margins[:, part], np.float32)
    errors.append(_path(problem, y[fit_rows], y[select_rows], settings,
                        patience=None, refit=False).path_errors)
  errors = np.nanmean(np.concatenate(errors, axis=1), axis=1)
  ratio = float(_ratios(problem, settings)[int(np.argmin(errors))])
  return Choice(ratio, errors, sample)


def fit_block(problem: regression.Problem, y_fit, y_select,
              settings: Settings, choice: Optional[Choice] = None
              ) -> regression.Fit:
  """The datamodels of one block of test examples (targets [runs, T]):
  with `choice` (`selection='global'`) at its regularisation, else each
  target's own along the path."""
  if choice is None:
    return _path(problem, y_fit, y_select, settings, settings.patience,
                 settings.refit)
  design = problem.both if settings.refit else problem.fit
  y = np.concatenate([y_fit, y_select]) if settings.refit else y_fit
  if settings.method == "ridge":
    lam = choice.ratio * regression.ridge_scale(problem.fit)
    return regression.ridge(design, y, lam=np.full(y.shape[1], lam))
  lam = choice.ratio * regression.lambda_max(problem.fit, y_fit)
  return regression.lasso(design, y, lam, settings.tolerance,
                          settings.max_iterations)


@dataclasses.dataclass
class Plan:
  """What every block's fit shares: the runs' roles, their designs, and
  (`selection='global'`) the chosen regularisation."""
  problem: regression.Problem
  rows: Tuple[slice, slice]  # Fit rows, selection rows.
  choice: Optional[Choice]


def plan(mask, margins, settings: Settings,
         block: Optional[int] = None) -> Plan:
  """The `Plan` of fitting `margins` [runs, n_test] on `mask` [runs,
  n_train]: the last rows choose lambda (`split_rows`); the global choice
  works on `block` test examples at a time (default: all of its sample)."""
  rows = split_rows(len(mask), settings.select_fraction)
  problem = regression.Problem(mask[rows[0]], mask[rows[1]])
  choice = (choose(problem, margins, rows, settings, block)
            if settings.selection == "global" else None)
  return Plan(problem, rows, choice)


def block_size(num_runs: int, n_train: int, n_test: int,
               memory_budget) -> int:
  """Test examples per block so one block's fit stays within the budget:
  the designs (masks, standardised float32, for the fit, selection and
  refit runs: ~14 bytes per run and training example) and ~8 float32
  [n_train] arrays per test example."""
  budget = estimators.memory_budget_bytes(memory_budget)
  fixed = 14 * num_runs * n_train + 16 * num_runs * num_runs
  per_target = 32 * n_train + 24 * num_runs
  size = (budget - fixed) // per_target
  if size < 1:
    raise EstimateError(
        f"memory budget {sizes.format_bytes(budget)} is too small for "
        f"datamodels of {num_runs} runs x {n_train} training examples: "
        f"they need at least {sizes.format_bytes(fixed + per_target)}")
  return int(min(size, n_test))


def fit_blocks(the_plan: Plan, margins, settings: Settings, block: int,
               progress: bool = False
               ) -> Iterator[Tuple[slice, regression.Fit]]:
  """Yields `(test columns, Fit)` per block of test examples of `margins`
  [runs, n_test] (may be memory-mapped: only a block's columns are read).
  """
  fit_rows, select_rows = the_plan.rows
  n_test = margins.shape[1]
  starts = range(0, n_test, block)
  with progress_lib.bar(len(starts), f"{settings.method} datamodels",
                        "block", enabled=progress) as bar:
    for start in starts:
      cols = slice(start, min(start + block, n_test))
      y = np.asarray(margins[:, cols], np.float32)
      yield cols, fit_block(the_plan.problem, y[fit_rows], y[select_rows],
                            settings, the_plan.choice)
      bar.update(1)


def top_k(weights, k: int) -> dict:
  """Per column of `weights` [n_train, T]: the k largest positive and the
  k most negative entries, `top_pos_idx`/`top_pos_weight` and
  `top_neg_idx`/`top_neg_weight` [T, k] (largest magnitude first; -1 and 0
  where fewer are nonzero)."""
  w = np.asarray(weights, np.float32).T
  k = min(k, w.shape[1])
  out = {}
  for sign, name in ((1.0, "pos"), (-1.0, "neg")):
    signed = sign * w
    part = np.argpartition(-signed, k - 1, axis=1)[:, :k]
    values = np.take_along_axis(signed, part, axis=1)
    order = np.argsort(-values, axis=1, kind="stable")
    index = np.take_along_axis(part, order, axis=1)
    values = np.take_along_axis(values, order, axis=1)
    keep = values > 0
    out[f"top_{name}_idx"] = np.where(keep, index, -1).astype(np.int64)
    out[f"top_{name}_weight"] = np.where(keep, sign * values, 0.0).astype(
        np.float32)
  return out


def summarise(cols: slice, fit: regression.Fit, k: int) -> dict:
  """What the file keeps of one block's fit (see the module docstring)."""
  out = top_k(fit.weights, k)
  out.update(intercept=fit.intercept.astype(np.float32),
             lam=np.asarray(fit.lam, np.float64),
             select_mse=np.asarray(fit.select_mse, np.float64),
             num_nonzero=np.count_nonzero(fit.weights, axis=0).astype(
                 np.int64),
             first=np.array(cols.start, np.int64))
  return out


def join(blocks: Sequence[dict], n_test: int) -> dict:
  """The per-test-example arrays of all blocks (`summarise`d, any order),
  plus the pairs (`tr_idx`, `tt_idx`, `infl`)."""
  blocks = sorted(blocks, key=lambda b: int(b["first"]))
  joined = {key: np.concatenate([b[key] for b in blocks])
            for key in blocks[0] if key != "first"}
  if len(joined["intercept"]) != n_test:
    raise EstimateError(f"blocks cover {len(joined['intercept'])} test "
                        f"examples, not {n_test}")
  tt, tr, infl = [], [], []
  for sign in ("pos", "neg"):
    index = joined[f"top_{sign}_idx"]
    j, slot = np.nonzero(index >= 0)
    tt.append(j)
    tr.append(index[j, slot])
    infl.append(joined[f"top_{sign}_weight"][j, slot])
  tt, tr = np.concatenate(tt), np.concatenate(tr)
  order = np.lexsort((tt, tr))
  joined.update(tr_idx=tr[order].astype(np.int64),
                tt_idx=tt[order].astype(np.int64),
                infl=np.concatenate(infl)[order].astype(np.float64))
  return joined


def fit_runs(runs: loading.Runs, settings: Settings,
             memory_budget=estimators.DEFAULT_MEMORY_BUDGET,
             progress: bool = False) -> dict:
  """The datamodels of loaded runs (target 'margin', test values), as the
  dict `save` writes."""
  if runs.target != "margin" or runs.values_test is None:
    raise EstimateError("datamodels need the runs' test margins: load them "
                        "with target='margin'")
  block = block_size(runs.num_runs, runs.n_train, runs.n_test, memory_budget)
  the_plan = plan(runs.mask, runs.values_test, settings, block)
  found = [summarise(cols, fit, settings.top_k) for cols, fit in fit_blocks(
      the_plan, runs.values_test, settings, block, progress)]
  return finish(join(found, runs.n_test), runs, settings, the_plan.choice)


def finish(joined: dict, runs, settings: Settings,
           choice: Optional[Choice]) -> dict:
  """Adds the runs used, the settings and the global choice to `join`'s
  arrays."""
  fit_rows, select_rows = split_rows(runs.num_runs, settings.select_fraction)
  used = slice(None) if settings.refit else fit_rows
  record = dict(
      format_version=np.array(FORMAT_VERSION, np.int64),
      experiment=np.array(runs.experiment), target=np.array("margin"),
      n_train=np.array(runs.n_train, np.int64),
      n_test=np.array(runs.n_test, np.int64),
      fit_run_ids=np.asarray(runs.run_ids[used], np.int64),
      fit_run_ratios=np.asarray(runs.ratios[used], np.float64),
      select_run_ids=np.asarray(runs.run_ids[select_rows], np.int64),
      select_run_ratios=np.asarray(runs.ratios[select_rows], np.float64))
  for field in dataclasses.fields(settings):
    record[field.name] = np.array(getattr(settings, field.name))
  record.update(
      lambda_ratio=np.array(np.nan if choice is None else choice.ratio),
      selection_errors=(np.zeros(0) if choice is None else choice.errors),
      selection_sample=(np.zeros(0, np.int64) if choice is None
                        else choice.sample))
  return {**joined, **record}


def fit_collection(root: str, experiment: str, fit_run_ids: Sequence[int],
                   ratios=None, settings: Optional[Settings] = None,
                   memory_budget=estimators.DEFAULT_MEMORY_BUDGET,
                   progress: bool = True, mmap_dir: Optional[str] = None
                   ) -> dict:
  """The datamodels of runs `fit_run_ids` (at `ratios`) of a collection.

  Reads each run's aux arrays and margins.npz (`loading.load_runs` with
  target 'margin', test margins only) and fits block by block within
  `memory_budget`. Returns the dict `save` writes.
  """
  settings = settings or Settings()
  runs = loading.load_runs(root, experiment, ratios, progress=progress,
                           run_ids=fit_run_ids, target="margin",
                           target_splits=("test",), mmap_dir=mmap_dir)
  return fit_runs(runs, settings, memory_budget, progress)


def save(path: str, result: dict):
  """Writes a datamodels result atomically (`errors.PathError` if it
  cannot)."""
  files.save_npz(path, **{k: np.asarray(v) for k, v in result.items()})


def summary(result: dict) -> str:
  """A few lines: what was fitted, on which runs, how sparse."""
  nonzero = np.asarray(result["num_nonzero"])
  k = int(result["top_k"])
  lines = [
      f"{result['method']} datamodels of {int(result['n_test'])} test "
      f"examples on {int(result['n_train'])} training examples "
      f"(target {result['target']})",
      f"runs: {len(result['fit_run_ids'])} used for the weights, of which "
      f"{len(result['select_run_ids'])} also chose lambda"
      + (" (refitted on all)" if bool(result["refit"]) else ""),
      f"nonzero weights per test example: median {np.median(nonzero):g}, "
      f"max {nonzero.max() if len(nonzero) else 0}; kept: top {k} of each "
      f"sign ({int(np.sum(nonzero > 2 * k))} test examples have more), "
      f"{len(result['tr_idx'])} pairs"]
  return "\n".join(lines)
