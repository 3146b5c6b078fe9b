"""Attributions to judge: tau(i, j), training example i's effect on test
example j's margin, from any source, for `lds`.

Each source predicts, for evaluation runs with training masks M
[runs, n_train], the group effect g_r(j) = sum_{i in S_r} tau(i, j) =
(M tau^T)[r, j], block by block of test examples, and says which runs of
the collection it was fitted on (those may not judge it):

  Dense(name, array [n_test, n_train], fit_runs)
  Blocks(name, fn(test slice) -> [t, n_train], n_test, fit_runs)
  Pairs(name, tr_idx, tt_idx, infl, fit_runs)   # the published format
  read(path)          # a score file: heldout estimate / datamodels output,
                      # or your own (see `read`)
  builtins(runs, methods)   # computed here from fitting runs: the papers'
                            # difference of means (0/1 and margin), ridge
                            # and l1 datamodels
  tracin.Source(...)        # TracIn from trajectory checkpoints
                            # (`heldout_tf.estimates.tracin`)

`fit_runs` is a sequence of `(ratio, run id)`: the runs whose outputs
entered the scores (NaN ratio: a run id at any ratio); empty when the
scores used none of this collection's runs (e.g. a method fitted on
models of its own). NaN scores (an example never held out has no
difference of means) count as 0.
"""

import os
from typing import Callable, Iterator, Optional, Sequence, Tuple

import numpy as np
import scipy.sparse

from heldout_tf.core import errors
from heldout_tf.core import npz
from heldout_tf.estimates import counting
from heldout_tf.estimates import datamodels
from heldout_tf.estimates import loading
from heldout_tf.estimates import targets

FROM_RUNS = ("dom_correct", "dom_margin", "ridge", "l1")  # `builtins`.
TRACIN = "tracin"  # From trajectory checkpoints (`estimates.tracin`).
BUILTINS = FROM_RUNS + (TRACIN,)
BUILTIN_NAMES = {
    "dom_correct": "difference of means, 0/1 correctness (papers')",
    "dom_margin": "difference of means, margin",
    "ridge": "ridge datamodels, margin",
    "l1": "l1 datamodels, margin",
    TRACIN: "TracIn, last layer",
}
_DENSE_BLOCK = 256  # Test examples per block of a dense source.


class ScoresError(errors.HeldoutError, ValueError):
  """Scores that do not fit the collection, or a bad score file."""


def _run_keys(ratios, run_ids) -> Tuple[Tuple[float, int], ...]:
  return tuple((float(r), int(i)) for r, i in zip(ratios, run_ids))


class Source:
  """An attribution: `predictions(mask_eval)` and the runs it was fit on;
  `scores()` where its dense scores can be formed block by block."""

  def __init__(self, name: str, fit_runs: Sequence[Tuple[float, int]]):
    self.name = name
    self.fit_runs = tuple((float(r), int(i)) for r, i in fit_runs)

  def check(self, n_train: int, n_test: int):
    """Raises ScoresError unless the scores fit these sizes."""

  def scores(self) -> Iterator[Tuple[slice, np.ndarray]]:
    """Yields `(test rows, float64 [t, n_train] scores)` (NaN as 0), every
    test example once, after `check`."""
    raise NotImplementedError(f"{self.name}: no dense scores")

  def predictions(self, mask_eval) -> Iterator[Tuple[slice, np.ndarray]]:
    """Yields `(test columns, float64 [runs, t] group effects)`."""
    m = np.asarray(mask_eval, np.float64)
    for cols, tau in self.scores():
      yield cols, m @ tau.T


class Dense(Source):
  """A dense `[n_test, n_train]` array (may be memory-mapped)."""

  def __init__(self, name, array, fit_runs):
    super().__init__(name, fit_runs)
    self.array = array

  def check(self, n_train, n_test):
    if tuple(self.array.shape) != (n_test, n_train):
      raise ScoresError(f"{self.name}: scores have shape "
                        f"{tuple(self.array.shape)}, the collection needs "
                        f"[n_test, n_train] = ({n_test}, {n_train})")

  def scores(self):
    for cols in counting.chunks(self.array.shape[0], _DENSE_BLOCK):
      yield cols, np.nan_to_num(np.asarray(self.array[cols], np.float64))


