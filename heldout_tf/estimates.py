"""Memorization, influence and C-score estimates from a collection of runs.

With runs r, mask M[r, i] (run r trained on training example i) and
correctness C_train[r, i], C_test[r, j] (Feldman & Zhang 2020; Jiang et al.
2021):

  mem[i]     = mean_r{C_train[r,i] | M[r,i]} - mean_r{C_train[r,i] | !M[r,i]}
  infl[j, i] = mean_r{C_test[r,j]  | M[r,i]} - mean_r{C_test[r,j]  | !M[r,i]}
  cscore[i]  = mean_r{C_train[r,i] | !M[r,i]}   (held-out accuracy)

Every estimate is a ratio of integer counts. The counts are computed exactly
(0/1 float32 matrix products are exact while counts stay below 2**24) and the
ratios in float64, so results match a plain float64 computation. Where an
example was never held out (or never trained on) its estimate is NaN.

Arrays: `mask` and `correct_train` are bool `[runs, n_train]`, `correct_test`
bool `[runs, n_test]`, columns in canonical example order.
"""

import concurrent.futures
import dataclasses
import functools
import io
import operator
import os
import re
import zipfile

from absl import logging
import numpy as np
import tqdm

from heldout_tf import runs as runs_lib
from heldout_tf import sizes

WHAT = ("mem", "infl", "pairs", "cscores")
DEFAULT_WHAT = ("mem", "pairs", "cscores")
DEFAULT_MEMORY_BUDGET = "4GB"
MAX_EXACT_RUNS = 2**24  # float32 represents every count below this exactly.
_COUNT_CHUNK_BYTES = 64 << 20  # Temporary bool bytes per column chunk.
_UNITS = {"": 1, "B": 1, "K": 2**10, "KB": 2**10, "KIB": 2**10,
          "M": 2**20, "MB": 2**20, "MIB": 2**20, "G": 2**30, "GB": 2**30,
          "GIB": 2**30, "T": 2**40, "TB": 2**40, "TIB": 2**40}


class EstimateError(ValueError):
  """Inputs to an estimator are inconsistent or do not fit in memory."""


# ------------------------------------------------------------------ helpers --


def parse_memory(value) -> int:
  """Bytes in '4GB', '512MB', '1.5G', '1024' or an int (units are 2**10)."""
  if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
    if value <= 0:
      raise EstimateError(f"memory budget must be positive, got {value}")
    return int(value)
  match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", str(value))
  unit = match and match.group(2).upper()
  if not match or unit not in _UNITS:
    raise EstimateError(
        f"cannot parse memory size {value!r}: use e.g. '4GB', '512MB', "
        "'1.5G' or a number of bytes")
  size = int(float(match.group(1)) * _UNITS[unit])
  if size <= 0:
    raise EstimateError(f"memory budget must be positive, got {value!r}")
  return size


def available_memory() -> int:
  """MemAvailable from /proc/meminfo (or physical memory) in bytes."""
  try:
    with open("/proc/meminfo") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _check_matrices(mask, **others):
  """Validates 2-D bool-like matrices that share `mask`'s number of runs."""
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


def _column_sums(array, dtype=np.int64):
  """Per-column number of True values of a bool [runs, n] matrix."""
  array = np.asarray(array)
  if array.dtype == bool:
    array = array.view(np.uint8)
  return np.add.reduce(array, axis=0, dtype=dtype)


