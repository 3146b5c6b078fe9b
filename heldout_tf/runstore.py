"""One collection of runs at one subset ratio, produced piece by piece.

  store = RunStore(out, "mnist-mlp", 0.7)
  store.record_config(config)            # config.json: first call writes it,
                                         # later calls must agree
  mine = shard_runs(num_runs, "0/2", group_size)
  for runs in groups(store.unfinished(mine, True), group_size):
    train_block(store, trainer, runs, group_size, train_images=...,
                train_labels=..., test_images=..., test_labels=...)
  store.check_complete(num_runs)         # before estimating

Layout (names from `heldout_tf.layout`):

  <root>/<experiment>/<ratio>/config.json
  <root>/<experiment>/<ratio>/<run>/checkpoints/ckpt-<N>.{index,data-*}
  <root>/<experiment>/<ratio>/<run>/aux_arrays.npz

A run is finished once its `aux_arrays.npz` exists: `write_run` writes the
checkpoint first and the aux arrays last, each atomically, so a killed job
never leaves a run that looks finished but is not, and a repeated
`write_run` rewrites the same bytes.

Canonical blocks. Every run's arrays must not depend on how the collection
was produced (one job, shards, a resume after a kill, a Ray task): the
ensemble trainer's floating-point results depend on the group size and on a
model's slot in the group. So runs are always trained in the same blocks:
block k is runs `[k*G, (k+1)*G)` with G the collection's recorded group
size, trained whole (runs beyond the wanted ones pad the last block and are
discarded; a block some of whose runs are finished is retrained whole and
only its unfinished runs are written). `shard_runs` hands out whole blocks.
`train_block` is a pure function of (config, block): any worker may run it.
"""

import dataclasses
import hashlib
import json
import os
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from heldout_tf import errors
from heldout_tf import files
from heldout_tf import layout
from heldout_tf import runs as runs_lib

_FINISH_HINT = "Train them (same settings), then estimate."


class IncompleteRunsError(errors.HeldoutError, ValueError):
  """The runs on disk are not exactly the ones asked for."""


class MissingConfigError(errors.HeldoutError, FileNotFoundError):
  """No collection here yet: its config.json does not exist."""


# ------------------------------------------------------------------ shards --


def parse_shard(text: str):
  """'i/n' -> (i, n) with 0 <= i < n; `errors.UsageError` otherwise."""
  try:
    index, count = (int(part) for part in str(text).split("/"))
  except ValueError:
    raise errors.UsageError(
        f"--shard must look like i/n (e.g. 0/4), got {text!r}") from None
  if count < 1 or not 0 <= index < count:
    raise errors.UsageError(f"--shard {text!r}: need 0 <= i < n")
  return index, count


def block_runs(block: int, group_size: int) -> List[int]:
  """The run ids of canonical block `block`: `[block*G, (block+1)*G)`."""
  return list(range(block * group_size, (block + 1) * group_size))


