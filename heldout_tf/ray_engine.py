r"""Training and estimating on a Ray cluster, with the bytes of one machine.

Two entry points, each a thin map/reduce over what one machine does:

  train_on_ray(spec: TrainSpec, run_ids, *, address=None, num_cpus=None,
               cpus_per_task=1, max_retries=3, progress=True) -> dict
  estimate_on_ray(root, experiment, ratios=None, *,
                  what=estimates.DEFAULT_WHAT, infl_threshold=0.15,
                  mem_threshold=0.25, memory_budget="4GB", labels=None,
                  address=None, num_cpus=None, runs_per_task=None,
                  test_examples_per_task=None, progress=True) -> dict

`train_on_ray` maps one Ray task per canonical block of runs
(`runstore.groups`): the task rebuilds the trainer and data from `spec` (a
picklable top-level function and its arguments, built once per worker
process), calls `runstore.train_block` and so writes the block's unfinished
runs into the shared `spec.root`. Runs are pure functions of (config, block),
so the collection is identical to the local engine's. A task whose worker
dies is retried (`max_retries`); a retry never duplicates or half-writes a
run, because `RunStore.write_run` writes the checkpoint and then the aux
arrays atomically and `train_block` skips finished runs. Finished runs are
skipped before any task is submitted, so re-running the same call resumes.

`estimate_on_ray` maps the counting pass over shards of runs (each task reads
its runs' `aux_arrays.npz`), sums the counts, then maps the high-influence
pairs over blocks of test examples, each task's working set within
`memory_budget`. The result is the dict of `heldout_tf.estimates.compute`:
saved with `estimates.save_estimates`, every array of the npz file is
byte-identical to the local engine's (only zip timestamps differ).

Clusters. `address=None` starts a Ray instance on this machine only
(`ray.init(address="local", num_cpus=..., include_dashboard=False)`, never
a cluster named by RAY_ADDRESS) and stops it afterwards;
`address="HEAD:6379"` (or "auto") joins a cluster started with
`ray start --head` or KubeRay. If Ray is already initialised in
this process it is used as is. Every node must see `spec.root` (training) or
`root` (estimates) at the same path (NFS, GCS-fuse, ...) and have this
package installed. Ray is optional: `pip install -e '.[ray]'`; without it
both functions raise `RayUnavailableError`.

Each training task reserves `cpus_per_task` CPUs and runs in a worker whose
TensorFlow intra- and inter-op threads (and OMP threads) are set to that
number (`thread_env`, the task's runtime_env), so the tasks Ray packs onto
one node (`floor(node CPUs / cpus_per_task)`) never oversubscribe its
cores.
"""

import dataclasses
import hashlib
import os
import socket
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from heldout_tf import cli
from heldout_tf import errors
from heldout_tf import estimates
from heldout_tf import layout
from heldout_tf import progress as progress_lib
from heldout_tf import runs as runs_lib
from heldout_tf import runstore
from heldout_tf.estimates import counting
from heldout_tf.estimates import estimators

_INSTALL_HINT = "pip install -e '.[ray]'"
DEFAULT_MAX_RETRIES = 3


class RayUnavailableError(errors.HeldoutError, ImportError):
  """Ray is not installed, or the cluster cannot be reached."""


# -------------------------------------------------------------- connection --


def _import_ray():
  try:
    import ray  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise RayUnavailableError(
        f"the Ray engine needs the 'ray' package ({e}): {_INSTALL_HINT}"
    ) from None
  return ray


class _Connection:
  """`ray.init` on entry (unless already initialised), shutdown on exit if
  this object started Ray."""

  def __init__(self, address: Optional[str], num_cpus: Optional[int]):
    self._address, self._num_cpus = address, num_cpus
    self._started = False

  def __enter__(self):
    ray = _import_ray()
    if ray.is_initialized():
      return ray
    # Each worker imports TensorFlow quietly before any task is unpickled
    # (unpickling a task imports the pipeline, and so TensorFlow).
    env = {"env_vars": _quiet_env(),
           "worker_process_setup_hook": "heldout_tf.cli.quiet_tensorflow"}
    try:
      if self._address:
        _check_reachable(self._address)
        ray.init(address=self._address, runtime_env=env,
                 log_to_driver=True, configure_logging=False)
      else:
        # "local": a new instance of this machine only, even if RAY_ADDRESS
        # names a cluster (it is never joined implicitly).
        ray.init(address="local", num_cpus=self._num_cpus,
                 include_dashboard=False, runtime_env=env,
                 configure_logging=False)
    except (ConnectionError, TimeoutError, ValueError) as e:
      where = self._address or "a local Ray instance"
      raise RayUnavailableError(f"cannot start or join {where}: {e}") from e
    self._started = True
    return ray

  def __exit__(self, *exc):
    if self._started:
      _import_ray().shutdown()


