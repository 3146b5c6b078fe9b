"""`train(spec, run_ids, engine=...)`: the one loop that makes a collection.

The same canonical blocks are trained whether the engine is "local" (one
block after another in this process) or "ray" (one Ray task per block, on
storage every node sees): runs are pure functions of (config, block), so
both engines write byte-identical collections.

Several writers may work on one collection at once (two identical `heldout
train` on one --root, shards, Ray workers): a block is trained only under
its lock (`files.try_lock` on the directory of the block's first run), and
the block trainer re-checks which runs are finished once it holds it. A
writer skips the blocks another one holds (saying so once), trains the
rest, then waits for each skipped block's lock and trains what is still
unfinished there (nothing, unless the other writer died): every run is
trained once, to the bytes a single writer writes.
"""

import dataclasses
import hashlib
import os
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

from heldout_tf.core import errors
from heldout_tf.core import files
from heldout_tf.core import progress as progress_lib
from heldout_tf.core import raycluster
from heldout_tf.collection import blocks
from heldout_tf.collection import store as store_lib

ENGINES = ("local", "ray")


@dataclasses.dataclass(frozen=True)
class Spec:
  """A collection to make, in a form Ray can ship to every worker.

  Attributes:
    root: the collection root (`--root`), on storage every node mounts at
      this same path for the Ray engine.
    experiment: the experiment name, e.g. "mnist-mlp".
    ratio: the subset ratio.
    group_size: G, the collection's canonical block size (resolved, >= 1).
    factory: a top-level (importable) callable; `factory(*factory_args)`
      returns the block trainer (see the package docstring). Called once
      per process and cached there.
    factory_args: its arguments (small and picklable, e.g. an options
      value; never the data).
    config: if given, recorded (`Store.record_config`) before any training:
      it must agree with the collection's config.json. The caller checks
      its data and model first (the training workflow does), so a call
      that fails them leaves no config behind.
  """
  root: str
  experiment: str
  ratio: float
  group_size: int
  factory: Callable[..., Any]
  factory_args: tuple = ()
  config: Optional[Dict[str, Any]] = None

  def store(self) -> store_lib.Store:
    return store_lib.Store(self.root, self.experiment, self.ratio)

  def make(self):
    """`factory(*factory_args)`: a new block trainer."""
    return self.factory(*self.factory_args)


def check_engine(engine: str, address: Optional[str] = None):
  """The one rule for `--engine` and `--ray_address`: an engine of
  `ENGINES`, and an address only with the Ray engine (`errors.UsageError`
  naming the flag otherwise)."""
  if engine not in ENGINES:
    raise errors.UsageError(f"--engine must be one of {', '.join(ENGINES)}"
                            f", got {engine!r}")
  if address is not None and engine != "ray":
    raise errors.UsageError("--ray_address needs --engine ray")


_WORKER_TRAINERS: Dict[str, Any] = {}  # One entry per worker process.


def _spec_key(spec: Spec) -> str:
  from ray import cloudpickle  # pylint: disable=g-import-not-at-top
  return hashlib.sha256(cloudpickle.dumps(
      (spec.factory, spec.factory_args))).hexdigest()


def _worker_trainer(spec: Spec):
  """`spec.make()`, built once per worker process."""
  key = _spec_key(spec)
  if key not in _WORKER_TRAINERS:
    _WORKER_TRAINERS.clear()  # Keep one dataset per worker at most.
    _WORKER_TRAINERS[key] = spec.make()
  return _WORKER_TRAINERS[key]


def _import_tensorflow_or_exit():
  """Imports TensorFlow quietly in a Ray worker, or ends the worker.

  An import cut short (a task cancelled by Ctrl-C on the driver raises
  KeyboardInterrupt in the worker, maybe mid-import) leaves TensorFlow
  half-registered: every later import in that process fails ("already
  registered"). So a failed import ends the process: Ray starts a fresh
  worker and retries the task (a cancelled task is not retried).
  """
  from heldout_tf.core import startup  # pylint: disable=g-import-not-at-top
  try:
    startup.quiet_tensorflow()  # No start-up lines from every worker.
  except BaseException:  # pylint: disable=broad-except
    sys.stderr.flush()
    os._exit(1)  # pylint: disable=protected-access


