"""Re-run evaluation of restored runs and cross-check it with aux_arrays.npz.

`evaluate_runs` is the whole loop over many runs of one experiment: restore,
evaluate, cross-check. It reuses one model and one compiled forward pass:
only the variables change between runs (see `heldout_tf.checkpoints.
restore`). `evaluate` and `cross_check` are its steps.
"""

import dataclasses
import glob
import os
import re
import time
from typing import Iterable, Iterator, List, Optional
import weakref

import numpy as np
import tensorflow as tf

from heldout_tf import checkpoints
from heldout_tf import data
from heldout_tf import errors
from heldout_tf import layout
from heldout_tf import models
from heldout_tf import progress as progress_lib
from heldout_tf import runs

# Bad data met while reading a split (an undecodable image, an ImageNet file
# name missing from the index map): a HeldoutError and a ValueError.
DataError = data.DataError


class CrossCheckError(errors.HeldoutError, ValueError):
  """aux_arrays.npz and the evaluation do not cover the same examples."""


class RunNotFoundError(errors.HeldoutError, FileNotFoundError):
  """A run directory, or the checkpoint or aux_arrays.npz in it, is missing."""


_COMPILED = weakref.WeakKeyDictionary()


def _eval_options():
  """tf.data options for one evaluation pass.

  With autotuning on, destroying the iterator at the end of a pass sometimes
  waited ~0.4-0.9 s for tf.data's tuning thread (measured on 2 CPU cores):
  a fixed cost per run that evaluating many runs should not pay.
  """
  options = tf.data.Options()
  options.autotune.enabled = False
  return options


@dataclasses.dataclass
class EvalResult:
  """Per-example evaluation of one model on one split, in dataset order."""
  logits: np.ndarray  # float32 [n, num_classes]
  labels: np.ndarray  # int64 [n]
  index: np.ndarray  # int64 [n], canonical example index

  @property
  def predictions(self) -> np.ndarray:
    return np.argmax(self.logits, axis=-1)

  @property
  def correct(self) -> np.ndarray:
    return self.predictions == self.labels

  @property
  def accuracy(self) -> float:
    return float(np.mean(self.correct)) if len(self.labels) else float("nan")


@dataclasses.dataclass
class CrossCheck:
  """How many recomputed correctness bits equal the recorded ones."""
  split: str
  matched: int
  total: int
  mismatched_index: np.ndarray  # canonical indices that disagree

  @property
  def ok(self) -> bool:
    return self.matched == self.total

  def __str__(self):
    return f"{self.matched} out of {self.total} predictions match"


def compiled_forward(model):
  """The model's evaluation-mode forward pass, traced once per model.

  The function holds the model weakly: a strong reference from the cached
  value would keep every model (and its graph) alive forever.
  """
  fn = _COMPILED.get(model)
  if fn is None:
    model_ref = weakref.ref(model)
    fn = tf.function(lambda images: model_ref()(images, is_training=False),
                     reduce_retracing=True)
    _COMPILED[model] = fn
  return fn


def op_error_message(error: tf.errors.OpError) -> str:
  """A TensorFlow op error's message without the op and node trace."""
  lines = [line.strip() for line in error.message.splitlines()
           if line.strip()]
  for line in lines:
    if "assertion failed: [" in line:
      # tf.debugging.Assert prints a single string as "[...]".
      text = line.split("assertion failed: [", 1)[1]
      return text[:text.rindex("]")] if "]" in text else text
  for line in lines:
    if not line.startswith(("Graph execution error:", "Detected at node",
                            "File ")):
      line = re.sub(r"\{\{[^}]*\}\}\s*", "", line)
      return re.sub(r"\s*\[Op:[^\]]*\].*$", "", line)
  return str(error)


def evaluate(model, dataset, split: str, batch_size: int = 200,
             progress: bool = True) -> EvalResult:
  """Evaluates `model` on `split` of a `heldout_tf.data.Dataset`.

  Returns logits, labels and canonical indices in dataset order. Raises
  DataError (a HeldoutError and ValueError) when the data cannot be read or
  the split is empty.
  """
  forward = compiled_forward(model)
  batches, num_examples = dataset.batches(split, batch_size)
  batches = batches.with_options(_eval_options())
  logits, labels, index = [], [], []
  with progress_lib.bar(num_examples, f"evaluate {split}", "img",
                        enabled=progress) as bar:
    try:
      for batch in batches:
        logits.append(forward(batch["image"]).numpy())
        labels.append(batch["label"].numpy())
        index.append(batch["index"].numpy())
        bar.update(len(index[-1]))
    except tf.errors.InvalidArgumentError as e:
      raise DataError(f"{op_error_message(e)} (reading {dataset.name} "
                      f"{split})") from e
  if not logits:
    raise DataError(f"Split {split!r} of {dataset.name} is empty")
  return EvalResult(np.concatenate(logits), np.concatenate(labels),
                    np.concatenate(index))


def recorded_correctness(aux, split: str):
  """`(index, correctness)` recorded in aux_arrays for `split`.

  For 'train' this is train + removed: the whole training set.
  """
  if split == "train":
    parts = ("train", "removed")
  elif split == "test":
    parts = ("test",)
  else:
    raise errors.UsageError(
        f"split must be 'train' or 'test', got {split!r}")
  index = np.concatenate([np.asarray(aux[f"index_{p}"]) for p in parts])
  correct = np.concatenate(
      [np.asarray(aux[f"correctness_{p}"], bool) for p in parts])
  return index, correct