def _check_reachable(address: str, timeout: float = 10.0):
  """Fails fast when a "host:port" head does not answer (Ray itself retries
  for minutes); "auto" and other forms are left to Ray."""
  host, _, port = address.rpartition(":")
  if not host or not port.isdigit() or "://" in address:
    return
  try:
    socket.create_connection((host, int(port)), timeout=timeout).close()
  except OSError as e:
    raise RayUnavailableError(
        f"cannot reach the Ray head at {address} "
        f"({errors.describe_os_error(e)}): start it there with "
        f"`ray start --head --port={port}`, or omit the address to run on "
        "this machine") from None


def _quiet_env() -> Dict[str, str]:
  """Workers' TensorFlow start-up lines hidden (the user's choice kept)."""
  return {"TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL",
                                                 "2")}


def thread_env(num_threads: int) -> Dict[str, str]:
  """Environment of a worker whose TensorFlow uses `num_threads` threads.

  Given as the task's `runtime_env`, so Ray starts (and reuses) workers per
  thread count: a worker never keeps another call's thread setting.
  """
  n = str(max(1, int(num_threads)))
  return dict(_quiet_env(), TF_NUM_INTRAOP_THREADS=n, TF_NUM_INTEROP_THREADS=n,
              OMP_NUM_THREADS=n)


def _get(ray, ref):
  """`ray.get(ref)`, re-raising a task's kit error as itself."""
  try:
    return ray.get(ref)
  except ray.exceptions.RayTaskError as e:
    if isinstance(e.cause, errors.HeldoutError):
      raise e.cause from None
    raise


def _cancel(ray, refs, settle_seconds: float = 30.0):
  """Cancels `refs` and waits (up to `settle_seconds`) for them to stop.

  Cancelling raises KeyboardInterrupt inside each running task, so a write
  in flight removes its temporary file; waiting means that when the driver
  returns, no task of this call still writes.
  """
  for ref in refs:
    try:
      ray.cancel(ref)
    except Exception:  # pylint: disable=broad-except
      pass  # Already finished or gone.
  if refs:
    ray.wait(refs, num_returns=len(refs), timeout=settle_seconds)


def _run_tasks(ray, refs: list, on_done: Callable[[Any, Any], None]):
  """Waits for `refs` in completion order, calling `on_done(ref, result)`
  for each; on any error or interrupt cancels the rest and re-raises."""
  pending = list(refs)
  try:
    while pending:
      ready, pending = ray.wait(pending, num_returns=1)
      for ref in ready:
        on_done(ref, _get(ray, ref))
  except BaseException:
    _cancel(ray, pending)
    raise


# ---------------------------------------------------------------- training --


@dataclasses.dataclass
class BlockInputs:
  """What `runstore.train_block` needs besides the store and the block."""
  trainer: Any  # heldout_tf.training.EnsembleTrainer on the training data.
  train_images: np.ndarray  # [n_train, ...]
  train_labels: np.ndarray  # [n_train]
  test_images: np.ndarray  # [n_test, ...]
  test_labels: np.ndarray  # [n_test]
  # Computes the recorded correctness; None: `runstore.float32_evaluator`.
  evaluator: Any = None
  # A pipeline's own block trainer, `train_block(store, runs) -> written`
  # (e.g. one that also records signals); None: `runstore.train_block`.
  train_block: Optional[Callable[[runstore.RunStore, List[int]],
                                 List[int]]] = None

  def with_evaluator(self) -> "BlockInputs":
    if self.evaluator is None:
      self.evaluator = runstore.float32_evaluator(
          self.trainer, self.train_images, self.train_labels)
    return self


@dataclasses.dataclass
class TrainSpec:
  """A collection to produce, in a form Ray can ship to every worker.

  Attributes:
    root: the output root (`--out`), on storage every node mounts at this
      same path.
    experiment: e.g. "mnist-mlp".
    ratio: the subset ratio.
    group_size: G, the collection's canonical block size.
    inputs: a top-level (importable) function; `inputs(*inputs_args)` returns
      the `BlockInputs`. Called once per worker process and cached.
    inputs_args: its arguments (small and picklable, e.g. an Options value).
    save_checkpoints: also write each run's checkpoint.
    config: if given, the driver records it (`RunStore.record_config`)
      before training: it must agree with the collection's config.json.
    is_done: a top-level `is_done(store, run)`, when a run counts as
      finished for the pipeline (default: `RunStore.is_finished`).
  """
  root: str
  experiment: str
  ratio: float
  group_size: int
  inputs: Callable[..., BlockInputs]
  inputs_args: tuple = ()
  save_checkpoints: bool = True
  config: Optional[Dict[str, Any]] = None
  is_done: Optional[Callable[[runstore.RunStore, int], bool]] = None

  def store(self) -> runstore.RunStore:
    return runstore.RunStore(self.root, self.experiment, self.ratio)


