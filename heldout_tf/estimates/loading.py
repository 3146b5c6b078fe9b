"""Loading a collection's `aux_arrays.npz` files into [runs, examples] matrices.

`load_runs(root, experiment)` finds the runs with `heldout_tf.collection.layout` and
reads each file with `heldout_tf.collection.runs.read_aux` (the one aux reader).
`load_runs_from(run_paths)` loads an explicit list of runs: a shard of a
collection for a distributed map (see `counting.counts_for`).

A `target` other than 'correct' ('margin', 'probability') also reads each
run's `margins.npz` (`heldout_tf.collection.margins.read`, checked against
the run's aux arrays) into float32 `[runs, examples]` matrices.
"""

import concurrent.futures
import dataclasses
import os
from typing import Optional, Sequence

import numpy as np

from heldout_tf.core import errors
from heldout_tf.collection import layout
from heldout_tf.collection import margins as margins_lib
from heldout_tf.core import progress as progress_lib
from heldout_tf.collection import runs as runs_lib
from heldout_tf.estimates import counting
from heldout_tf.estimates.counting import EstimateError


# What an estimate can be of, per run and example: the 0/1 correctness of
# the aux arrays, or a value of margins.npz.
TARGETS = ("correct",) + margins_lib.KINDS


def check_target(target: str) -> str:
  if target not in TARGETS:
    raise EstimateError(f"unknown target {target!r}: choose from "
                        f"{', '.join(TARGETS)}")
  return target


@dataclasses.dataclass
class Runs:
  """Every run's subset and correctness, columns in canonical index order;
  with a target other than 'correct', its values too."""
  mask: np.ndarray           # bool [runs, n_train]: run trained on example.
  correct_train: np.ndarray  # bool [runs, n_train]
  correct_test: np.ndarray   # bool [runs, n_test]
  ratios: np.ndarray         # float64 [runs]: subset ratio of each run.
  run_ids: np.ndarray        # int64 [runs]
  paths: list                # aux_arrays.npz path of each run ('' if none).
  experiment: str = ""
  target: str = "correct"    # What `values_*` hold ('correct': None).
  values_train: Optional[np.ndarray] = None  # float32 [runs, n_train]
  values_test: Optional[np.ndarray] = None   # float32 [runs, n_test]

  @property
  def num_runs(self) -> int:
    return self.mask.shape[0]

  @property
  def n_train(self) -> int:
    return self.mask.shape[1]

  @property
  def n_test(self) -> int:
    return self.correct_test.shape[1]

  def target_values(self, split: str) -> np.ndarray:
    """The target on `split` ('train' or 'test'): `[runs, n]`, bool for
    'correct', float32 otherwise."""
    if self.target == "correct":
      return self.correct_train if split == "train" else self.correct_test
    values = self.values_train if split == "train" else self.values_test
    if values is None:
      raise EstimateError(f"these runs hold no {self.target} values: load "
                          f"them with target={self.target!r}")
    return values

  @classmethod
  def from_arrays(cls, mask, correct_train, correct_test, ratios=None,
                  run_ids=None, experiment="", target="correct",
                  values_train=None, values_test=None):
    """Wraps in-memory matrices (e.g. a pipeline's own output); a target
    other than 'correct' needs its float `values_train` and `values_test`
    `[runs, n]`."""
    mask = np.asarray(mask, bool)
    correct_train = np.asarray(correct_train, bool)
    correct_test = np.asarray(correct_test, bool)
    counting.check_matrices(mask, correct_train=correct_train,
                            correct_test=correct_test)
    num_runs = mask.shape[0]
    ratios = (np.full(num_runs, np.nan) if ratios is None
              else np.broadcast_to(np.asarray(ratios, np.float64),
                                   (num_runs,)).copy())
    run_ids = (np.arange(num_runs) if run_ids is None
               else np.asarray(run_ids, np.int64))
    if check_target(target) != "correct":
      values_train = np.asarray(values_train, np.float32)
      values_test = np.asarray(values_test, np.float32)
      if (values_train.shape != mask.shape or
          values_test.shape != correct_test.shape):
        raise EstimateError(
            f"{target} values must be [runs, n_train] {mask.shape} and "
            f"[runs, n_test] {correct_test.shape}, have "
            f"{values_train.shape} and {values_test.shape}")
    else:
      values_train = values_test = None
    return cls(mask, correct_train, correct_test, ratios, run_ids,
               [""] * num_runs, experiment, target, values_train,
               values_test)


def _permutation_error(index, n) -> Optional[str]:
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


