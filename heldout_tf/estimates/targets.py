"""Memorization, influence and high-influence pairs of a real-valued target.

The papers' estimators are differences of means of 0/1 correctness
(`estimators`). The same differences of a run's margin or correct-label
probability (`heldout_tf.collection.margins`) keep the signal the 0/1 bit
throws away. With runs r, mask M[r, i] and values V_train [runs, n_train],
V_test [runs, n_test]:

  mem[i]     = mean_r{V_train[r,i] | M[r,i]} - mean_r{V_train[r,i] | !M[r,i]}
  infl[j, i] = mean_r{V_test[r,j]  | M[r,i]} - mean_r{V_test[r,j]  | !M[r,i]}

Their standard errors are Welch's, sqrt(var_in / n_in + var_out / n_out),
with each group's sample variance (ddof = 1): NaN where a group has fewer
than two runs. Estimates are NaN where an example was never held out (or
never trained on), as for correctness.

Everything is summed in float64 (values are centred per example first), so
results equal a plain float64 computation to rounding. Influence is
computed in blocks: dense within a memory budget, pairs block by block with
a bounded working set, as `estimators` does for correctness.

Keys: a result of target 'margin' holds `memorization_margin`,
`memorization_se_margin`, ... (`key`): no file can be mistaken for the
papers' 0/1 estimates.
"""

import dataclasses

import numpy as np

from heldout_tf.core import progress as progress_lib
from heldout_tf.core import sizes
from heldout_tf.estimates import counting
from heldout_tf.estimates import estimators
from heldout_tf.estimates.counting import EstimateError

# The estimate keys a target names (`key`).
KEYS = ("memorization", "memorization_se", "num_nan_memorization",
        "influence", "tr_idx", "tt_idx", "infl", "infl_se", "mem",
        "infl_threshold", "mem_threshold", "test_variance")


def key(name: str, target: str) -> str:
  """The result key of estimate `name` on `target`: `name` itself for
  'correct' (the papers' keys), else `<name>_<target>`."""
  return name if target == "correct" else f"{name}_{target}"


def _float64(values, cols) -> np.ndarray:
  return np.asarray(values[:, cols], np.float64)


@dataclasses.dataclass(frozen=True)
class Moments:
  """Per example: runs in / out, and the target's mean and variance in each
  group (float64; NaN where a group is empty, variances where it has fewer
  than two runs)."""
  n_in: np.ndarray
  n_out: np.ndarray
  mean_in: np.ndarray
  mean_out: np.ndarray
  var_in: np.ndarray
  var_out: np.ndarray

  @property
  def difference(self) -> np.ndarray:
    """mean_in - mean_out: memorization, for a training example's own
    values."""
    return self.mean_in - self.mean_out

  @property
  def difference_se(self) -> np.ndarray:
    """Welch's standard error of `difference`."""
    return np.sqrt(counting.ratio(self.var_in, self.n_in) +
                   counting.ratio(self.var_out, self.n_out))


def _group(values, weights):
  """`(n, mean, var)` of each column of `values` over rows where `weights`
  (0/1 float64) is 1; var with ddof = 1."""
  n = weights.sum(axis=0)
  mean = counting.ratio((values * weights).sum(axis=0), n)
  centred = np.where(weights > 0, values - np.nan_to_num(mean), 0.0)
  var = counting.ratio((centred * centred).sum(axis=0), n - 1)
  return n.astype(np.int64), mean, var


