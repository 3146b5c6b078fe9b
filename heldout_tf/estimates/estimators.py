"""Memorization, influence, high-influence pairs and C-scores from matrices.

Inputs: `mask` and `correct_train` bool `[runs, n_train]`, `correct_test`
bool `[runs, n_test]` (numpy arrays or memory-mapped). Each estimate is a
ratio of exact integer counts computed in float64 (see `counting`); NaN
where an example was never held out (or never trained on).

High-influence pairs are found block by block (`pairs_in_block`) with a
bounded working set; blocks are independent, so they can also be mapped
over workers and joined with `merge_pairs`.
"""

from absl import logging
import numpy as np

from heldout_tf.core import progress as progress_lib
from heldout_tf.core import sizes
from heldout_tf.estimates import counting
from heldout_tf.estimates.counting import EstimateError

DEFAULT_MEMORY_BUDGET = "4GB"
PAIR_KEYS = ("tr_idx", "tt_idx", "infl", "mem")
_DENSE_BLOCK_ROWS = 128


def log_undefined(what, c: counting.Counts):
  """Warns how many examples' estimates are NaN, and why."""
  if c.num_never_held_out or c.num_never_trained:
    logging.warning(
        "%s is NaN for %d of %d examples: %d never held out, %d never "
        "trained on.", what, int(np.sum(~c.defined)), len(c.n_in),
        c.num_never_held_out, c.num_never_trained)


def memorization(mask, correct_train) -> np.ndarray:
  """float64 [n_train]; NaN where an example was never/always held out."""
  c = counting.counts(mask, correct_train)
  log_undefined("memorization", c)
  return c.memorization


def cscores(mask, correct_train) -> np.ndarray:
  """Held-out accuracy, float64 [n_train]; NaN where never held out."""
  c = counting.counts(mask, correct_train)
  if c.num_never_held_out:
    logging.warning("C-score is NaN for %d of %d examples never held out.",
                    c.num_never_held_out, len(c.n_in))
  return c.heldout_accuracy


def cscores_by_ratio(mask, correct_train, ratios):
  """`(ratio_values [k], scores [k, n_train])`: held-out accuracy per ratio.

  `ratios` gives each run's subset ratio (float [runs]).
  """
  values, per_ratio = counting.counts_by_ratio(mask, correct_train, ratios)
  return values, heldout_accuracy(per_ratio)


def heldout_accuracy(per_ratio) -> np.ndarray:
  """float64 [ratios, n_train] from a sequence of each ratio's Counts."""
  return np.stack([c.heldout_accuracy for c in per_ratio])


def average_over_ratios(by_ratio) -> np.ndarray:
  """Per-example mean over the ratios where it is defined (else NaN)."""
  defined = ~np.isnan(by_ratio)
  return counting.ratio(np.sum(np.where(defined, by_ratio, 0.0), axis=0),
                        np.sum(defined, axis=0))


def averaged_se(variance_by_ratio) -> np.ndarray:
  """Standard error of `average_over_ratios`: sqrt(sum var) / k, float64.

  `variance_by_ratio` [ratios, n] holds each ratio's squared standard error
  (NaN where that ratio never held the example out).
  """
  defined = ~np.isnan(variance_by_ratio)
  total = np.sum(np.where(defined, variance_by_ratio, 0.0), axis=0)
  return counting.ratio(np.sqrt(total), np.sum(defined, axis=0))


def multi_ratio_cscores(mask, correct_train, ratios) -> np.ndarray:
  """C-score: held-out accuracy averaged over subset ratios (Jiang et al.).

  Averages, per example, over the ratios at which it was held out at least
  once; NaN where no ratio held it out.
  """
  _, by_ratio = cscores_by_ratio(mask, correct_train, ratios)
  scores = average_over_ratios(by_ratio)
  num_nan = int(np.isnan(scores).sum())
  if num_nan:
    logging.warning("C-score is NaN for %d of %d examples never held out.",
                    num_nan, len(scores))
  return scores


def memory_budget_bytes(memory_budget) -> int:
  """Bytes of a budget ('4GB', an int); None means the available memory."""
  if memory_budget is None:
    return sizes.available_memory()
  return sizes.parse_bytes(memory_budget, "memory budget")


def influence_bytes(num_runs, n_train, n_test,
                    block_rows=_DENSE_BLOCK_ROWS) -> int:
  """Memory `influence` needs: output, float32 inputs and one block."""
  return 4 * (n_test * n_train + num_runs * (n_train + n_test)) + (
      32 * block_rows * n_train)