def groups(run_ids: Sequence[int], group_size: int) -> List[List[int]]:
  """`run_ids` split by canonical block, in block order.

  Each inner list holds the wanted runs of one block (all of them share
  `run // group_size`); `train_block` trains the whole block.
  """
  _check_group_size(group_size)
  by_block: Dict[int, List[int]] = {}
  for run in sorted(set(int(r) for r in run_ids)):
    by_block.setdefault(run // group_size, []).append(run)
  return [by_block[k] for k in sorted(by_block)]


def shard_runs(num_runs: int, shard: str, group_size: int = 1) -> List[int]:
  """The runs of `0..num_runs-1` that shard `i/n` owns: whole blocks.

  The ceil(num_runs / G) blocks are dealt out contiguously, so shards are
  disjoint, cover every run, and never split a block (a shard may be empty
  when there are fewer blocks than shards).
  """
  index, count = parse_shard(shard)
  _check_group_size(group_size)
  num_blocks = -(-num_runs // group_size)
  first = index * num_blocks // count * group_size
  last = (index + 1) * num_blocks // count * group_size
  return list(range(first, min(last, num_runs)))


def _check_group_size(group_size):
  if int(group_size) < 1:
    raise errors.UsageError(f"group size must be >= 1, got {group_size}")


# ------------------------------------------------------------------- store --


class RunStore:
  """The runs of one experiment at one subset ratio under `root`."""

  def __init__(self, root: str, experiment: str, ratio):
    self.root = os.fspath(root)
    self.experiment = experiment
    self.ratio = float(layout.format_ratio(ratio))
    self.path = layout.ratio_dir(self.root, experiment, self.ratio)
    self.config_path = os.path.join(self.path, layout.CONFIG_FILENAME)

  def run_dir(self, run: int) -> str:
    return layout.run_dir(self.root, self.experiment, self.ratio, run)

  # -- recorded config --

  def recorded_config(self) -> Optional[dict]:
    """The collection's config.json, or None if there is none yet.

    Raises `errors.PathError` if it cannot be read (e.g. `root` is a file)
    and `errors.ConfigError` if it is not a JSON object.
    """
    with errors.user_path(self.config_path, "read"):
      try:
        with open(self.config_path) as f:
          text = f.read()
      except FileNotFoundError:
        return None
    try:
      config = json.loads(text)
    except ValueError as e:
      raise errors.ConfigError(f"{self.config_path}: not JSON ({e})") from None
    if not isinstance(config, dict):
      raise errors.ConfigError(f"{self.config_path}: not a JSON object")
    return config

  def require_config(self) -> dict:
    """`recorded_config()`, or `MissingConfigError` if there is none."""
    config = self.recorded_config()
    if config is None:
      raise MissingConfigError(
          f"{self.config_path} not found: no runs were trained here; train "
          "first (--stage=train) with the same --out and --ratio")
    return config

  def record_config(self, config: dict) -> dict:
    """Writes `config` as config.json, or checks it equals the recorded one.

    Values are compared as JSON (tuples equal lists). Raises
    `errors.ConfigError` naming every differing key with both values, and
    `errors.PathError` if the directory cannot be written.
    """
    config = json.loads(json.dumps(config))
    with errors.user_path(self.path, "write"):
      os.makedirs(self.path, exist_ok=True)
    recorded = self.recorded_config()
    if recorded is None:
      files.atomic_write(self.config_path, lambda f: f.write(json.dumps(
          config, indent=2, sort_keys=True) + "\n"), mode="w")
      return config
    differ = sorted(k for k in set(config) | set(recorded)
                    if config.get(k) != recorded.get(k))
    if differ:
      details = "; ".join(f"{k}: on disk {recorded.get(k)!r}, now "
                          f"{config.get(k)!r}" for k in differ)
      raise errors.ConfigError(
          f"{self.config_path}: the runs there were made with other settings "
          f"({details}). Use another --out, or the same settings to resume.")
    return recorded

  # -- finished runs --

  def is_finished(self, run: int, need_checkpoint: bool) -> bool:
    """Whether run `run` has its aux_arrays.npz (and a checkpoint if asked).

    The aux arrays are written last and atomically, so their presence is
    enough; they are not read (2 000 runs would take minutes).
    """
    path = self.run_dir(run)
    if not os.path.isfile(os.path.join(path, layout.AUX_FILENAME)):
      return False
    if need_checkpoint:
      # Lazy: TensorFlow only when checkpoints matter.
      from heldout_tf import checkpoints  # pylint: disable=g-import-not-at-top
      try:
        checkpoints.find_checkpoint(path)
      except checkpoints.CheckpointNotFoundError:
        return False
    return True

  def unfinished(self, run_ids: Sequence[int],
                 need_checkpoint: bool) -> List[int]:
    """The ids in `run_ids` that are not finished, in the given order."""
    return [int(r) for r in run_ids
            if not self.is_finished(r, need_checkpoint)]

  def run_ids_on_disk(self) -> List[int]:
    """Every canonical run directory's id, finished or not, sorted."""
    return [p.run for p in layout.list_runs(self.root, self.experiment,
                                            [self.ratio])]

  def finished_runs(self) -> List[int]:
    """The ids of the runs on disk that have their aux_arrays.npz."""
    return [r for r in self.run_ids_on_disk()
            if self.is_finished(r, need_checkpoint=False)]

  def check_complete(self, num_runs: int, hint: str = _FINISH_HINT):
    """Raises `IncompleteRunsError` unless exactly runs 0..num_runs-1 exist
    and are finished (a run directory beyond them is refused too)."""
    missing = self.unfinished(range(num_runs), need_checkpoint=False)
    if missing:
      shown = ", ".join(map(str, missing[:10])) + (
          ", ..." if len(missing) > 10 else "")
      raise IncompleteRunsError(
          f"{len(missing)} of the {num_runs} runs under {self.path} are not "
          f"finished (no {layout.AUX_FILENAME}): runs {shown}. {hint}")
    extra = [r for r in self.run_ids_on_disk() if r >= num_runs]
    if extra:
      raise IncompleteRunsError(
          f"{self.path} holds {len(extra)} run directories beyond --num_runs="
          f"{num_runs} (runs {extra[0]}..{extra[-1]}): pass the --num_runs "
          "they were trained with, or remove them.")

  # -- writing --

  def write_run(self, run: int, *, subset, correct_train, correct_test,
                test_index=None,
                save_checkpoint: Optional[Callable[[str], object]] = None):
    """Writes one finished run: its checkpoint (optional), then its aux arrays.

    The one place that turns a run's outputs into the released layout.

    Args:
      run: the run id.
      subset: int [k], the training examples the run trained on.
      correct_train: bool [n_train], correctness on every training example.
      correct_test: bool [n_test], correctness on every test example.
      test_index: int [n_test] canonical test indices (default 0..n_test-1).
      save_checkpoint: called with the run's `checkpoints/` directory before
        the aux arrays are written (e.g. `checkpoints.save(module, d, ...)`).
    """
    path = self.run_dir(run)
    correct_train = np.asarray(correct_train, bool)
    correct_test = np.asarray(correct_test, bool)
    subset = np.asarray(subset, np.int64)
    n_train = len(correct_train)
    if subset.ndim != 1 or (len(subset) and (
        subset.min() < 0 or subset.max() >= n_train)):
      raise ValueError(f"run {run}: subset must be 1-D indices into "
                       f"{n_train} training examples")
    removed = np.setdiff1d(np.arange(n_train), subset)
    if test_index is None:
      test_index = np.arange(len(correct_test), dtype=np.int64)
    with errors.user_path(path, "write"):
      if save_checkpoint is not None:
        save_checkpoint(os.path.join(path, layout.CHECKPOINTS_DIRNAME))
      runs_lib.write_aux(
          path,
          correctness={"train": correct_train[subset],
                       "removed": correct_train[removed],
                       "test": correct_test},
          index={"train": subset, "removed": removed, "test": test_index},
          subsample_idx=subset)


# ------------------------------------------------------------------ blocks --


def train_block(store: RunStore, trainer, runs: Sequence[int],
                group_size: int, *, train_images, train_labels, test_images,
                test_labels, save_checkpoints: bool = True,
                on_step: Optional[Callable[[int, int], None]] = None,
                evaluator=None,
                is_done: Optional[Callable[[int], bool]] = None,
                on_epoch_end=None,
                after_training: Optional[Callable] = None,
                after_write: Optional[Callable[[int, int], None]] = None
                ) -> List[int]:
  """Trains the canonical block holding `runs`; writes its unfinished runs.

  The block (runs `[k*G, (k+1)*G)`, `k = runs[0] // G`) is always trained
  whole, so each run's arrays are the same however the collection is made;
  block runs not in `runs` are trained and discarded. Depends only on the
  trainer's config, the data and the block: safe to run in any worker, and
  to repeat (finished runs are skipped, writes are atomic).

  Args:
    store: where the runs go.
    trainer: a `heldout_tf.training.EnsembleTrainer` on the training data.
    runs: wanted run ids, all in one block (as `groups` returns them).
    group_size: G, the collection's recorded group size.
    train_images, train_labels: the trainer's data ([n_train, ...], [n_train]).
    test_images, test_labels: [n_test, ...], [n_test].
    save_checkpoints: also write each run's `checkpoints/ckpt-<epochs>`.
    on_step: passed to `trainer.train`: `on_step(done, total)` per step.
    evaluator: computes the recorded correctness (`.predict`): a float32
      `EnsembleTrainer` (default: `float32_evaluator(trainer, ...)`), so
      the aux arrays are what the float32 checkpoint predicts when restored
      and re-evaluated (`heldout_tf.evaluation`), whatever the training
      precision. Pass one to reuse it across blocks.
    is_done: `is_done(run)`, when a run counts as finished (default: the
      store's `is_finished`); pipelines that write more per run (e.g.
      signals) pass their own.
    on_epoch_end: passed to `trainer.train` (per-epoch signals).
    after_training: `after_training(members, result)` after the block is
      trained, before any run is written (e.g. a second training phase).
    after_write: `after_write(run, g)` after run `run` (block position `g`)
      is written (e.g. its signals file).

  Returns:
    The run ids written (the unfinished ones of `runs`).
  """
  from heldout_tf import checkpoints  # pylint: disable=g-import-not-at-top
  from heldout_tf import training  # pylint: disable=g-import-not-at-top
  _check_group_size(group_size)
  runs = sorted(set(int(r) for r in runs))
  if not runs:
    return []
  block = runs[0] // group_size
  members = block_runs(block, group_size)
  strays = [r for r in runs if r not in members]
  if strays:
    raise ValueError(f"runs {strays} are not in block {block} "
                     f"(runs {members[0]}..{members[-1]})")
  if is_done is None:
    todo = store.unfinished(runs, save_checkpoints)
  else:
    todo = [r for r in runs if not is_done(r)]
  if not todo:
    return []
  result = trainer.train(members, on_step=on_step, on_epoch_end=on_epoch_end)
  if after_training is not None:
    after_training(members, result)
  if evaluator is None:
    evaluator = float32_evaluator(trainer, train_images, train_labels)
  correct_train = evaluator.predict(result, train_images) == np.asarray(
      train_labels)[None]
  correct_test = evaluator.predict(result, test_images) == np.asarray(
      test_labels)[None]
  config, total_steps = trainer.config, trainer.total_steps()
  input_dim = int(np.prod(np.shape(train_images)[1:]))
  module = None
  for run in todo:
    g = members.index(run)
    save = None
    if save_checkpoints:
      if module is None:
        module = training.build_module(config, result.model_params(g),
                                       input_dim)
      else:
        training.set_params(module, result.model_params(g))
      save = lambda directory, m=module: checkpoints.save(
          m, directory, step=config.epochs, epoch=config.epochs,
          global_step=total_steps)
    store.write_run(run, subset=result.subsets[g],
                    correct_train=correct_train[g],
                    correct_test=correct_test[g], save_checkpoint=save)
    if after_write is not None:
      after_write(run, g)
  return todo


def fingerprint(*arrays) -> str:
  """A short hash of the arrays a collection's runs depend on (its data),
  for the recorded config: same data or not."""
  digest = hashlib.sha256()
  for array in arrays:
    digest.update(np.ascontiguousarray(array).tobytes())
  return digest.hexdigest()[:16]


def float32_evaluator(trainer, train_images, train_labels):
  """`trainer` if it trains in float32, else a float32 twin for `predict`.

  A checkpoint holds float32 weights; recorded correctness must be what
  those weights predict in float32, not the bfloat16 training forward pass.
  """
  from heldout_tf import training  # pylint: disable=g-import-not-at-top
  if trainer.config.precision == "float32":
    return trainer
  return training.EnsembleTrainer(
      train_images, train_labels,
      dataclasses.replace(trainer.config, precision="float32"))