def _sizes(aux) -> tuple:
  """(n_train, n_test) one run's aux arrays describe."""
  return (len(aux["index_train"]) + len(aux["index_removed"]),
          len(aux["index_test"]))


def _check_run(aux, path, n_train, n_test):
  """Index coverage and `subsample_idx` checks; AuxArraysError naming keys."""
  err = runs_lib.AuxArraysError
  covered = np.concatenate([aux["index_train"], aux["index_removed"]])
  problem = _permutation_error(covered, n_train)
  if problem:
    raise err(f"{path}: keys 'index_train' + 'index_removed' must cover "
              f"the {n_train} training examples exactly once, but {problem}")
  problem = _permutation_error(aux["index_test"], n_test)
  if problem:
    raise err(f"{path}: key 'index_test' must cover the {n_test} test "
              f"examples exactly once, but {problem}")
  subsample, train = aux["subsample_idx"], aux["index_train"]
  if len(subsample) and (subsample.min() < 0 or subsample.max() >= n_train):
    raise err(f"{path}: key 'subsample_idx' must hold training indices in "
              f"[0, {n_train}), has values from {subsample.min()} to "
              f"{subsample.max()}")
  trained = np.zeros(n_train, bool)
  trained[train] = True
  hit = np.zeros(n_train, bool)
  hit[subsample] = True
  if (len(subsample) != len(train) or int(hit.sum()) != len(subsample)
      or not trained[subsample].all()):
    raise err(f"{path}: key 'subsample_idx' ({len(subsample)} entries, "
              f"{int(hit.sum())} distinct) is not the set of 'index_train' "
              f"({len(train)} entries)")
  return trained


def _fill_run(path, sizes, row, matrices, target):
  """Reads and checks one run's aux arrays (and, for a target other than
  'correct', its margins.npz); writes its row of each matrix it has."""
  n_train, n_test = sizes
  aux = runs_lib.read_aux(path, n_train=n_train, n_test=n_test)
  if _sizes(aux) != sizes:
    raise runs_lib.AuxArraysError(
        f"{path}: keys 'index_train' + 'index_removed', 'index_test' give "
        f"(n_train, n_test) = {_sizes(aux)} but the first run has {sizes}")
  matrices["mask"][row] = _check_run(aux, path, n_train, n_test)
  sources = {"correct": aux}
  if target != "correct":
    sources[target] = margins_lib.read(
        margins_lib.margins_path(os.path.dirname(path)), aux=aux)
  for kind, arrays in sources.items():
    prefix = "correct" if kind == "correct" else "values"
    key = "correctness" if kind == "correct" else kind
    for split, into in (("train", "train"), ("removed", "train"),
                        ("test", "test")):
      out = matrices.get(f"{prefix}_{into}")
      if out is not None:
        out[row, aux[f"index_{split}"]] = arrays[f"{key}_{split}"]


def _matrices(num_runs, n_train, n_test, mmap_dir, target, target_splits):
  """Empty bool mask, correct_train, correct_test and (for a target other
  than 'correct') float32 values_<split> of `target_splits`: memory-mapped
  or not."""

  def empty(name, n, dtype=bool):
    if mmap_dir is None:
      return np.empty((num_runs, n), dtype)
    with errors.user_path(mmap_dir, "write"):
      os.makedirs(mmap_dir, exist_ok=True)
      return np.lib.format.open_memmap(os.path.join(mmap_dir, f"{name}.npy"),
                                       "w+", dtype, (num_runs, n))

  matrices = {"mask": empty("mask", n_train),
              "correct_train": empty("correct_train", n_train),
              "correct_test": empty("correct_test", n_test)}
  if target != "correct":
    for split in target_splits:
      matrices[f"values_{split}"] = empty(
          f"{target}_{split}", n_train if split == "train" else n_test,
          np.float32)
  return matrices


