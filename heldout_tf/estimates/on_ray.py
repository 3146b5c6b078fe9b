"""Estimates and datamodels on a Ray cluster, array for array those of one
machine.

  estimate_on_ray(root, experiment, ratios=None, *, what=DEFAULT_WHAT,
                  infl_threshold=0.15, mem_threshold=0.25,
                  memory_budget="4GB", labels=None, address=None,
                  num_cpus=None, runs_per_task=None,
                  test_examples_per_task=None, progress=True) -> dict

Maps the counting pass over shards of runs (each task reads its runs'
`aux_arrays.npz`), sums the counts, then maps the high-influence pairs over
blocks of test examples, each task's working set within `memory_budget`.
The result is the dict of `heldout_tf.estimates.compute`: saved with
`save_estimates`, every array of the npz file is byte-identical to the
local engine's (only zip timestamps differ). Connection, retries and
cancelling: `heldout_tf.core.raycluster`. Every node must see `root` at the same
path.

  datamodels_on_ray(root, experiment, fit_run_ids, ratios=None, *,
                    settings=None, memory_budget="4GB", address=None,
                    num_cpus=None, test_examples_per_task=None,
                    progress=True) -> dict

maps the datamodel fits over blocks of test examples (each task fits its
block with one BLAS thread, within `memory_budget`) and joins them: the
dict of `datamodels.fit_collection`, array for array.
"""

import os
from typing import List, Optional, Sequence

import numpy as np

from heldout_tf.core import errors
from heldout_tf.collection import layout
from heldout_tf.core import progress as progress_lib
from heldout_tf.core import raycluster
from heldout_tf.collection import runs as runs_lib
from heldout_tf.estimates import counting
from heldout_tf.estimates import datamodels
from heldout_tf.estimates import estimators
from heldout_tf.estimates import loading
from heldout_tf.estimates import pipeline
from heldout_tf.estimates import regression

def _count_task(paths: List[str], ratios: List[float], run_ids: List[int],
                experiment: str, keep_matrices: bool):
  """One Ray task: the counts of a shard of runs (the map step).

  Returns `(summary, packed mask, packed correct_test)`: `summary` is
  `(CountsByRatio, (n_train, n_test), test_correct int64 [n_test])`; the
  shard's matrices are bit-packed along examples for the pairs tasks
  (None unless `keep_matrices`), and stay in the object store.
  """
  runs = loading.load_runs_from(paths, ratios=ratios, run_ids=run_ids,
                                  experiment=experiment, progress=False,
                                  num_threads=1)
  summary = (counting.counts_for(runs), (runs.n_train, runs.n_test),
             np.add.reduce(runs.correct_test.view(np.uint8), axis=0,
                           dtype=np.int64))
  if not keep_matrices:
    return summary, None, None
  return (summary, np.packbits(runs.mask, axis=1),
          np.packbits(runs.correct_test, axis=1))


def _packed_columns(packed: np.ndarray, columns: np.ndarray) -> np.ndarray:
  """uint8 0/1 `[rows, len(columns)]` of a `np.packbits(..., axis=1)`."""
  columns = np.asarray(columns, np.int64)
  shifts = (7 - (columns & 7)).astype(np.uint8)
  return (packed[:, columns >> 3] >> shifts) & 1