def _chunks(n, size):
  for start in range(0, n, size):
    yield slice(start, min(start + size, n))


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
    return _ratio(self.correct_in, self.n_in) - _ratio(self.correct_out,
                                                       self.n_out)

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
           chunk_bytes=_COUNT_CHUNK_BYTES) -> Counts:
  """Exact per-example counts over the runs `rows` (int indices; default all).

  Streams over column chunks, so memory-mapped inputs stay within bounds.
  """
  if correct_train is None:
    num_runs, n_train = _check_matrices(mask)
  else:
    num_runs, n_train = _check_matrices(mask, correct_train=correct_train)
  num_rows = num_runs if rows is None else len(rows)
  rows = slice(None) if rows is None else np.asarray(rows, np.int64)
  n_in = np.zeros(n_train, np.int64)
  correct_in = np.zeros(n_train, np.int64)
  correct_all = np.zeros(n_train, np.int64)
  chunk = max(1, chunk_bytes // num_runs)
  for cols in _chunks(n_train, chunk):
    m = np.asarray(mask[rows, cols], bool)
    n_in[cols] = _column_sums(m)
    if correct_train is not None:
      c = np.asarray(correct_train[rows, cols], bool)
      correct_all[cols] = _column_sums(c)
      correct_in[cols] = _column_sums(m & c)
  return Counts(n_in=n_in, n_out=num_rows - n_in, correct_in=correct_in,
                correct_out=correct_all - correct_in)


def _log_undefined(what, c: Counts):
  if c.num_never_held_out or c.num_never_trained:
    logging.warning(
        "%s is NaN for %d of %d examples: %d never held out, %d never "
        "trained on.", what, int(np.sum(~c.defined)), len(c.n_in),
        c.num_never_held_out, c.num_never_trained)


def _ratio(numerator, denominator):
  with np.errstate(divide="ignore", invalid="ignore"):
    return np.where(denominator > 0,
                    numerator / np.maximum(denominator, 1), np.nan)


# --------------------------------------------------------------- estimators --


def memorization(mask, correct_train) -> np.ndarray:
  """float64 [n_train]; NaN where an example was never/always held out."""
  c = counts(mask, correct_train)
  _log_undefined("memorization", c)
  return c.memorization


def cscores(mask, correct_train) -> np.ndarray:
  """Held-out accuracy, float64 [n_train]; NaN where never held out."""
  c = counts(mask, correct_train)
  if c.num_never_held_out:
    logging.warning("C-score is NaN for %d of %d examples never held out.",
                    c.num_never_held_out, len(c.n_in))
  return _ratio(c.correct_out, c.n_out)


def counts_by_ratio(mask, correct_train, ratios):
  """`(ratio_values [k], [Counts] * k)`: counts over each ratio's runs.

  `ratios` gives each run's subset ratio (float [runs]). One pass over the
  matrices in all; the Counts sum to the counts over every run.
  """
  num_runs, _ = _check_matrices(mask, correct_train=correct_train)
  ratios = np.asarray(ratios, np.float64)
  if ratios.shape != (num_runs,):
    raise EstimateError(f"ratios must have one value per run ({num_runs}), "
                        f"has shape {ratios.shape}")
  values = np.unique(ratios)
  return values, [counts(mask, correct_train,
                         rows=np.flatnonzero(ratios == value))
                  for value in values]


def cscores_by_ratio(mask, correct_train, ratios):
  """`(ratio_values [k], scores [k, n_train])`: held-out accuracy per ratio.

  `ratios` gives each run's subset ratio (float [runs]).
  """
  values, per_ratio = counts_by_ratio(mask, correct_train, ratios)
  return values, _heldout_accuracy(per_ratio)


def _heldout_accuracy(per_ratio):
  return np.stack([_ratio(c.correct_out, c.n_out) for c in per_ratio])


def _average_over_ratios(by_ratio):
  """Per-example mean over the ratios where it is defined (else NaN)."""
  defined = ~np.isnan(by_ratio)
  return _ratio(np.sum(np.where(defined, by_ratio, 0.0), axis=0),
                np.sum(defined, axis=0))


def multi_ratio_cscores(mask, correct_train, ratios) -> np.ndarray:
  """C-score: held-out accuracy averaged over subset ratios (Jiang et al.).

  Averages, per example, over the ratios at which it was held out at least
  once; NaN where no ratio held it out.
  """
  _, by_ratio = cscores_by_ratio(mask, correct_train, ratios)
  scores = _average_over_ratios(by_ratio)
  num_nan = int(np.isnan(scores).sum())
  if num_nan:
    logging.warning("C-score is NaN for %d of %d examples never held out.",
                    num_nan, len(scores))
  return scores


def influence_bytes(num_runs, n_train, n_test, block_rows=128) -> int:
  """Memory `influence` needs: output, float32 inputs and one block."""
  return 4 * (n_test * n_train + num_runs * (n_train + n_test)) + (
      32 * block_rows * n_train)


def influence(mask, correct_test, memory_budget=None) -> np.ndarray:
  """Dense influence, float32 [n_test, n_train]; NaN columns where undefined.

  Refuses (EstimateError naming the memory needed) when the matrix and its
  working memory exceed `memory_budget` (default: the available memory); use
  `high_influence_pairs` then.
  """
  num_runs, n_train = _check_matrices(mask, correct_test=correct_test)
  n_test = correct_test.shape[1]
  budget = (available_memory() if memory_budget is None
            else parse_memory(memory_budget))
  block = 128
  needed = influence_bytes(num_runs, n_train, n_test, block)
  if needed > budget:
    raise EstimateError(
        f"dense influence [{n_test}, {n_train}] float32 needs "
        f"{sizes.format_bytes(4 * n_test * n_train)} "
        f"({sizes.format_bytes(needed)} with working memory), more than the "
        f"{sizes.format_bytes(budget)} budget; use high_influence_pairs "
        "(blocked, bounded memory) instead")
  c = counts(mask)
  _log_undefined("influence", c)
  m = np.asarray(mask, np.float32)
  ct = np.asarray(correct_test, np.float32)
  test_correct = _column_sums(np.asarray(correct_test, bool)).astype(
      np.float64)
  out = np.empty((n_test, n_train), np.float32)
  with np.errstate(divide="ignore", invalid="ignore"):
    for rows in _chunks(n_test, block):
      np.matmul(ct[:, rows].T, m, out=out[rows])  # Exact counts.
      both = out[rows].astype(np.float64)
      infl = both / c.n_in - (test_correct[rows, None] - both) / c.n_out
      out[rows] = infl
  out[:, ~c.defined] = np.nan
  return out


def _gather_columns(array, columns, dtype, chunk_bytes=_COUNT_CHUNK_BYTES):
  """`array[:, columns]` for sorted `columns`, read in contiguous chunks.

  Streams over the columns' span so memory-mapped inputs are read once.
  """
  num_rows = array.shape[0]
  out = np.empty((num_rows, len(columns)), dtype)
  if not len(columns):
    return out
  chunk = max(1, chunk_bytes // num_rows)
  for span in _chunks(int(columns[-1]) + 1 - int(columns[0]), chunk):
    lo, hi = span.start + int(columns[0]), span.stop + int(columns[0])
    k0, k1 = np.searchsorted(columns, [lo, hi])
    if k1 > k0:
      out[:, k0:k1] = np.asarray(array[:, lo:hi])[:, columns[k0:k1] - lo]
  return out


def _pairs_block_rows(num_runs, n_train, n_test, budget, chunk_bytes):
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


def high_influence_pairs(mask, correct_train, correct_test,
                         infl_threshold=0.15, mem_threshold=0.25,
                         memory_budget=DEFAULT_MEMORY_BUDGET, progress=False,
                         known_counts=None) -> dict:
  """Every (train i, test j) with infl >= infl_threshold, mem >= mem_threshold.

  Blocks over the training examples whose memorization passes the threshold,
  with a working set within `memory_budget` (the returned pairs come on
  top); never builds the dense matrix. `known_counts` may pass
  `counts(mask, correct_train)` already computed. Inputs may be memory-mapped.

  Returns the published pairs format: dict of `tr_idx`, `tt_idx` (int64),
  `infl`, `mem` (float64, `mem[tr_idx]`), sorted by (tr_idx, tt_idx).
  """
  num_runs, n_train = _check_matrices(mask, correct_train=correct_train,
                                      correct_test=correct_test)
  n_test = correct_test.shape[1]
  budget = parse_memory(memory_budget)
  chunk_bytes = max(num_runs, min(_COUNT_CHUNK_BYTES, budget // 16))
  block = _pairs_block_rows(num_runs, n_train, n_test, budget, chunk_bytes)
  c = (known_counts if known_counts is not None else
       counts(mask, correct_train, chunk_bytes=chunk_bytes))
  mem = c.memorization
  with np.errstate(invalid="ignore"):
    selected = np.flatnonzero(c.defined & (mem >= mem_threshold))
  ct = np.empty((num_runs, n_test), np.float32)
  for cols in _chunks(n_test, max(1, chunk_bytes // num_runs)):
    ct[:, cols] = correct_test[:, cols]
  test_correct = _column_sums(ct, np.float64)
  test_correct32 = test_correct.astype(np.float32)
  block = min(block, max(1, len(selected)))
  both = np.empty((block, n_test), np.float32)
  threshold = np.empty((block, n_test), np.float32)
  candidate = np.empty((block, n_test), bool)
  # Counts are integers and the float32 threshold is off by far less than
  # the slack, so the candidates hold every pair; float64 then decides.
  slack = 0.5 + 1e-6 * num_runs
  found = {"tr_idx": [], "tt_idx": [], "infl": []}
  for start in tqdm.trange(0, len(selected), block, unit="block",
                           desc="influence pairs", disable=not progress):
    rows = selected[start:start + block]
    b = len(rows)
    m = _gather_columns(mask, rows, np.float32, chunk_bytes)
    np.matmul(m.T, ct, out=both[:b])  # Exact counts both[i, j].
    n_in = c.n_in[rows].astype(np.float64)
    n_out = c.n_out[rows].astype(np.float64)
    # infl >= t  <=>  both >= (t + s_j / n_out) / (1 / n_in + 1 / n_out).
    scale = 1.0 / n_in + 1.0 / n_out
    slope = ((1.0 / n_out) / scale).astype(np.float32)
    offset = (infl_threshold / scale - slack).astype(np.float32)
    np.multiply(slope[:, None], test_correct32[None, :], out=threshold[:b])
    threshold[:b] += offset[:, None]
    np.greater_equal(both[:b], threshold[:b], out=candidate[:b])
    i, j = np.nonzero(candidate[:b])
    count = both[i, j].astype(np.float64)
    infl = count / n_in[i] - (test_correct[j] - count) / n_out[i]
    keep = infl >= infl_threshold
    found["tr_idx"].append(rows[i[keep]])
    found["tt_idx"].append(j[keep])
    found["infl"].append(infl[keep])
  pairs = {
      "tr_idx": np.concatenate(found["tr_idx"] or [[]]).astype(np.int64),
      "tt_idx": np.concatenate(found["tt_idx"] or [[]]).astype(np.int64),
      "infl": np.concatenate(found["infl"] or [[]]).astype(np.float64),
  }
  pairs["mem"] = np.asarray(mem, np.float64)[pairs["tr_idx"]]
  return pairs


# ------------------------------------------------------------------ loading --


@dataclasses.dataclass
class Runs:
  """Every run's subset and correctness, columns in canonical index order."""
  mask: np.ndarray           # bool [runs, n_train]: run trained on example.
  correct_train: np.ndarray  # bool [runs, n_train]
  correct_test: np.ndarray   # bool [runs, n_test]
  ratios: np.ndarray         # float64 [runs]: subset ratio of each run.
  run_ids: np.ndarray        # int64 [runs]
  paths: list                # aux_arrays.npz path of each run ('' if none).
  experiment: str = ""

  @property
  def num_runs(self) -> int:
    return self.mask.shape[0]

  @property
  def n_train(self) -> int:
    return self.mask.shape[1]

  @property
  def n_test(self) -> int:
    return self.correct_test.shape[1]

  @classmethod
  def from_arrays(cls, mask, correct_train, correct_test, ratios=None,
                  run_ids=None, experiment=""):
    """Wraps in-memory matrices (e.g. a pipeline's own output)."""
    mask = np.asarray(mask, bool)
    correct_train = np.asarray(correct_train, bool)
    correct_test = np.asarray(correct_test, bool)
    _check_matrices(mask, correct_train=correct_train,
                    correct_test=correct_test)
    num_runs = mask.shape[0]
    ratios = (np.full(num_runs, np.nan) if ratios is None
              else np.broadcast_to(np.asarray(ratios, np.float64),
                                   (num_runs,)).copy())
    run_ids = (np.arange(num_runs) if run_ids is None
               else np.asarray(run_ids, np.int64))
    return cls(mask, correct_train, correct_test, ratios, run_ids,
               [""] * num_runs, experiment)


def _permutation_error(index, n):
  """Why `index` is not a permutation of 0..n-1, or None."""
  if len(index) != n:
    return f"has {len(index)} entries, expected {n}"
  if n and (index.min() < 0 or index.max() >= n):
    return f"has values outside [0, {n}) (min {index.min()}, max {index.max()})"
  seen = np.zeros(n, bool)
  seen[index] = True
  if not seen.all():
    return (f"repeats indices and misses {n - int(seen.sum())} "
            f"(e.g. {int(np.flatnonzero(~seen)[0])})")
  return None


_NPY_MAGIC = b"\x93NUMPY"
_NPY_HEADER = re.compile(
    r"\{'descr': '([<>|=][a-z][0-9]+)', 'fortran_order': False, "
    r"'shape': \(([0-9]+),?\), \}\s*")


def _npy_array(data: bytes):
  """A 1-D array from .npy bytes; a regex parses the usual header.

  Much faster than `np.load` on small files (no `ast` parse per array);
  anything unusual goes through `np.lib.format` with allow_pickle=False.
  """
  if data[:6] == _NPY_MAGIC and data[6] in (1, 2, 3):
    size = 2 if data[6] == 1 else 4
    start = 8 + size
    header_len = int.from_bytes(data[8:start], "little")
    match = _NPY_HEADER.fullmatch(
        data[start:start + header_len].decode("latin1"))
    if match:
      dtype = np.dtype(match.group(1))
      if dtype.kind in "biuf":
        return np.frombuffer(data, dtype, int(match.group(2)),
                             start + header_len)
  return np.lib.format.read_array(io.BytesIO(data), allow_pickle=False)


def read_aux_fast(path) -> dict:
  """`runs.read_aux`, with a faster npz reader for loading thousands."""
  try:
    with zipfile.ZipFile(path) as zf:
      aux = {name[:-4]: _npy_array(zf.read(name)) for name in zf.namelist()
             if name.endswith(".npy")}
  except FileNotFoundError:
    raise runs_lib.AuxArraysError(f"{path}: file not found") from None
  except Exception as e:  # Truncated / corrupt zip, pickled objects.
    raise runs_lib.AuxArraysError(f"{path}: cannot read ({e})") from e
  return runs_lib.validate_aux(aux, path)


def _fill_run(path, sizes, row, mask, correct_train, correct_test):
  """Validates one run's aux arrays and writes its row of each matrix."""
  aux = read_aux_fast(path)
  n_train, n_test = sizes
  err = runs_lib.AuxArraysError
  train, removed = aux["index_train"], aux["index_removed"]
  covered = np.concatenate([train, removed])
  problem = _permutation_error(covered, n_train)
  if problem:
    raise err(f"{path}: keys 'index_train' + 'index_removed' must cover "
              f"the {n_train} training examples exactly once, but {problem}")
  problem = _permutation_error(aux["index_test"], n_test)
  if problem:
    raise err(f"{path}: key 'index_test' must cover the {n_test} test "
              f"examples exactly once, but {problem}")
  subsample = aux["subsample_idx"]
  in_range = len(subsample) == 0 or (subsample.min() >= 0 and
                                     subsample.max() < n_train)
  if not np.issubdtype(subsample.dtype, np.integer) or not in_range:
    raise err(f"{path}: key 'subsample_idx' must hold training indices in "
              f"[0, {n_train}), has dtype {subsample.dtype}")
  mask[row] = False
  mask[row, train] = True
  hit = np.zeros(n_train, bool)
  hit[subsample] = True
  if (len(subsample) != len(train) or int(hit.sum()) != len(subsample)
      or not mask[row, subsample].all()):
    raise err(f"{path}: key 'subsample_idx' ({len(subsample)} entries, "
              f"{int(hit.sum())} distinct) is not the set of 'index_train' "
              f"({len(train)} entries)")
  correct_train[row, train] = aux["correctness_train"]
  correct_train[row, removed] = aux["correctness_removed"]
  correct_test[row, aux["index_test"]] = aux["correctness_test"]


def _sizes(path):
  aux = read_aux_fast(path)
  return (len(aux["index_train"]) + len(aux["index_removed"]),
          len(aux["index_test"]))


def load_runs(root, experiment, ratios=None, progress=True, num_threads=4,
              mmap_dir=None) -> Runs:
  """Reads every `<root>/<experiment>/<ratio>/<run>/aux_arrays.npz`.

  Validates keys, shapes, index coverage and `subsample_idx` consistency
  (runs.AuxArraysError naming the file and key) and that all runs share
  n_train and n_test. Runs are ordered by (ratio, run id). With `mmap_dir`
  the matrices are memory-mapped `mask.npy`, `correct_train.npy` and
  `correct_test.npy` there (overwritten), not held in memory: ImageNet's
  2000 runs take 5.2 GB as bool.
  """
  found = runs_lib.list_runs(root, experiment, ratios)
  if not found:
    where = os.path.join(root, experiment)
    raise EstimateError(f"no runs under {where}" + (
        f" for ratios {list(ratios)}" if ratios is not None else ""))
  paths = [os.path.join(path, runs_lib.AUX_FILENAME) for _, _, path in found]
  n_train, n_test = _sizes(paths[0])
  num_runs = len(paths)

  def empty(name, n):
    if mmap_dir is None:
      return np.empty((num_runs, n), bool)
    os.makedirs(mmap_dir, exist_ok=True)
    return np.lib.format.open_memmap(os.path.join(mmap_dir, f"{name}.npy"),
                                     "w+", bool, (num_runs, n))

  mask = empty("mask", n_train)
  correct_train = empty("correct_train", n_train)
  correct_test = empty("correct_test", n_test)

  def fill(row):
    try:
      _fill_run(paths[row], (n_train, n_test), row, mask, correct_train,
                correct_test)
    except runs_lib.AuxArraysError as e:
      if _sizes(paths[row]) != (n_train, n_test):
        raise runs_lib.AuxArraysError(
            f"{paths[row]}: keys 'index_train' + 'index_removed', "
            f"'index_test' give (n_train, n_test) = {_sizes(paths[row])} but "
            f"{paths[0]} has {(n_train, n_test)}") from e
      raise

  with concurrent.futures.ThreadPoolExecutor(num_threads) as pool:
    for _ in tqdm.tqdm(pool.map(fill, range(num_runs)), total=num_runs,
                       unit="run", desc=f"loading {experiment}",
                       disable=not progress):
      pass
  return Runs(mask=mask, correct_train=correct_train,
              correct_test=correct_test,
              ratios=np.array([float(r) for r, _, _ in found]),
              run_ids=np.array([run for _, run, _ in found], np.int64),
              paths=paths, experiment=experiment)


# -------------------------------------------------------------- entry point --


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


def compute(runs: Runs, what=DEFAULT_WHAT, infl_threshold=0.15,
            mem_threshold=0.25, memory_budget=DEFAULT_MEMORY_BUDGET,
            labels=None, progress=True) -> dict:
  """Computes the requested estimates; returns a dict of numpy arrays.

  Keys: always `experiment`, `num_runs`, `n_train`, `n_test`, `ratios`,
  `runs_per_ratio`, `n_in`, `n_out`,
  `num_never_held_out`, `num_never_trained`; 'mem' -> `memorization`,
  `num_nan_memorization`; 'infl' -> `influence` [n_test, n_train] float32;
  'pairs' -> `tr_idx`, `tt_idx`, `infl`, `mem`, `infl_threshold`,
  `mem_threshold`; 'cscores' -> `cscores` (averaged over ratios),
  `cscores_by_ratio` [ratios, n_train], `num_nan_cscores`; `labels` if
  given (checked first: shape [n_train]).
  """
  what = parse_what(what)
  if labels is not None:
    labels = np.asarray(labels)
    if labels.shape != (runs.n_train,):
      raise EstimateError(f"labels must have shape ({runs.n_train},), has "
                          f"{labels.shape}")
  if "cscores" in what:  # Per-ratio counts, summed: one pass, not two.
    _, counts_per_ratio = counts_by_ratio(
        runs.mask, runs.correct_train, np.nan_to_num(runs.ratios, nan=-1.0))
    c = functools.reduce(operator.add, counts_per_ratio)
  else:
    c = counts(runs.mask, runs.correct_train)
  ratio_values, per_ratio = np.unique(runs.ratios, return_counts=True)
  result = {
      "experiment": np.array(runs.experiment),
      "num_runs": np.array(runs.num_runs),
      "n_train": np.array(runs.n_train),
      "n_test": np.array(runs.n_test),
      "ratios": ratio_values,
      "runs_per_ratio": per_ratio,
      "n_in": c.n_in,
      "n_out": c.n_out,
      "num_never_held_out": np.array(c.num_never_held_out),
      "num_never_trained": np.array(c.num_never_trained),
  }
  mem = c.memorization
  _log_undefined("memorization and influence", c)
  if "mem" in what:
    result["memorization"] = mem
    result["num_nan_memorization"] = np.array(int(np.isnan(mem).sum()))
  if "infl" in what:
    result["influence"] = influence(runs.mask, runs.correct_test,
                                    memory_budget)
  if "pairs" in what:
    result.update(high_influence_pairs(
        runs.mask, runs.correct_train, runs.correct_test, infl_threshold,
        mem_threshold, memory_budget, progress=progress, known_counts=c))
    result["infl_threshold"] = np.array(float(infl_threshold))
    result["mem_threshold"] = np.array(float(mem_threshold))
  if "cscores" in what:
    by_ratio = _heldout_accuracy(counts_per_ratio)
    scores = _average_over_ratios(by_ratio)
    result["cscores"] = scores
    result["cscores_by_ratio"] = by_ratio
    result["num_nan_cscores"] = np.array(int(np.isnan(scores).sum()))
  if labels is not None:
    result["labels"] = labels
  return result


def summary(result: dict, top=10) -> str:
  """A few lines: counts, NaNs, top memorized examples, pairs."""
  ratios = ", ".join(f"{r:g}: {n}" for r, n in zip(result["ratios"],
                                                   result["runs_per_ratio"]))
  lines = [f"{int(result['num_runs'])} runs (runs per ratio: {ratios}), "
           f"{int(result['n_train'])} training and "
           f"{int(result['n_test'])} test examples",
           f"never held out: {int(result['num_never_held_out'])}, never "
           f"trained on: {int(result['num_never_trained'])} (their "
           "estimates are NaN)"]
  if "memorization" in result:
    mem = result["memorization"]
    lines.append(f"memorization: mean {np.nanmean(mem):.4f}, NaN "
                 f"{int(result['num_nan_memorization'])}")
    order = np.argsort(-np.nan_to_num(mem, nan=-np.inf), kind="stable")
    tops = ", ".join(f"#{i}: {mem[i]:.3f}" for i in order[:top]
                     if not np.isnan(mem[i]))
    lines.append(f"top memorized: {tops}")
  if "influence" in result:
    lines.append(f"influence: dense {result['influence'].shape} float32")
  if "tr_idx" in result:
    lines.append(
        f"high-influence pairs (infl >= {float(result['infl_threshold']):g},"
        f" mem >= {float(result['mem_threshold']):g}): "
        f"{len(result['tr_idx'])} pairs, "
        f"{len(np.unique(result['tr_idx']))} train / "
        f"{len(np.unique(result['tt_idx']))} test examples")
  if "cscores" in result:
    lines.append(f"C-scores: mean {np.nanmean(result['cscores']):.4f} over "
                 f"{result['cscores_by_ratio'].shape[0]} ratio(s), NaN "
                 f"{int(result['num_nan_cscores'])}")
  return "\n".join(lines)


def save_estimates(path, result: dict):
  """Atomically writes `result` (from `compute`) as an npz file."""
  runs_lib.save_npz(path, **{k: np.asarray(v) for k, v in result.items()})


def save_pairs(path, pairs: dict):
  """Writes the published pairs format (`tr_idx`, `tt_idx`, `infl`, `mem`)."""
  runs_lib.save_npz(path, **{k: pairs[k] for k in ("tr_idx", "tt_idx",
                                                    "infl", "mem")})


def save_cscores(path, scores, labels):
  """Writes the published C-score format (`labels`, `scores`)."""
  scores, labels = np.asarray(scores), np.asarray(labels)
  if scores.shape != labels.shape or scores.ndim != 1:
    raise EstimateError(f"scores {scores.shape} and labels {labels.shape} "
                        "must be 1-D of the same length")
  runs_lib.save_npz(path, labels=labels, scores=scores)