def influence(mask, correct_test, memory_budget=None) -> np.ndarray:
  """Dense influence, float32 [n_test, n_train]; NaN columns where undefined.

  Refuses (EstimateError naming the memory needed) when the matrix and its
  working memory exceed `memory_budget` (default: the available memory); use
  `high_influence_pairs` then.
  """
  num_runs, n_train = counting.check_matrices(mask, correct_test=correct_test)
  n_test = correct_test.shape[1]
  budget = memory_budget_bytes(memory_budget)
  block = _DENSE_BLOCK_ROWS
  needed = influence_bytes(num_runs, n_train, n_test, block)
  if needed > budget:
    raise EstimateError(
        f"dense influence [{n_test}, {n_train}] float32 needs "
        f"{sizes.format_bytes(4 * n_test * n_train)} "
        f"({sizes.format_bytes(needed)} with working memory), more than the "
        f"{sizes.format_bytes(budget)} budget; use high_influence_pairs "
        "(blocked, bounded memory) instead")
  c = counting.counts(mask)
  log_undefined("influence", c)
  m = np.asarray(mask, np.float32)
  ct = np.asarray(correct_test, np.float32)
  test_correct = counting.column_sums(np.asarray(correct_test, bool)).astype(
      np.float64)
  out = np.empty((n_test, n_train), np.float32)
  with np.errstate(divide="ignore", invalid="ignore"):
    for rows in counting.chunks(n_test, block):
      np.matmul(ct[:, rows].T, m, out=out[rows])  # Exact counts.
      both = out[rows].astype(np.float64)
      infl = both / c.n_in - (test_correct[rows, None] - both) / c.n_out
      out[rows] = infl
  out[:, ~c.defined] = np.nan
  return out