class Blocks(Source):
  """Scores made on demand: `fn(test slice)` -> `[t, n_train]`."""

  def __init__(self, name, fn: Callable[[slice], np.ndarray], n_test: int,
               fit_runs, block: int = _DENSE_BLOCK):
    super().__init__(name, fit_runs)
    self.fn, self.n_test, self.block = fn, n_test, block

  def check(self, n_train, n_test):
    if self.n_test != n_test:
      raise ScoresError(f"{self.name}: scores for {self.n_test} test "
                        f"examples, the collection has {n_test}")
    self.n_train = n_train

  def scores(self):
    for cols in counting.chunks(self.n_test, self.block):
      tau = np.nan_to_num(np.asarray(self.fn(cols), np.float64))
      if tau.shape != (cols.stop - cols.start, self.n_train):
        raise ScoresError(f"{self.name}: block {cols.start}:{cols.stop} "
                          f"has shape {tau.shape}, expected "
                          f"({cols.stop - cols.start}, {self.n_train})")
      yield cols, tau


class Pairs(Source):
  """Sparse scores in the published pairs format (repeats add up)."""

  def __init__(self, name, tr_idx, tt_idx, infl, fit_runs):
    super().__init__(name, fit_runs)
    self.tr_idx = np.asarray(tr_idx)
    self.tt_idx = np.asarray(tt_idx)
    self.infl = np.asarray(infl, np.float64)

  def check(self, n_train, n_test):
    if not (self.tr_idx.shape == self.tt_idx.shape == self.infl.shape and
            self.tr_idx.ndim == 1):
      raise ScoresError(f"{self.name}: tr_idx, tt_idx and infl must be 1-D "
                        "of one length")
    for key, index, n in (("tr_idx", self.tr_idx, n_train),
                          ("tt_idx", self.tt_idx, n_test)):
      if index.dtype.kind not in "iu" or (index.size and (
          index.min() < 0 or index.max() >= n)):
        raise ScoresError(f"{self.name}: key {key!r} must hold indices in "
                          f"[0, {n}) of this collection")
    self.n_train, self.n_test = n_train, n_test

  def _matrix(self):
    return scipy.sparse.csr_matrix(
        (np.nan_to_num(self.infl), (self.tt_idx, self.tr_idx)),
        shape=(self.n_test, self.n_train))

  def scores(self):
    tau = self._matrix()
    for cols in counting.chunks(self.n_test, _DENSE_BLOCK):
      yield cols, tau[cols].toarray()

  def predictions(self, mask_eval):
    yield slice(0, self.n_test), np.asarray(
        self._matrix() @ np.asarray(mask_eval, np.float64).T).T


class Fitted(Source):
  """Datamodels fitted here, block by block (`datamodels.fit_blocks`)."""

  def __init__(self, name, runs: loading.Runs,
               settings: datamodels.Settings, memory_budget):
    super().__init__(name, _run_keys(runs.ratios, runs.run_ids))
    self.runs, self.settings = runs, settings
    self.block = datamodels.block_size(runs.num_runs, runs.n_train,
                                       runs.n_test, memory_budget)

  def check(self, n_train, n_test):
    if (self.runs.n_train, self.runs.n_test) != (n_train, n_test):
      raise ScoresError(f"{self.name}: fitting runs have (n_train, n_test) "
                        f"= {(self.runs.n_train, self.runs.n_test)}, the "
                        f"evaluation runs {(n_train, n_test)}")

  def predictions(self, mask_eval):
    the_plan = datamodels.plan(self.runs.mask, self.runs.values_test,
                               self.settings, self.block)
    for cols, fit in datamodels.fit_blocks(the_plan, self.runs.values_test,
                                           self.settings, self.block):
      yield cols, fit.predict(mask_eval).astype(np.float64)


def builtins(runs: loading.Runs, methods: Sequence[str],
             settings: Optional[dict] = None,
             memory_budget="4GB") -> list:
  """The built-in methods fitted on `runs` (`FROM_RUNS`; loaded with
  target 'margin', test values). `settings` maps 'l1' / 'ridge' to
  `datamodels.Settings` changes. (TracIn needs the trajectory checkpoints,
  not the runs' outputs: `tracin.Source`.)"""
  unknown = [m for m in methods if m not in FROM_RUNS]
  if unknown:
    raise ScoresError(f"unknown method(s) {unknown} for the runs' outputs: "
                      f"choose from {', '.join(FROM_RUNS)}")
  if runs.values_test is None or runs.target != "margin":
    raise ScoresError("the built-in methods need the fitting runs' test "
                      "margins: load them with target='margin'")
  fit_runs = _run_keys(runs.ratios, runs.run_ids)
  counts = counting.counts(runs.mask)
  mask_float = np.asarray(runs.mask, np.float64)

  def dom(values):
    return lambda cols: targets.influence_columns(
        runs.mask, values, cols, counts, mask_float)

  out = []
  for method in methods:
    if method in ("l1", "ridge"):
      out.append(Fitted(BUILTIN_NAMES[method], runs,
                        datamodels.Settings.for_method(
                            method, **(settings or {}).get(method, {})),
                        memory_budget))
    else:
      values = runs.correct_test if method == "dom_correct" else (
          runs.values_test)
      out.append(Blocks(BUILTIN_NAMES[method], dom(values), runs.n_test,
                        fit_runs))
  return out


