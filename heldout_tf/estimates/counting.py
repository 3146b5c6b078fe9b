"""Exact per-example counts over runs: the sufficient statistics.

Memorization and C-scores (and their standard errors) are ratios of four
integer counts per training example, taken per subset ratio. Counts over
disjoint sets of runs add up, so a collection can be counted in shards
(a distributed map) and summed (the reduce):

  total = sum((counts_for(shard) for shard in shards), CountsByRatio())
  compute_from_counts(total, ...)  # == compute(all runs), byte for byte

Counts are exact integers: the 0/1 float32 matrix products used elsewhere
are exact while counts stay below 2**24 (`MAX_EXACT_RUNS`).
"""

import dataclasses
from typing import Tuple

import numpy as np

from heldout_tf.core import errors

MAX_EXACT_RUNS = 2**24  # float32 represents every count below this exactly.
COUNT_CHUNK_BYTES = 64 << 20  # Temporary bool bytes per column chunk.
UNKNOWN_RATIO = -1.0  # Stands for runs whose subset ratio is not known.


class EstimateError(errors.HeldoutError, ValueError):
  """Inputs to an estimator are inconsistent or do not fit in memory."""


def check_matrices(mask, **others) -> Tuple[int, int]:
  """`(num_runs, n_train)`; validates 2-D matrices sharing `mask`'s runs."""
  if mask.ndim != 2:
    raise EstimateError(f"mask must be [runs, n_train], has shape {mask.shape}")
  num_runs, n_train = mask.shape
  if num_runs == 0:
    raise EstimateError("no runs: mask has 0 rows")
  if num_runs >= MAX_EXACT_RUNS:
    raise EstimateError(f"{num_runs} runs: exact float32 counts need fewer "
                        f"than {MAX_EXACT_RUNS}")
  for name, array in others.items():
    if array.ndim != 2 or array.shape[0] != num_runs:
      raise EstimateError(f"{name} must be [runs={num_runs}, n], has shape "
                          f"{array.shape}")
    if name == "correct_train" and array.shape[1] != n_train:
      raise EstimateError(f"correct_train has shape {array.shape} but mask "
                          f"has {mask.shape}")
  return num_runs, n_train


def column_sums(array, dtype=np.int64) -> np.ndarray:
  """Per-column number of True values of a bool [runs, n] matrix."""
  array = np.asarray(array)
  if array.dtype == bool:
    array = array.view(np.uint8)
  return np.add.reduce(array, axis=0, dtype=dtype)


def chunks(n, size):
  """Consecutive slices of at most `size` covering range(n)."""
  for start in range(0, n, size):
    yield slice(start, min(start + size, n))


def ratio(numerator, denominator) -> np.ndarray:
  """float64 `numerator / denominator`, NaN where the denominator is 0."""
  with np.errstate(divide="ignore", invalid="ignore"):
    return np.where(denominator > 0,
                    numerator / np.maximum(denominator, 1), np.nan)


def bernoulli_variance_of_mean(correct, total) -> np.ndarray:
  """float64 p (1 - p) / n with p = correct / n; NaN where n = 0."""
  p = ratio(correct, total)
  return ratio(p * (1.0 - p), total)


@dataclasses.dataclass(frozen=True)
class Counts:
  """Per training example: runs trained on it, and correct counts."""
  n_in: np.ndarray        # int64 [n_train]: runs that trained on i.
  n_out: np.ndarray       # int64 [n_train]: runs that held i out.
  correct_in: np.ndarray  # int64 [n_train]: of n_in, runs correct on i.
  correct_out: np.ndarray  # int64 [n_train]: of n_out, runs correct on i.

  @property
  def defined(self) -> np.ndarray:
    """Examples both trained on and held out by some run."""
    return (self.n_in > 0) & (self.n_out > 0)

  @property
  def memorization(self) -> np.ndarray:
    """float64 [n_train]: accuracy when trained on minus when held out."""
    return ratio(self.correct_in, self.n_in) - ratio(self.correct_out,
                                                     self.n_out)

  @property
  def memorization_se(self) -> np.ndarray:
    """float64 [n_train]: standard error of `memorization`.

    The difference of two independent Bernoulli means:
    sqrt(p_in (1 - p_in) / n_in + p_out (1 - p_out) / n_out). NaN where
    undefined. It is 0 where both means are 0 or 1: see `se_bound`.
    """
    return np.sqrt(bernoulli_variance_of_mean(self.correct_in, self.n_in) +
                   bernoulli_variance_of_mean(self.correct_out, self.n_out))

  @property
  def se_bound(self) -> np.ndarray:
    """float64 [n_train]: 0.5 sqrt(1 / n_in + 1 / n_out), NaN if undefined.

    The largest standard error any difference of in/out means for this
    training example can have (p (1 - p) <= 1/4): a bound for memorization
    and for every influence infl[j, i] on a test example j.
    """
    return 0.5 * np.sqrt(ratio(1.0, self.n_in) + ratio(1.0, self.n_out))

  @property
  def heldout_accuracy(self) -> np.ndarray:
    """float64 [n_train]: accuracy where held out (C-score at one ratio)."""
    return ratio(self.correct_out, self.n_out)

  @property
  def heldout_accuracy_variance(self) -> np.ndarray:
    """float64 [n_train]: squared standard error of `heldout_accuracy`."""
    return bernoulli_variance_of_mean(self.correct_out, self.n_out)

  @property
  def num_never_held_out(self) -> int:
    return int(np.sum(self.n_out == 0))

  @property
  def num_never_trained(self) -> int:
    return int(np.sum(self.n_in == 0))

  def __add__(self, other: "Counts") -> "Counts":
    """Counts over the union of two disjoint sets of runs."""
    return Counts(**{f.name: getattr(self, f.name) + getattr(other, f.name)
                     for f in dataclasses.fields(self)})