def train_block(store: store_lib.Store, trainer, runs: Sequence[int],
                group_size: int, wait: bool) -> Optional[List[int]]:
  """`trainer.train_block(store, runs)` under the block's lock: the ids it
  wrote; None (nothing done) when another process holds the lock and not
  `wait`. With `wait`, waits for the lock first. The lock is the directory
  of the block's first run (made if missing); where locks do not work the
  block trains unlocked."""
  first = blocks.block_of(runs, group_size)[0]
  directory = store.run_dir(first)
  with errors.user_path(directory, "write"):
    os.makedirs(directory, exist_ok=True)
  if wait:
    with files.locked(directory):
      return list(trainer.train_block(store, runs))
  lock = files.try_lock(directory)
  if lock is files.BUSY:
    return None
  try:
    return list(trainer.train_block(store, runs))
  finally:
    files.unlock(lock)


def _train_block_task(spec: Spec, runs: List[int], wait: bool) -> dict:
  """One Ray task: trains the canonical block holding `runs` under its lock
  (`train_block`; its worker's TensorFlow threads come from
  `raycluster.thread_env`).

  Returns {"written": the ids written (fewer than `runs` when a previous
  attempt wrote some before its worker died, or another writer did),
  "busy": another process held the block (not `wait`: nothing done),
  "setup_seconds": building the worker's block trainer (0 once built),
  "train_seconds": the block}.
  """
  start = time.perf_counter()
  if "tensorflow" not in sys.modules:  # This worker's first task.
    _import_tensorflow_or_exit()
  trainer = _worker_trainer(spec)
  setup = time.perf_counter() - start
  written = train_block(spec.store(), trainer, runs, spec.group_size, wait)
  return {"written": written or [], "busy": written is None,
          "setup_seconds": setup,
          "train_seconds": time.perf_counter() - start - setup}


def plan(spec: Spec, run_ids: Sequence[int], trainer, say=None):
  """`(store, unfinished runs, their canonical blocks)`; records
  `spec.config` first (a `errors.ConfigError` before any work; `say`
  tells when it replaced a config nothing was trained under)."""
  store = spec.store()
  if spec.config is not None:
    store.record_config(spec.config, say)
  wanted = sorted(set(int(r) for r in run_ids))
  todo = [r for r in wanted if not trainer.is_done(store, r)]
  return store, todo, blocks.groups(todo, spec.group_size)


def train(spec: Spec, run_ids: Sequence[int], *, engine: str = "local",
          address: Optional[str] = None, progress: bool = True,
          trainer=None, num_cpus: Optional[int] = None,
          cpus_per_task: int = 1,
          max_retries: int = raycluster.DEFAULT_MAX_RETRIES,
          say: Optional[Callable[[str], None]] = None) -> dict:
  """Trains the unfinished runs of `run_ids`, block by block.

  Args:
    spec: the collection and how to build its block trainer.
    run_ids: the runs wanted (e.g. `range(num_runs)` or a shard's
      `blocks.shard_runs`); finished ones (`trainer.is_done`) are skipped,
      so calling again resumes.
    engine: "local" (this process) or "ray" (one task per block).
    address: engine "ray": the cluster to join ("HEAD:6379", "auto"); None
      starts a Ray instance on this machine only.
    progress: show a bar counting finished runs.
    trainer: a block trainer already built in this process (e.g. on data
      the caller loaded); default `spec.make()`. The Ray engine uses it
      only to plan (`is_done`); workers build their own.
    num_cpus: engine "ray" without `address`: CPUs of the local instance
      (None: all).
    cpus_per_task: engine "ray": CPUs each task reserves, and its
      TensorFlow threads.
    max_retries: engine "ray": how often a task whose worker or node dies
      is re-run (a retry never duplicates or half-writes a run).
    say: prints a line (default: to stderr), e.g. that another writer
      holds some blocks.

  Returns:
    {"engine", "trained": runs finished by this call, "skipped": runs
    already finished, "by_others": runs another writer finished meanwhile,
    "tasks": blocks trained, "seconds": wall time, "setup_seconds" and
    "train_seconds" (engine "ray": summed over tasks: workers building
    their trainer, training and writing blocks)}.
  """
  check_engine(engine, address)
  if cpus_per_task < 1:
    raise errors.UsageError(f"cpus_per_task must be >= 1, got "
                            f"{cpus_per_task}")
  blocks.check_group_size(spec.group_size)
  start = time.perf_counter()
  if engine == "ray":
    raycluster.import_ray()  # A clear error before any work.
  if trainer is None:
    trainer = spec.make()
  if say is None:
    say = lambda line: print(line, file=sys.stderr, flush=True)
  store, todo, todo_blocks = plan(spec, run_ids, trainer, say)
  report = {"engine": engine, "trained": len(todo),
            "skipped": len(set(int(r) for r in run_ids)) - len(todo),
            "by_others": 0, "tasks": len(todo_blocks), "setup_seconds": 0.0,
            "train_seconds": 0.0}
  if todo_blocks:
    held = _Held(store, say)
    if engine == "ray":
      _train_on_ray(spec, todo, todo_blocks, report, address, num_cpus,
                    cpus_per_task, max_retries, progress, held)
    else:
      _train_here(store, trainer, spec.group_size, todo, todo_blocks, report,
                  progress, held)
    report["trained"] -= report["by_others"]
  report["seconds"] = time.perf_counter() - start
  return report