_WORKER_INPUTS: Dict[str, BlockInputs] = {}  # One entry per worker process.


def _spec_key(spec: TrainSpec) -> str:
  from ray import cloudpickle  # pylint: disable=g-import-not-at-top
  return hashlib.sha256(cloudpickle.dumps(
      (spec.inputs, spec.inputs_args))).hexdigest()


def _worker_inputs(spec: TrainSpec) -> BlockInputs:
  """`spec.inputs(*spec.inputs_args)`, built once per worker process."""
  key = _spec_key(spec)
  if key not in _WORKER_INPUTS:
    _WORKER_INPUTS.clear()  # Keep one dataset per worker at most.
    _WORKER_INPUTS[key] = spec.inputs(*spec.inputs_args).with_evaluator()
  return _WORKER_INPUTS[key]


def _train_block_task(spec: TrainSpec, runs: List[int]) -> dict:
  """One Ray task: trains the canonical block holding `runs` (its worker's
  TensorFlow threads come from `thread_env`).

  Returns {"written": the ids written (fewer than `runs` when a previous
  attempt wrote some before its worker died), "setup_seconds": building
  the worker's inputs (0 once built), "train_seconds": the block}.
  """
  start = time.perf_counter()
  if "tensorflow" not in sys.modules:  # This worker's first task.
    cli.quiet_tensorflow()  # No start-up lines from every worker.
  inputs = _worker_inputs(spec)
  setup = time.perf_counter() - start
  written = _train_block(spec, spec.store(), inputs, runs)
  return {"written": written, "setup_seconds": setup,
          "train_seconds": time.perf_counter() - start - setup}


def _train_block(spec: TrainSpec, store: runstore.RunStore,
                 inputs: BlockInputs, runs: List[int]) -> List[int]:
  if inputs.train_block is not None:
    return inputs.train_block(store, runs)
  return runstore.train_block(
      store, inputs.trainer, runs, spec.group_size,
      train_images=inputs.train_images, train_labels=inputs.train_labels,
      test_images=inputs.test_images, test_labels=inputs.test_labels,
      save_checkpoints=spec.save_checkpoints, evaluator=inputs.evaluator)


def train_locally(spec: TrainSpec, run_ids: Sequence[int],
                  progress: bool = True) -> dict:
  """The same blocks as `train_on_ray`, one after another in this process.

  The reference the Ray engine must reproduce byte for byte; returns the
  same dict.
  """
  start = time.perf_counter()
  store, todo, blocks = _plan(spec, run_ids)
  inputs = spec.inputs(*spec.inputs_args).with_evaluator()
  with progress_lib.bar(len(todo), "training", "run", progress) as bar:
    for runs in blocks:
      _train_block(spec, store, inputs, runs)
      bar.update(len(runs))
  return _summary(run_ids, todo, blocks, start)


def _plan(spec: TrainSpec, run_ids: Sequence[int]):
  """(store, unfinished runs, their canonical blocks); records the config."""
  store = spec.store()
  if spec.config is not None:
    store.record_config(spec.config)
  wanted = sorted(set(int(r) for r in run_ids))
  if spec.is_done is None:
    todo = store.unfinished(wanted, spec.save_checkpoints)
  else:
    todo = [r for r in wanted if not spec.is_done(store, r)]
  return store, todo, runstore.groups(todo, spec.group_size)


def _summary(run_ids, todo, blocks, start, **extra) -> dict:
  return dict({"trained": len(todo),
               "skipped": len(set(int(r) for r in run_ids)) - len(todo),
               "tasks": len(blocks), "seconds": time.perf_counter() - start},
              **extra)