def load_runs_from(aux_paths: Sequence[str], ratios=None, run_ids=None,
                   experiment="", progress=True, num_threads=4,
                   mmap_dir=None, target="correct",
                   target_splits=("train", "test")) -> Runs:
  """Loads the given `aux_arrays.npz` files (or run directories), in order.

  The per-shard loader of a distributed estimate: each worker loads its
  shard of a collection and returns `counting.counts_for(runs)`; the sum of
  those equals the counts of `load_runs` on the whole collection.

  Args:
    aux_paths: each run's `aux_arrays.npz` or run directory.
    ratios: each run's subset ratio (float [runs]; default NaN).
    run_ids: each run's id (int [runs]; default 0..runs-1).
    experiment: name stored in the result.
    progress: show a progress bar.
    num_threads: files read in parallel.
    mmap_dir: keep the matrices in memory-mapped `mask.npy`,
      `correct_train.npy`, `correct_test.npy` (and `<target>_train.npy`,
      `<target>_test.npy`) there (overwritten).
    target: 'correct', or 'margin' / 'probability' to read each run's
      margins.npz too (`TARGETS`).
    target_splits: which of the target's values to keep ('train', 'test');
      e.g. ('test',) for datamodels, which need no training-set margins.

  Raises:
    runs_lib.AuxArraysError naming the file and key at fault (bad or
    inconsistent arrays, a run with other (n_train, n_test) than the first);
    margins.MarginsError for a missing or bad margins.npz.
  """
  check_target(target)
  paths = [runs_lib.aux_file(p) for p in aux_paths]
  if not paths:
    raise EstimateError("no runs to load")
  num_runs = len(paths)
  sizes = _sizes(runs_lib.read_aux(paths[0]))
  if set(target_splits) - {"train", "test"}:
    raise EstimateError(f"target_splits must name 'train' and/or 'test', "
                        f"got {target_splits}")
  matrices = _matrices(num_runs, *sizes, mmap_dir, target, target_splits)

  def fill(row):
    _fill_run(paths[row], sizes, row, matrices, target)

  pool = concurrent.futures.ThreadPoolExecutor(num_threads)
  try:
    with progress_lib.bar(num_runs, f"loading {experiment or 'runs'}", "run",
                          enabled=progress) as bar:
      for _ in pool.map(fill, range(num_runs)):
        bar.update(1)
  finally:  # On a bad file (or Ctrl-C), do not read the rest first.
    pool.shutdown(wait=True, cancel_futures=True)
  ratios = (np.full(num_runs, np.nan) if ratios is None
            else np.asarray(ratios, np.float64))
  run_ids = (np.arange(num_runs, dtype=np.int64) if run_ids is None
             else np.asarray(run_ids, np.int64))
  return Runs(mask=matrices["mask"], correct_train=matrices["correct_train"],
              correct_test=matrices["correct_test"], ratios=ratios,
              run_ids=run_ids, paths=paths, experiment=experiment,
              target=target, values_train=matrices.get("values_train"),
              values_test=matrices.get("values_test"))


def find_runs(root, experiment, ratios=None, run_ids=None):
  """`[layout.RunPath]` of a collection's runs, all or those with the ids
  `run_ids` (at every ratio); EstimateError if none, or if an asked-for id
  has no run."""
  found = layout.list_runs(root, experiment, ratios)
  where = os.path.join(root, experiment)
  if run_ids is not None:
    wanted = set(int(r) for r in run_ids)
    missing = sorted(wanted - {r.run for r in found})
    if missing:
      shown = ", ".join(map(str, missing[:10])) + (
          ", ..." if len(missing) > 10 else "")
      raise EstimateError(f"{len(missing)} of the {len(wanted)} runs asked "
                          f"for are not under {where}: runs {shown}")
    found = [r for r in found if r.run in wanted]
  if not found:
    raise EstimateError(f"no runs under {where}" + (
        f" for ratios {list(ratios)}" if ratios is not None else ""))
  return found


def load_runs(root, experiment, ratios=None, progress=True, num_threads=4,
              mmap_dir=None, run_ids=None, target="correct",
              target_splits=("train", "test")) -> Runs:
  """Reads every `<root>/<experiment>/<ratio>/<run>/aux_arrays.npz`.

  Runs are found by `heldout_tf.collection.layout.list_runs` (canonical names only;
  others skipped with a warning, ambiguous twins an error) and ordered by
  (ratio, run id). Validates keys, dtypes, shapes, index coverage and
  `subsample_idx` consistency (runs.AuxArraysError naming the file and key)
  and that all runs share n_train and n_test. With `mmap_dir` the matrices
  are memory-mapped `mask.npy`, `correct_train.npy` and `correct_test.npy`
  there (overwritten), not held in memory: ImageNet's 2000 runs take 5.2 GB
  as bool. `run_ids` keeps only the runs with those ids (`find_runs`);
  `target` and `target_splits` are as for `load_runs_from`.
  """
  found = find_runs(root, experiment, ratios, run_ids)
  return load_runs_from(
      [os.path.join(r.path, runs_lib.AUX_FILENAME) for r in found],
      ratios=[r.ratio for r in found], run_ids=[r.run for r in found],
      experiment=experiment, progress=progress, num_threads=num_threads,
      mmap_dir=mmap_dir, target=target, target_splits=target_splits)