def cross_check(aux, result: EvalResult, split: str) -> CrossCheck:
  """Compares `result.correct` with the correctness recorded in `aux`.

  Examples are matched by canonical index. Raises CrossCheckError (a
  ValueError) when the two do not cover the same examples.
  """
  index, recorded = recorded_correctness(aux, split)
  order = np.argsort(index, kind="stable")
  index, recorded = index[order], recorded[order]
  mine_order = np.argsort(result.index, kind="stable")
  mine_index = result.index[mine_order]
  mine = result.correct[mine_order]
  if len(index) != len(mine_index) or np.any(index != mine_index):
    raise CrossCheckError(
        f"aux_arrays {split!r} covers {len(index)} examples (indices "
        f"{_span(index)}) but the evaluation covers {len(mine_index)} "
        f"(indices {_span(mine_index)}): wrong dataset or split?")
  differ = mine != recorded
  return CrossCheck(split, int(len(index) - differ.sum()), int(len(index)),
                    index[differ])


def _span(index):
  return f"{index.min()}..{index.max()}" if len(index) else "none"


@dataclasses.dataclass
class RunEvaluation:
  """One run restored, evaluated and cross-checked by `evaluate_runs`."""
  path: str  # The run directory.
  info: checkpoints.RestoreInfo  # Checkpoint prefix, epoch, global step.
  result: EvalResult
  check: CrossCheck
  subset_fraction: float  # Share of the training set the run trained on.
  restore_seconds: float  # Wall time of the restore.
  evaluate_seconds: float  # Wall time of reading aux, evaluating, checking.


def missing_files(run_dir: str) -> Optional[str]:
  """Why `run_dir` cannot be evaluated for lack of files, or None.

  Says whether the directory, its checkpoint or its aux_arrays.npz is
  missing, naming the path. (Files that exist but are bad are reported by
  `evaluate_runs`.)
  """
  if not os.path.isdir(run_dir):
    return f"No run found at {run_dir}"
  aux = os.path.join(run_dir, layout.AUX_FILENAME)
  has_aux = os.path.isfile(aux)
  has_checkpoint = bool(
      glob.glob(os.path.join(glob.escape(run_dir), "ckpt-*.index")) or
      glob.glob(os.path.join(glob.escape(run_dir), layout.CHECKPOINTS_DIRNAME,
                             "ckpt-*.index")))
  if has_aux and has_checkpoint:
    return None
  if has_checkpoint:
    return (f"{run_dir} has a checkpoint but no {layout.AUX_FILENAME} "
            f"({aux} does not exist)")
  if has_aux:
    return (f"{run_dir} has {layout.AUX_FILENAME} but no checkpoint (no "
            f"{os.path.join(run_dir, layout.CHECKPOINTS_DIRNAME)}/"
            "ckpt-<N>.index)")
  return (f"No run found at {run_dir} (neither {layout.AUX_FILENAME} nor a "
          "checkpoint)")


def check_runs_present(run_dirs: Iterable[str]) -> List[str]:
  """`missing_files` of every run that lacks files; empty when all are
  complete."""
  return [m for m in map(missing_files, run_dirs) if m]


def _subset_fraction(aux) -> float:
  n_train = len(aux["index_train"]) + len(aux["index_removed"])
  return len(aux["subsample_idx"]) / n_train if n_train else float("nan")


def evaluate_runs(experiment, run_dirs: Iterable[str], dataset, split: str,
                  batch_size: int = 200, progress: bool = True,
                  model=None) -> Iterator[RunEvaluation]:
  """Restores, evaluates and cross-checks each run; yields one result each.

  One model (built on the first run, or `model`) and one compiled forward
  pass serve every run: only the variables change. Every run is checked for
  its files before the first is evaluated.

  Args:
    experiment: a `heldout_tf.released.Experiment`, or any object with the
      `arch` and `num_classes` of the runs.
    run_dirs: run directories (`<root>/<experiment>/<ratio>/<run>`).
    dataset: a `heldout_tf.data.Dataset` of the experiment's data.
    split: 'test' or 'train' (train + removed examples).
    batch_size: evaluation batch size.
    progress: show a progress bar per run.
    model: a `models.build_model(experiment.arch, experiment.num_classes)`
      module to reuse (built when needed); a new one when None.

  Yields:
    RunEvaluation per run, in order.

  Raises (all HeldoutErrors):
    RunNotFoundError: a run lacks its directory, checkpoint or aux_arrays.
    checkpoints.CheckpointMismatchError / CheckpointCorruptError /
    CheckpointNotFoundError, runs.AuxArraysError, DataError,
    CrossCheckError: a bad checkpoint, aux_arrays.npz or dataset.
  """
  run_dirs = list(run_dirs)
  if split not in ("train", "test"):
    raise errors.UsageError(
        f"split must be 'train' or 'test', got {split!r}")
  missing = check_runs_present(run_dirs)
  if missing:
    more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
    raise RunNotFoundError(missing[0] + more)
  if not run_dirs:
    return
  if model is None:
    model = models.build_model(experiment.arch, experiment.num_classes)
  models.ensure_built(model, experiment.arch)
  for path in run_dirs:
    start = time.perf_counter()
    info = checkpoints.restore(model, path, arch=experiment.arch)
    restored = time.perf_counter()
    aux = runs.read_aux(path)
    result = evaluate(model, dataset, split, batch_size, progress=progress)
    try:
      check = cross_check(aux, result, split)
    except CrossCheckError as e:
      raise CrossCheckError(
          f"{os.path.join(path, layout.AUX_FILENAME)}: {e}") from e
    yield RunEvaluation(path, info, result, check, _subset_fraction(aux),
                        restore_seconds=restored - start,
                        evaluate_seconds=time.perf_counter() - restored)