def top_influencers(source: Source, n_train: int, n_test: int,
                    k: int) -> dict:
  """Per test example, the training examples with the k largest positive
  and the k most negative scores of `source` (`datamodels.top_k`'s
  `top_pos_idx`, `top_pos_weight`, `top_neg_idx`, `top_neg_weight`
  [n_test, k]: largest magnitude first; -1 and 0 where fewer), formed
  block by block of test examples."""
  source.check(n_train, n_test)
  parts = [datamodels.top_k(tau.T, k) for _, tau in source.scores()]
  return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


# ------------------------------------------------------------ score files --

_DENSE_KEYS = ("influence", "influence_margin", "influence_probability",
               "scores")
_PAIR_SUFFIXES = ("", "_margin", "_probability")
_RUN_KEYS = (("fit_run_ids", "fit_run_ratios"),
             ("select_run_ids", "select_run_ratios"),
             ("run_ids", "run_ratios"))


def _recorded_runs(reader) -> Tuple[Tuple[float, int], ...]:
  found, any_record = [], False
  for ids_key, ratios_key in _RUN_KEYS:
    if ids_key in reader or ratios_key in reader:
      reader.require([ids_key, ratios_key])
      ids = reader.read(ids_key, kinds="iu", ndim=1)
      ratios = reader.read(ratios_key, kinds="f", shape=(len(ids),))
      found += _run_keys(ratios, ids)
      any_record = True
  if not any_record:
    raise ScoresError(
        f"{reader.path}: records no runs it was fitted on: add "
        "'fit_run_ids' (int) and 'fit_run_ratios' (float, NaN: any ratio),"
        " empty when the scores used none of this collection's runs")
  return tuple(found)


def _text(reader, key) -> Optional[str]:
  if key not in reader:
    return None
  return str(reader.read(key, kinds="U", shape=()))


def read(path: str, n_train: int, n_test: int,
         name: Optional[str] = None) -> Source:
  """A score file as a `Source`, checked against the collection's sizes.

  Reads, through the hardened npz reader: a dense `[n_test, n_train]`
  array (`influence`, `influence_margin`, `influence_probability`, or
  `scores`), else pairs (`tr_idx`, `tt_idx`, `infl`, or those keys with
  `_margin` / `_probability`); and the runs it was fitted on (`fit_run_*`
  and `select_run_*` of `heldout datamodels`, `run_ids`/`run_ratios` of
  `heldout estimate`, or your own `fit_run_ids`/`fit_run_ratios`).
  """
  with npz.Reader(path, ScoresError, max_total_bytes="auto") as reader:
    fit_runs = _recorded_runs(reader)
    base = name or os.path.basename(path)
    method, target = _text(reader, "method"), _text(reader, "target")
    what = (f"{method} datamodels" if method else
            f"difference of means of {target}" if target else "scores")
    dense = [k for k in _DENSE_KEYS if k in reader]
    if dense:
      array = reader.read(dense[0], kinds="fiub", shape=(n_test, n_train))
      return Dense(f"{base} ({what}, dense)", array, fit_runs)
    for suffix in _PAIR_SUFFIXES:
      keys = [f"{k}{suffix}" for k in ("tr_idx", "tt_idx", "infl")]
      if all(k in reader for k in keys):
        tr = reader.read(keys[0], kinds="iu", ndim=1)
        tt = reader.read(keys[1], kinds="iu", shape=(len(tr),))
        infl = reader.read(keys[2], kinds="fiu", shape=(len(tr),))
        source = Pairs(f"{base} ({what}, {len(tr)} pairs)", tr, tt, infl,
                       fit_runs)
        source.check(n_train, n_test)
        return source
    raise ScoresError(f"{path}: holds no scores: expected a dense "
                      f"{' / '.join(_DENSE_KEYS)} array or tr_idx, tt_idx, "
                      "infl pairs")