def moments(mask, values, chunk_bytes=counting.COUNT_CHUNK_BYTES) -> Moments:
  """Per column of `values` [runs, n]: its moments in the runs that trained
  on the example (mask [runs, n]) and in those that held it out. Streams
  over column chunks (memory-mapped inputs stay within bounds)."""
  num_runs, n = counting.check_matrices(mask, values=values)
  if values.shape[1] != n:
    raise EstimateError(f"values have shape {values.shape} but mask has "
                        f"{mask.shape}")
  fields = {f.name: np.empty(n) for f in dataclasses.fields(Moments)}
  for cols in counting.chunks(n, max(1, chunk_bytes // (8 * num_runs))):
    m = np.asarray(mask[:, cols], np.float64)
    v = _float64(values, cols)
    for group, weights in (("in", m), ("out", 1.0 - m)):
      got = _group(v, weights)
      for name, part in zip(("n", "mean", "var"), got):
        fields[f"{name}_{group}"][cols] = part
  for name in ("n_in", "n_out"):
    fields[name] = fields[name].astype(np.int64)
  return Moments(**fields)


def memorization(mask, values_train):
  """`(mem, se)`: float64 [n_train] each, the difference of means of each
  training example's own target and Welch's standard error."""
  m = moments(mask, values_train)
  return m.difference, m.difference_se


def test_variance(values_test) -> np.ndarray:
  """float64 [n_test]: each test example's target variance over the runs
  (ddof = 1): with no influence, infl[j, i]'s standard error is
  sqrt(test_variance[j] (1/n_in[i] + 1/n_out[i]))."""
  num_runs = values_test.shape[0]
  out = np.empty(values_test.shape[1])
  chunk = max(1, counting.COUNT_CHUNK_BYTES // (8 * num_runs))
  for cols in counting.chunks(values_test.shape[1], chunk):
    out[cols] = _group(_float64(values_test, cols),
                       np.ones((num_runs, 1)))[2]
  return out


class _TestColumns:
  """A block of test columns, centred per column, with the sums a
  difference of means needs (float64)."""

  def __init__(self, values_test, cols):
    v = _float64(values_test, cols)
    self.centred = v - v.mean(axis=0)
    self.total = self.centred.sum(axis=0)
    self._squared = None

  @property
  def squared(self) -> np.ndarray:
    if self._squared is None:
      self._squared = self.centred * self.centred
      self.total_sq = self._squared.sum(axis=0)
    return self._squared

  def influence(self, mask_block, n_in, n_out, with_se=False):
    """`(infl, se)`: [b, t] float64 for training rows `mask_block`
    (float64 [runs, b]); `se` is None unless `with_se`."""
    both = mask_block.T @ self.centred
    n_in = np.asarray(n_in, np.float64)[:, None]
    n_out = np.asarray(n_out, np.float64)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
      infl = both / n_in - (self.total - both) / n_out
      if not with_se:
        return infl, None
      sq_in = mask_block.T @ self.squared
      var_in = (sq_in - both * both / n_in) / (n_in - 1)
      rest = self.total - both
      var_out = (self.total_sq - sq_in - rest * rest / n_out) / (n_out - 1)
      se = np.sqrt(np.maximum(var_in, 0) / n_in +
                   np.maximum(var_out, 0) / n_out)
    return infl, np.where((n_in > 1) & (n_out > 1), se, np.nan)


def influence_columns(mask, values_test, cols, counts=None,
                      mask_float=None) -> np.ndarray:
  """float64 [t, n_train]: the influence on the test columns `cols` of
  `values_test` (a real target, or 0/1 correctness); NaN where a training
  example was never held out or never trained on. `counts` and
  `mask_float` (`counting.counts(mask)`, the mask as float64) may be passed
  when computed already."""
  c = counts if counts is not None else counting.counts(mask)
  m = mask_float if mask_float is not None else np.asarray(mask, np.float64)
  infl, _ = _TestColumns(values_test, cols).influence(m, c.n_in, c.n_out)
  infl = infl.T
  infl[:, ~c.defined] = np.nan
  return infl


def influence(mask, values_test, memory_budget=None) -> np.ndarray:
  """Dense influence on the target, float32 [n_test, n_train]; NaN columns
  where undefined. Refuses (EstimateError) beyond `memory_budget` (default:
  the available memory), as `estimators.influence` does."""
  num_runs, n_train = counting.check_matrices(mask, values_test=values_test)
  n_test = values_test.shape[1]
  budget = estimators.memory_budget_bytes(memory_budget)
  block = 64
  needed = 4 * n_test * n_train + 8 * num_runs * (n_train + 3 * block) + (
      24 * block * n_train)
  if needed > budget:
    raise EstimateError(
        f"dense influence [{n_test}, {n_train}] float32 needs "
        f"{sizes.format_bytes(needed)} with working memory, more than the "
        f"{sizes.format_bytes(budget)} budget; use high_influence_pairs "
        "(blocked, bounded memory) instead")
  c = counting.counts(mask)
  estimators.log_undefined("influence", c)
  m = np.asarray(mask, np.float64)
  out = np.empty((n_test, n_train), np.float32)
  for rows in counting.chunks(n_test, block):
    out[rows] = influence_columns(mask, values_test, rows, c, m)
  return out


def _block_rows(num_runs, n_train, n_test, budget) -> int:
  """Training rows per pairs block within `budget` (float64 test values,
  their squares and four [rows, n_test] float64 temporaries)."""
  fixed = 16 * num_runs * n_test + 40 * n_test + 64 * n_train
  per_row = 40 * n_test + 8 * num_runs + 64
  rows = (budget - fixed) // per_row
  if rows < 1:
    raise EstimateError(
        f"memory budget {sizes.format_bytes(budget)} is too small for "
        f"{num_runs} runs x {n_test} test examples: high_influence_pairs on "
        f"a target needs at least {sizes.format_bytes(fixed + per_row)}")
  return int(rows)


def high_influence_pairs(mask, values_train, values_test, infl_threshold,
                         mem_threshold,
                         memory_budget=estimators.DEFAULT_MEMORY_BUDGET,
                         progress=False) -> dict:
  """Every (train i, test j) with infl >= infl_threshold and the training
  example's memorization >= mem_threshold, on the target.

  Blocks over the selected training rows; the working set stays within
  `memory_budget`. Returns the published pairs format, `tr_idx`, `tt_idx`
  (int64), `infl`, `mem` (float64) sorted by (tr_idx, tt_idx), plus
  `infl_se` (Welch's standard error of each pair's influence).
  """
  num_runs, n_train = counting.check_matrices(
      mask, values_train=values_train, values_test=values_test)
  n_test = values_test.shape[1]
  budget = sizes.parse_bytes(memory_budget, "memory budget")
  block = _block_rows(num_runs, n_train, n_test, budget)
  mem, _ = memorization(mask, values_train)
  with np.errstate(invalid="ignore"):
    selected = np.flatnonzero(mem >= mem_threshold)
  c = counting.counts(mask)
  test = _TestColumns(values_test, slice(None))
  found = {k: [] for k in ("tr_idx", "tt_idx", "infl", "infl_se")}
  starts = range(0, len(selected), max(1, block))
  with progress_lib.bar(len(starts), "influence pairs", "block",
                        enabled=progress) as bar:
    for start in starts:
      rows = selected[start:start + block]
      m = estimators.gather_columns(mask, rows, np.float64)
      infl, se = test.influence(m, c.n_in[rows], c.n_out[rows], with_se=True)
      with np.errstate(invalid="ignore"):
        i, j = np.nonzero(infl >= infl_threshold)
      for name, value in (("tr_idx", rows[i]), ("tt_idx", j),
                          ("infl", infl[i, j]), ("infl_se", se[i, j])):
        found[name].append(value)
      bar.update(1)
  pairs = {k: np.concatenate(v or [[]]).astype(
      np.int64 if k.endswith("idx") else np.float64)
           for k, v in found.items()}
  order = np.lexsort((pairs["tt_idx"], pairs["tr_idx"]))
  pairs = {k: v[order] for k, v in pairs.items()}
  pairs["mem"] = mem[pairs["tr_idx"]]
  return pairs