class _Held:
  """The blocks another writer held when this one came to them."""

  def __init__(self, store, say):
    self.blocks, self._store, self._say = [], store, say

  def add(self, runs: List[int]):
    if not self.blocks:
      self._say(f"{self._store.path}: another process is training runs "
                f"{_span(runs)}; training the other blocks first, then "
                "waiting for the ones it holds.")
    self.blocks.append(runs)


def _span(runs) -> str:
  return (f"{runs[0]}..{runs[-1]}" if len(runs) > 1 and
          runs[-1] - runs[0] + 1 == len(runs) else
          ", ".join(map(str, runs)))


def _rate(bar, done, start):
  elapsed = time.perf_counter() - start
  if done and elapsed > 0:
    bar.set_postfix_str(f"{3600 * done / elapsed:.0f} models/h")


def _train_here(store, trainer, group_size, todo, todo_blocks, report,
                progress, held):
  start, done = time.perf_counter(), 0
  with progress_lib.bar(len(todo), "training", "run", progress) as bar:
    for runs in todo_blocks:
      written = train_block(store, trainer, runs, group_size, wait=False)
      if written is None:
        held.add(runs)
        continue
      report["by_others"] += len(runs) - len(written)  # Done meanwhile.
      done += len(written)
      _rate(bar, done, start)
      bar.update(len(written))
    for runs in held.blocks:  # Whatever the other writer left unfinished.
      written = train_block(store, trainer, runs, group_size, wait=True)
      report["by_others"] += len(runs) - len(written)
      done += len(written)
      _rate(bar, done, start)
      bar.update(len(runs))
  report["train_seconds"] = time.perf_counter() - start


def _train_on_ray(spec, todo, todo_blocks, report, address, num_cpus,
                  cpus_per_task, max_retries, progress, held):
  with raycluster.connect(address, num_cpus) as ray:
    task = ray.remote(_train_block_task).options(
        num_cpus=cpus_per_task, max_retries=max_retries,
        retry_exceptions=False,
        runtime_env={"env_vars": raycluster.thread_env(cpus_per_task)})
    spec_ref = ray.put(spec)
    start, done = time.perf_counter(), [0]
    with progress_lib.bar(len(todo), "training on Ray", "run",
                          progress) as bar:
      for wait, wave in ((False, todo_blocks), (True, held.blocks)):
        refs = [task.remote(spec_ref, runs, wait) for runs in list(wave)]
        wanted = dict(zip(refs, list(wave)))

        def finished(ref, task_report, wait=wait, wanted=wanted):
          runs = wanted[ref]
          if task_report["busy"]:
            held.add(runs)
            return
          if wait:
            report["by_others"] += len(runs) - len(task_report["written"])
          for key in ("setup_seconds", "train_seconds"):
            report[key] += task_report[key]
          done[0] += len(runs)
          _rate(bar, done[0], start)
          bar.update(len(runs))

        raycluster.run_tasks(ray, refs, finished)