def counts(mask, correct_train=None, rows=None,
           chunk_bytes=COUNT_CHUNK_BYTES) -> Counts:
  """Exact per-example counts over the runs `rows` (int indices; default all).

  Streams over column chunks, so memory-mapped inputs stay within bounds.
  """
  if correct_train is None:
    num_runs, n_train = check_matrices(mask)
  else:
    num_runs, n_train = check_matrices(mask, correct_train=correct_train)
  num_rows = num_runs if rows is None else len(rows)
  rows = slice(None) if rows is None else np.asarray(rows, np.int64)
  n_in = np.zeros(n_train, np.int64)
  correct_in = np.zeros(n_train, np.int64)
  correct_all = np.zeros(n_train, np.int64)
  chunk = max(1, chunk_bytes // num_runs)
  for cols in chunks(n_train, chunk):
    m = np.asarray(mask[rows, cols], bool)
    n_in[cols] = column_sums(m)
    if correct_train is not None:
      c = np.asarray(correct_train[rows, cols], bool)
      correct_all[cols] = column_sums(c)
      correct_in[cols] = column_sums(m & c)
  return Counts(n_in=n_in, n_out=num_rows - n_in, correct_in=correct_in,
                correct_out=correct_all - correct_in)


def _ratio_key(value: float) -> float:
  return UNKNOWN_RATIO if np.isnan(value) else float(value)


@dataclasses.dataclass(frozen=True)
class CountsByRatio:
  """`Counts` per subset ratio: everything memorization and C-scores need.

  `ratios` is sorted; runs of unknown ratio are grouped under NaN (sorted
  first). Adding two merges ratio by ratio: counts of disjoint run shards
  sum to the counts of all runs.
  """
  ratios: Tuple[float, ...] = ()
  per_ratio: Tuple[Counts, ...] = ()

  @property
  def total(self) -> Counts:
    """Counts over every run."""
    if not self.per_ratio:
      raise EstimateError("no runs counted")
    total = self.per_ratio[0]
    for c in self.per_ratio[1:]:
      total = total + c
    return total

  @property
  def runs_per_ratio(self) -> np.ndarray:
    """int64 [ratios]: each ratio's number of runs."""
    return np.array([int(c.n_in[0] + c.n_out[0]) if len(c.n_in) else 0
                     for c in self.per_ratio], np.int64)

  def __add__(self, other: "CountsByRatio") -> "CountsByRatio":
    merged = {_ratio_key(r): (r, c) for r, c in zip(self.ratios,
                                                    self.per_ratio)}
    for r, c in zip(other.ratios, other.per_ratio):
      key = _ratio_key(r)
      merged[key] = (r, merged[key][1] + c) if key in merged else (r, c)
    keys = sorted(merged)
    return CountsByRatio(tuple(merged[k][0] for k in keys),
                         tuple(merged[k][1] for k in keys))


def counts_by_ratio(mask, correct_train, ratios):
  """`(ratio_values [k], [Counts] * k)`: counts over each ratio's runs.

  `ratios` gives each run's subset ratio (float [runs]). One pass over the
  matrices in all; the Counts sum to the counts over every run.
  """
  num_runs, _ = check_matrices(mask, correct_train=correct_train)
  ratios = np.asarray(ratios, np.float64)
  if ratios.shape != (num_runs,):
    raise EstimateError(f"ratios must have one value per run ({num_runs}), "
                        f"has shape {ratios.shape}")
  values = np.unique(ratios)
  if len(values) == 1:  # Every run: a plain slice, no gathered copy.
    return values, [counts(mask, correct_train)]
  return values, [counts(mask, correct_train,
                         rows=np.flatnonzero(ratios == value))
                  for value in values]


def counts_for(runs) -> CountsByRatio:
  """The counts of a `Runs` (all of it, or one shard of a collection).

  The map step of a sharded estimate: `counts_for(a) + counts_for(b)` equals
  `counts_for(a and b together)`.
  """
  keys = np.array([_ratio_key(r) for r in runs.ratios], np.float64)
  values, per_ratio = counts_by_ratio(runs.mask, runs.correct_train, keys)
  ratios = tuple(float("nan") if v == UNKNOWN_RATIO else float(v)
                 for v in values)
  return CountsByRatio(ratios, tuple(per_ratio))