def train_on_ray(spec: TrainSpec, run_ids: Sequence[int], *,
                 address: Optional[str] = None,
                 num_cpus: Optional[int] = None, cpus_per_task: int = 1,
                 max_retries: int = DEFAULT_MAX_RETRIES,
                 progress: bool = True) -> dict:
  """Trains the unfinished runs of `run_ids` on Ray, one task per block.

  Args:
    spec: the collection and how a worker builds its trainer and data.
    run_ids: the runs wanted (e.g. `range(num_runs)` or a `--shard`'s
      `runstore.shard_runs`); finished ones are skipped.
    address: a Ray cluster to join ("HEAD:6379", "auto"); None starts a
      local instance on this machine only.
    num_cpus: CPUs of the local instance (None: all); ignored with
      `address`.
    cpus_per_task: CPUs each task reserves, and its TensorFlow threads.
    max_retries: how often a task whose worker or node dies is re-run.
    progress: show a bar counting finished runs as tasks complete.

  Returns:
    {"trained": runs finished by this call, "skipped": runs already
    finished, "tasks": blocks submitted, "seconds": wall time, and summed
    over tasks "setup_seconds" (workers building their trainer and data)
    and "train_seconds" (training and writing blocks)}; a call with nothing
    to train returns the first four.
  """
  if cpus_per_task < 1:
    raise errors.UsageError(f"cpus_per_task must be >= 1, got "
                            f"{cpus_per_task}")
  start = time.perf_counter()
  _import_ray()  # A clear error before any work.
  store, todo, blocks = _plan(spec, run_ids)
  del store
  if not blocks:
    return _summary(run_ids, todo, blocks, start)
  with _Connection(address, num_cpus) as ray:
    task = ray.remote(_train_block_task).options(
        num_cpus=cpus_per_task, max_retries=max_retries,
        retry_exceptions=False,
        runtime_env={"env_vars": thread_env(cpus_per_task)})
    spec_ref = ray.put(spec)
    refs = [task.remote(spec_ref, runs) for runs in blocks]
    wanted = {ref: len(runs) for ref, runs in zip(refs, blocks)}
    spent = {"setup_seconds": 0.0, "train_seconds": 0.0}
    with progress_lib.bar(len(todo), "training on Ray", "run",
                          progress) as bar:

      def done(ref, report):
        for key in spent:
          spent[key] += report[key]
        bar.update(wanted[ref])

      _run_tasks(ray, refs, done)
  return _summary(run_ids, todo, blocks, start, **spent)


# --------------------------------------------------------------- estimates --


def _count_task(paths: List[str], ratios: List[float], run_ids: List[int],
                experiment: str, keep_matrices: bool):
  """One Ray task: the counts of a shard of runs (the map step).

  Returns `(summary, packed mask, packed correct_test)`: `summary` is
  `(CountsByRatio, (n_train, n_test), test_correct int64 [n_test])`; the
  shard's matrices are bit-packed along examples for the pairs tasks
  (None unless `keep_matrices`), and stay in the object store.
  """
  runs = estimates.load_runs_from(paths, ratios=ratios, run_ids=run_ids,
                                  experiment=experiment, progress=False,
                                  num_threads=1)
  summary = (estimates.counts_for(runs), (runs.n_train, runs.n_test),
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
  ray = _import_ray()
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
                    what=estimates.DEFAULT_WHAT,
                    infl_threshold: float = 0.15, mem_threshold: float = 0.25,
                    memory_budget=estimates.DEFAULT_MEMORY_BUDGET,
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
    address, num_cpus: as for `train_on_ray`.
    runs_per_task: runs per counting task (default: about four tasks per
      CPU, at most 256 runs each).
    test_examples_per_task: test examples per pairs task (default: the
      test set split over the CPUs, within the budget).
    progress: show progress bars.

  Returns:
    The dict of `estimates.compute` (save with `estimates.save_estimates`).
  """
  what = estimates.parse_what(what)
  budget = estimators.memory_budget_bytes(memory_budget)
  for name, value in (("runs_per_task", runs_per_task),
                      ("test_examples_per_task", test_examples_per_task)):
    if value is not None and value < 1:
      raise errors.UsageError(f"{name} must be >= 1, got {value}")
  _import_ray()
  found = estimates.find_runs(root, experiment, ratios)
  with _Connection(address, num_cpus) as ray:
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    per_task = runs_per_task or max(1, min(256, -(-len(found) // (4 * cpus))))
    shards = [found[i:i + per_task] for i in range(0, len(found), per_task)]
    count = ray.remote(_count_task).options(num_cpus=1, num_returns=3,
                                            max_retries=DEFAULT_MAX_RETRIES)
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

      _run_tasks(ray, [out[0] for out in outputs], counted)
    summaries = [summaries[k] for k in range(len(shards))]
    n_train, n_test = _check_shard_sizes(summaries, shards)
    total = sum((s[0] for s in summaries), estimates.CountsByRatio())
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
    runs = estimates.load_runs(root, experiment, ratios, progress=progress)
  return estimates.compute_from_counts(
      total, what, n_test=n_test, experiment=experiment, runs=runs,
      pairs=pairs, infl_threshold=infl_threshold,
      mem_threshold=mem_threshold, memory_budget=memory_budget,
      labels=labels, progress=progress)


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
  task = ray.remote(_pairs_task).options(num_cpus=1,
                                         max_retries=DEFAULT_MAX_RETRIES)
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

    _run_tasks(ray, refs, done)
  return estimators.merge_pairs(found, counts.memorization)