def gather_columns(array, columns, dtype,
                   chunk_bytes=counting.COUNT_CHUNK_BYTES) -> np.ndarray:
  """`array[:, columns]` for sorted `columns`, read in contiguous chunks.

  Streams over the columns' span so memory-mapped inputs are read once.
  """
  num_rows = array.shape[0]
  out = np.empty((num_rows, len(columns)), dtype)
  if not len(columns):
    return out
  chunk = max(1, chunk_bytes // num_rows)
  for span in counting.chunks(int(columns[-1]) + 1 - int(columns[0]), chunk):
    lo, hi = span.start + int(columns[0]), span.stop + int(columns[0])
    k0, k1 = np.searchsorted(columns, [lo, hi])
    if k1 > k0:
      out[:, k0:k1] = np.asarray(array[:, lo:hi])[:, columns[k0:k1] - lo]
  return out


def pairs_block_rows(num_runs, n_train, n_test, budget, chunk_bytes) -> int:
  """Train rows per block so the pairs working set fits in `budget`."""
  # Float32 correct_test, per-example counts, chunked bool temporaries.
  fixed = (4 * num_runs * n_test + 16 * n_test + 64 * n_train +
           3 * chunk_bytes)
  per_row = 9 * n_test + 4 * num_runs + 64
  rows = (budget - fixed) // per_row
  if rows < 1:
    raise EstimateError(
        f"memory budget {sizes.format_bytes(budget)} is too small for "
        f"{num_runs} runs x {n_train} train x {n_test} test examples: "
        "high_influence_pairs "
        f"needs at least {sizes.format_bytes(fixed + per_row)}")
  return int(rows)


def pairs_in_block(mask_block, correct_test, n_in, n_out, test_correct,
                   infl_threshold, train_rows, test_cols=None,
                   scratch=None) -> dict:
  """The pairs of one block of training rows x test columns.

  The map step of a sharded pairs search: blocks are independent, and any
  tiling of (selected training rows) x (test examples) joined with
  `merge_pairs` gives exactly `high_influence_pairs`' result.

  Args:
    mask_block: float32 [runs, b]: `mask[:, train_rows]`.
    correct_test: float32 [runs, t]: `correct_test[:, test_cols]`.
    n_in, n_out: int [b]: `Counts.n_in/n_out[train_rows]` over ALL runs.
    test_correct: float64 [t]: runs correct on each test column (all runs).
    infl_threshold: keep pairs with infl >= this.
    train_rows: int [b] training indices of the block's rows.
    test_cols: int [t] test indices of the block's columns (default 0..t-1).
    scratch: optional (both, threshold, candidate) arrays of at least
      [b, t] (float32, float32, bool), reused between blocks.

  Returns:
    dict `tr_idx`, `tt_idx` (int64), `infl` (float64), sorted by (tr, tt).
  """
  num_runs, b = mask_block.shape
  t = correct_test.shape[1]
  if scratch is None:
    scratch = (np.empty((b, t), np.float32), np.empty((b, t), np.float32),
               np.empty((b, t), bool))
  both, threshold, candidate = (s[:b, :t] if s.shape != (b, t) else s
                                for s in scratch)
  np.matmul(mask_block.T, correct_test, out=both)  # Exact counts both[i, j].
  n_in = np.asarray(n_in, np.float64)
  n_out = np.asarray(n_out, np.float64)
  test_correct = np.asarray(test_correct, np.float64)
  # infl >= t  <=>  both >= (t + s_j / n_out) / (1 / n_in + 1 / n_out).
  # Counts are integers and the float32 threshold is off by far less than
  # the slack, so the candidates hold every pair; float64 then decides.
  slack = 0.5 + 1e-6 * num_runs
  scale = 1.0 / n_in + 1.0 / n_out
  slope = ((1.0 / n_out) / scale).astype(np.float32)
  offset = (infl_threshold / scale - slack).astype(np.float32)
  np.multiply(slope[:, None], test_correct.astype(np.float32)[None, :],
              out=threshold)
  threshold += offset[:, None]
  np.greater_equal(both, threshold, out=candidate)
  i, j = np.nonzero(candidate)
  count = both[i, j].astype(np.float64)
  infl = count / n_in[i] - (test_correct[j] - count) / n_out[i]
  keep = infl >= infl_threshold
  test_cols = j if test_cols is None else np.asarray(test_cols)[j]
  return {"tr_idx": np.asarray(train_rows, np.int64)[i[keep]],
          "tt_idx": np.asarray(test_cols[keep], np.int64),
          "infl": infl[keep]}


def merge_pairs(blocks, mem) -> dict:
  """Joins `pairs_in_block` results: sorted by (tr_idx, tt_idx), + `mem`.

  `mem` is float [n_train] memorization (`Counts.memorization`).
  """
  blocks = list(blocks)
  pairs = {key: np.concatenate([b[key] for b in blocks] or [[]]).astype(
      np.float64 if key == "infl" else np.int64)
           for key in ("tr_idx", "tt_idx", "infl")}
  order = np.lexsort((pairs["tt_idx"], pairs["tr_idx"]))
  if np.any(np.diff(order) != 1):
    pairs = {key: value[order] for key, value in pairs.items()}
  pairs["mem"] = np.asarray(mem, np.float64)[pairs["tr_idx"]]
  return pairs


def selected_rows(c: counting.Counts, mem_threshold) -> np.ndarray:
  """int64 training indices whose memorization passes `mem_threshold`."""
  with np.errstate(invalid="ignore"):
    return np.flatnonzero(c.defined & (c.memorization >= mem_threshold))


def high_influence_pairs(mask, correct_train, correct_test,
                         infl_threshold=0.15, mem_threshold=0.25,
                         memory_budget=DEFAULT_MEMORY_BUDGET, progress=False,
                         known_counts=None) -> dict:
  """Every (train i, test j) with infl >= infl_threshold, mem >= mem_threshold.

  Blocks over the training examples whose memorization passes the threshold
  (`pairs_in_block`), with a working set within `memory_budget` (the
  returned pairs come on top); never builds the dense matrix. `known_counts`
  may pass `counts(mask, correct_train)` already computed. Inputs may be
  memory-mapped.

  Returns the published pairs format: dict of `tr_idx`, `tt_idx` (int64),
  `infl`, `mem` (float64, `mem[tr_idx]`), sorted by (tr_idx, tt_idx).
  """
  num_runs, n_train = counting.check_matrices(
      mask, correct_train=correct_train, correct_test=correct_test)
  n_test = correct_test.shape[1]
  budget = sizes.parse_bytes(memory_budget, "memory budget")
  chunk_bytes = max(num_runs, min(counting.COUNT_CHUNK_BYTES, budget // 16))
  block = pairs_block_rows(num_runs, n_train, n_test, budget, chunk_bytes)
  c = (known_counts if known_counts is not None else
       counting.counts(mask, correct_train, chunk_bytes=chunk_bytes))
  selected = selected_rows(c, mem_threshold)
  ct = np.empty((num_runs, n_test), np.float32)
  for cols in counting.chunks(n_test, max(1, chunk_bytes // num_runs)):
    ct[:, cols] = correct_test[:, cols]
  test_correct = counting.column_sums(ct, np.float64)
  block = min(block, max(1, len(selected)))
  scratch = (np.empty((block, n_test), np.float32),
             np.empty((block, n_test), np.float32),
             np.empty((block, n_test), bool))
  found = []
  starts = range(0, len(selected), block)
  with progress_lib.bar(len(starts), "influence pairs", "block",
                        enabled=progress) as bar:
    for start in starts:
      rows = selected[start:start + block]
      found.append(pairs_in_block(
          gather_columns(mask, rows, np.float32, chunk_bytes), ct,
          c.n_in[rows], c.n_out[rows], test_correct, infl_threshold, rows,
          scratch=scratch))
      bar.update(1)
  return merge_pairs(found, c.memorization)