def pairs_tiling(num_runs: int, n_train: int, n_test: int, budget: int,
                 num_tasks: int) -> tuple:
  """(test examples per task, training rows per block) within `budget`.

  Each pairs task holds its test columns of correct_test as float32
  (`4 * runs * t` bytes, at most half the budget) and then works on blocks
  of training rows as `estimates.high_influence_pairs` does. The test
  examples are split into at least `num_tasks` tasks.
  """
  per_task = -(-n_test // max(1, num_tasks))
  per_task = max(1, min(n_test, per_task, budget // (8 * num_runs)))
  rows = estimators.pairs_block_rows(num_runs, n_train, per_task, budget,
                                     _chunk_bytes(num_runs, budget))
  return per_task, rows


def _chunk_bytes(num_runs: int, budget: int) -> int:
  return max(num_runs, min(counting.COUNT_CHUNK_BYTES, budget // 16))


def _pairs_task(masks: list, tests: list, plan: dict, test_cols: tuple):
  """One Ray task: the high-influence pairs with test examples in
  `range(*test_cols)` (the second map step).

  `masks`, `tests`: ObjectRefs of every shard's packed mask and
  correct_test; `plan`: the selected training rows and their counts over
  all runs, `test_correct`, the threshold and the block sizes.
  """
  ray = raycluster.import_ray()
  masks, tests = ray.get(masks), ray.get(tests)
  first, last = test_cols
  cols = np.arange(first, last)
  ct = np.concatenate([_packed_columns(t, cols) for t in tests]).astype(
      np.float32)
  selected, rows_per_block = plan["selected"], plan["rows_per_block"]
  scratch = tuple(np.empty((rows_per_block, len(cols)), dtype)
                  for dtype in (np.float32, np.float32, bool))
  found = []
  for start in range(0, len(selected), rows_per_block):
    part = slice(start, start + rows_per_block)
    rows = selected[part]
    mask_block = np.concatenate([_packed_columns(m, rows) for m in masks]
                                ).astype(np.float32)
    found.append(estimators.pairs_in_block(
        mask_block, ct, plan["n_in"][part], plan["n_out"][part],
        plan["test_correct"][first:last], plan["infl_threshold"], rows,
        test_cols=cols, scratch=scratch))
  return found


def _check_shard_sizes(summaries, shards):
  sizes = summaries[0][1]
  for summary, shard in zip(summaries, shards):
    if summary[1] != sizes:
      raise runs_lib.AuxArraysError(
          f"{shard[0].path}: (n_train, n_test) = {summary[1]} but "
          f"{shards[0][0].path} has {sizes}")
  return sizes


def estimate_on_ray(root: str, experiment: str,
                    ratios: Optional[Sequence[float]] = None, *,
                    what=pipeline.DEFAULT_WHAT,
                    infl_threshold: float = 0.15, mem_threshold: float = 0.25,
                    memory_budget=estimators.DEFAULT_MEMORY_BUDGET,
                    labels=None,
                    address: Optional[str] = None,
                    num_cpus: Optional[int] = None,
                    runs_per_task: Optional[int] = None,
                    test_examples_per_task: Optional[int] = None,
                    progress: bool = True) -> dict:
  """`estimates.compute(estimates.load_runs(root, experiment, ratios), ...)`
  on Ray: the same dict, array for array.

  Map: one task per shard of `runs_per_task` runs reads their
  `aux_arrays.npz` and returns the shard's counts (and keeps its matrices,
  bit-packed, in Ray's object store when pairs are wanted). Reduce: the
  driver sums the counts. Map: one task per block of test examples finds
  the high-influence pairs, its working set within `memory_budget`.
  'infl' (the dense matrix, one array in one memory) is computed in the
  driver from all runs.

  Args:
    root, experiment, ratios: the collection, as for `estimates.load_runs`.
    what, infl_threshold, mem_threshold, memory_budget, labels: as for
      `estimates.compute`; `memory_budget` bounds each pairs task.
    address, num_cpus: the cluster to join (None: a Ray instance on this
      machine only, with `num_cpus` CPUs), as for `raycluster.connect`.
    runs_per_task: runs per counting task (default: about four tasks per
      CPU, at most 256 runs each).
    test_examples_per_task: test examples per pairs task (default: the
      test set split over the CPUs, within the budget).
    progress: show progress bars.

  Returns:
    The dict of `estimates.compute` (save with `estimates.save_estimates`).
  """
  what = pipeline.parse_what(what)
  budget = estimators.memory_budget_bytes(memory_budget)
  for name, value in (("runs_per_task", runs_per_task),
                      ("test_examples_per_task", test_examples_per_task)):
    if value is not None and value < 1:
      raise errors.UsageError(f"{name} must be >= 1, got {value}")
  raycluster.import_ray()
  found = loading.find_runs(root, experiment, ratios)
  with raycluster.connect(address, num_cpus) as ray:
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    per_task = runs_per_task or max(1, min(256, -(-len(found) // (4 * cpus))))
    shards = [found[i:i + per_task] for i in range(0, len(found), per_task)]
    count = ray.remote(_count_task).options(
        num_cpus=1, num_returns=3, max_retries=raycluster.DEFAULT_MAX_RETRIES)
    keep = "pairs" in what
    outputs = [count.remote([os.path.join(r.path, layout.AUX_FILENAME)
                             for r in shard], [r.ratio for r in shard],
                            [r.run for r in shard], experiment, keep)
               for shard in shards]
    summaries = {}
    with progress_lib.bar(len(found), f"counting {experiment} on Ray", "run",
                          progress) as bar:
      shard_of = {out[0]: k for k, out in enumerate(outputs)}

      def counted(ref, summary):
        summaries[shard_of[ref]] = summary
        bar.update(len(shards[shard_of[ref]]))

      raycluster.run_tasks(ray, [out[0] for out in outputs], counted)
    summaries = [summaries[k] for k in range(len(shards))]
    n_train, n_test = _check_shard_sizes(summaries, shards)
    total = sum((s[0] for s in summaries), counting.CountsByRatio())
    pairs = None
    if keep:
      pairs = _pairs_on_ray(
          ray, total.total, [out[1] for out in outputs],
          [out[2] for out in outputs],
          np.sum([s[2] for s in summaries], axis=0).astype(np.float64),
          (len(found), n_train, n_test), budget, cpus, infl_threshold,
          mem_threshold, test_examples_per_task, progress)
  runs = None
  if "infl" in what:
    runs = loading.load_runs(root, experiment, ratios, progress=progress)
  return pipeline.compute_from_counts(
      total, what, n_test=n_test, experiment=experiment, runs=runs,
      pairs=pairs, infl_threshold=infl_threshold,
      mem_threshold=mem_threshold, memory_budget=memory_budget,
      labels=labels, progress=progress, run_ids=[r.run for r in found],
      run_ratios=[r.ratio for r in found])


def _pairs_on_ray(ray, counts, masks, tests, test_correct, shape, budget,
                  cpus, infl_threshold, mem_threshold, per_task, progress):
  """Maps `_pairs_task` over blocks of test examples; the joined pairs."""
  num_runs, n_train, n_test = shape
  tiled_per_task, rows = pairs_tiling(num_runs, n_train, n_test, budget,
                                      cpus)
  if per_task is not None:
    rows = estimators.pairs_block_rows(num_runs, n_train, per_task, budget,
                                       _chunk_bytes(num_runs, budget))
  per_task = per_task or tiled_per_task
  selected = estimators.selected_rows(counts, mem_threshold)
  plan = ray.put({
      "selected": selected, "n_in": counts.n_in[selected],
      "n_out": counts.n_out[selected], "test_correct": test_correct,
      "infl_threshold": float(infl_threshold),
      "rows_per_block": max(1, min(rows, len(selected)))})
  task = ray.remote(_pairs_task).options(
      num_cpus=1, max_retries=raycluster.DEFAULT_MAX_RETRIES)
  blocks = [(first, min(first + per_task, n_test))
            for first in range(0, n_test, per_task)] if len(selected) else []
  refs = [task.remote(masks, tests, plan, cols) for cols in blocks]
  found = []
  with progress_lib.bar(len(refs), "influence pairs on Ray", "block",
                        progress) as bar:

    def done(ref, pairs):
      del ref
      found.extend(pairs)
      bar.update(1)

    raycluster.run_tasks(ray, refs, done)
  return estimators.merge_pairs(found, counts.memorization)


def _datamodels_task(mask, margins, settings, choice, first: int):
  """One Ray task: the datamodels of the test examples whose margins
  [runs, t] are given (columns from `first`), summarised for the file;
  `choice` is the driver's `datamodels.Choice` (None: per target)."""
  fit_rows, select_rows = datamodels.split_rows(len(mask),
                                                settings.select_fraction)
  problem = regression.Problem(mask[fit_rows], mask[select_rows])
  fit = datamodels.fit_block(problem, margins[fit_rows], margins[select_rows],
                             settings, choice)
  cols = slice(first, first + margins.shape[1])
  return datamodels.summarise(cols, fit, settings.top_k)


def datamodels_on_ray(root: str, experiment: str,
                      fit_run_ids: Sequence[int],
                      ratios: Optional[Sequence[float]] = None, *,
                      settings: Optional[datamodels.Settings] = None,
                      memory_budget=estimators.DEFAULT_MEMORY_BUDGET,
                      address: Optional[str] = None,
                      num_cpus: Optional[int] = None,
                      test_examples_per_task: Optional[int] = None,
                      progress: bool = True) -> dict:
  """`datamodels.fit_collection(...)` on Ray: the same dict.

  The driver reads the runs' masks and test margins (and, for
  `selection='global'`, chooses the regularisation); one task per block of
  test examples (`test_examples_per_task`; default: the test set split
  over the CPUs, within `memory_budget` per task) fits that block.
  """
  settings = settings or datamodels.Settings()
  if test_examples_per_task is not None and test_examples_per_task < 1:
    raise errors.UsageError("test_examples_per_task must be >= 1, got "
                            f"{test_examples_per_task}")
  raycluster.import_ray()
  runs = loading.load_runs(root, experiment, ratios, progress=progress,
                           run_ids=fit_run_ids, target="margin",
                           target_splits=("test",))
  largest = datamodels.block_size(runs.num_runs, runs.n_train, runs.n_test,
                                  memory_budget)
  choice = datamodels.plan(runs.mask, runs.values_test, settings,
                           largest).choice
  with raycluster.connect(address, num_cpus) as ray:
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    per_task = test_examples_per_task or min(
        largest, -(-runs.n_test // cpus))
    mask = ray.put(np.asarray(runs.mask))
    task = ray.remote(_datamodels_task).options(
        num_cpus=1, max_retries=raycluster.DEFAULT_MAX_RETRIES,
        runtime_env={"env_vars": raycluster.thread_env(1)})
    refs = [task.remote(mask, np.asarray(runs.values_test[:, cols]),
                        settings, choice, cols.start)
            for cols in counting.chunks(runs.n_test, per_task)]
    found = []
    with progress_lib.bar(len(refs), f"{settings.method} datamodels on Ray",
                          "block", progress) as bar:

      def done(ref, block):
        del ref
        found.append(block)
        bar.update(1)

      raycluster.run_tasks(ray, refs, done)
  return datamodels.finish(datamodels.join(found, runs.n_test), runs,
                           settings, choice)
