"""Re-evaluating a collection's runs: restore, evaluate, cross-check.

  for run, evaluated in reevaluation.evaluate_collection(root, experiment,
                                                         ratios=[0.7]):
    print(run.run, evaluated.check)          # "N out of M predictions match"

`evaluate_runs` is the whole loop over many runs of one experiment: restore
(`collection.checkpoints.restore`), evaluate and cross-check
(`collection.evaluation`). It reuses one model and one compiled forward
pass: only the variables change between runs. `evaluate_collection` runs
it on any collection, released (the experiments registry) or made by the
kit (its recorded model and data, `collection.recorded`), and can also
record each run's `margins.npz` from the logits it computed
(`heldout_tf.collection.margins`).
"""

import dataclasses
import os
import time
from typing import Iterable, Iterator, List, Optional, Sequence, Tuple

from heldout_tf import models
from heldout_tf.collection import experiments
from heldout_tf.collection import layout
from heldout_tf.collection import selection
from heldout_tf.collection import margins as margins_lib
from heldout_tf.collection import provenance
from heldout_tf.collection import recorded
from heldout_tf.collection import runs
from heldout_tf.collection.evaluation import cross_check
from heldout_tf.collection.evaluation import CrossCheck
from heldout_tf.collection.evaluation import CrossCheckError
from heldout_tf.collection.evaluation import evaluate
from heldout_tf.collection.evaluation import EvalResult
from heldout_tf.collection.evaluation import read_split
from heldout_tf.core import errors
from heldout_tf.data import pipelines
from heldout_tf.collection import checkpoints

SPLITS = ("test", "train", "both")  # What `evaluate_runs` evaluates.


class RunNotFoundError(errors.HeldoutError, FileNotFoundError):
  """A run directory, or the checkpoint or aux_arrays.npz in it, is missing."""


@dataclasses.dataclass
class RunEvaluation:
  """One run restored, evaluated and cross-checked on one split by
  `evaluate_runs` (`check.split` says which)."""
  path: str  # The run directory.
  info: checkpoints.RestoreInfo  # Checkpoint prefix, epoch, global step.
  result: EvalResult
  check: CrossCheck
  subset_fraction: float  # Share of the training set the run trained on.
  # Wall time of the restore (0 for a run's second split: restored once).
  restore_seconds: float
  evaluate_seconds: float  # Wall time of reading aux, evaluating, checking.
  # `evaluate_collection(record_margins=True)`, on a run's last split.
  margins: Optional["MarginsRecord"] = None


@dataclasses.dataclass(frozen=True)
class MarginsRecord:
  """Whether a run's `margins.npz` was written, and where (or why not)."""
  path: Optional[str]  # The file written; None when not written.
  problem: str = ""  # Why it was not written.

  @property
  def written(self) -> bool:
    return self.path is not None

  def __str__(self):
    return f"wrote {self.path}" if self.written else (
        f"not written: {self.problem}")


def missing_files(run_dir: str) -> Optional[str]:
  """Why `run_dir` cannot be evaluated for lack of files, or None.

  Says whether the directory, its checkpoint or its aux_arrays.npz is
  missing, naming the path; the checkpoint is found as `evaluate_runs` will
  restore it (`checkpoints.find_checkpoint`: exactly one `ckpt-<N>`), so a
  run that passes here does not stop later for want of a checkpoint.
  (Files that exist but are bad are reported by `evaluate_runs`.)
  """
  if not os.path.isdir(run_dir):
    return f"No run found at {run_dir}"
  aux = os.path.join(run_dir, layout.AUX_FILENAME)
  has_aux = os.path.isfile(aux)
  try:
    checkpoints.find_checkpoint(run_dir)
    no_checkpoint = None
  except checkpoints.CheckpointNotFoundError as e:
    no_checkpoint = str(e)
  if has_aux and no_checkpoint is None:
    return None
  if no_checkpoint is None:
    return (f"{run_dir} has a checkpoint but no {layout.AUX_FILENAME} "
            f"({aux} does not exist)")
  if has_aux:
    return (f"{run_dir} has {layout.AUX_FILENAME} but no usable checkpoint: "
            f"{no_checkpoint}")
  return (f"No run found at {run_dir} (neither {layout.AUX_FILENAME} nor a "
          f"checkpoint: {no_checkpoint})")


def check_runs_present(run_dirs: Iterable[str]) -> List[str]:
  """`missing_files` of every run that lacks files; empty when all are
  complete."""
  return [m for m in map(missing_files, run_dirs) if m]


def _subset_fraction(aux) -> float:
  n_train = len(aux["index_train"]) + len(aux["index_removed"])
  return len(aux["subsample_idx"]) / n_train if n_train else float("nan")


def _splits(split: str) -> Tuple[str, ...]:
  """The splits `split` ('test', 'train' or 'both') stands for, in order."""
  if split not in SPLITS:
    raise errors.UsageError(
        f"split must be 'train', 'test' or 'both', got {split!r}")
  return ("train", "test") if split == "both" else (split,)


def evaluate_runs(experiment, run_dirs: Iterable[str], dataset, split: str,
                  batch_size: int = 200, progress: bool = True,
                  model=None) -> Iterator[RunEvaluation]:
  """Restores, evaluates and cross-checks each run; yields one result per
  run and split.

  One model (built on the first run, or `model`) and one compiled forward
  pass serve every run: only the variables change. Every run is checked for
  its files before the first is evaluated.

  Args:
    experiment: a `heldout_tf.collection.experiments.Experiment`, or any object with
      the `arch` and `num_classes` of the runs.
    run_dirs: run directories (`<root>/<experiment>/<ratio>/<run>`).
    dataset: a `heldout_tf.data.pipelines.Dataset` of the experiment's data (its
      split is read once for all runs, see `read_split`).
    split: 'test', 'train' (train + removed examples) or 'both' (each run
      restored once, evaluated on the training set, then the test set).
    batch_size: evaluation batch size.
    progress: show a progress bar per run.
    model: a `models.build_model(experiment.arch, experiment.num_classes)`
      module to reuse (built when needed); a new one when None.

  Yields:
    RunEvaluation per run and split, in order (run 0 train, run 0 test,
    run 1 train, ... for 'both').

  Raises (all HeldoutErrors):
    RunNotFoundError: a run lacks its directory, checkpoint or aux_arrays.
    checkpoints.CheckpointMismatchError / CheckpointCorruptError /
    CheckpointNotFoundError, runs.AuxArraysError, image_data.DataError,
    CrossCheckError: a bad checkpoint, aux_arrays.npz or dataset.
  """
  run_dirs = list(run_dirs)
  splits = _splits(split)
  missing = check_runs_present(run_dirs)
  if missing:
    more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
    raise RunNotFoundError(missing[0] + more)
  if not run_dirs:
    return
  if model is None:
    model = models.build_model(experiment.arch, experiment.num_classes)
  models.ensure_built(model, experiment.arch)
  sources = {}  # Read after the first restore: a bad checkpoint fails first.
  for path in run_dirs:
    start = time.perf_counter()
    info = checkpoints.restore(model, path, arch=experiment.arch)
    restored = time.perf_counter()
    restore_seconds = restored - start
    aux = runs.read_aux(path)
    for name in splits:
      if name not in sources:
        sources[name] = read_split(dataset, name, batch_size)
      result = evaluate(model, sources[name], name, batch_size,
                        progress=progress)
      try:
        check = cross_check(aux, result, name)
      except CrossCheckError as e:
        raise CrossCheckError(
            f"{os.path.join(path, layout.AUX_FILENAME)}: {e}") from e
      yield RunEvaluation(path, info, result, check, _subset_fraction(aux),
                          restore_seconds=restore_seconds,
                          evaluate_seconds=time.perf_counter() - restored)
      restore_seconds, restored = 0.0, time.perf_counter()


def select_runs(root: str, experiment: str, ratios: Optional[Sequence] = None,
                run_ids: Optional[Sequence[int]] = None
                ) -> List[layout.RunPath]:
  """The runs a command line asks for, sorted (they may not exist).

  `ratios` None: every ratio on disk; `run_ids` None: every run on disk at
  the ratios. Explicit ratios and ids name directories whether or not they
  exist (`missing_files` says what is missing).
  """
  if run_ids is None:
    return layout.list_runs(root, experiment, ratios)
  if ratios is None:
    ratios = sorted({r.ratio for r in layout.list_runs(root, experiment)})
  return sorted(
      layout.RunPath(selection.ratio_value(ratio), run,
                     layout.run_dir(root, experiment, ratio, run))
      for ratio in ratios for run in run_ids)


def write_margins(train: RunEvaluation, test: RunEvaluation
                  ) -> MarginsRecord:
  """Writes the run's `margins.npz` from its two evaluations. Not written
  (the record says why) when the logits disagree with the run's recorded
  correctness: then they are not the logits the run's aux arrays came
  from, and the file would be refused on reading."""
  try:
    path = margins_lib.write(
        train.path, train_logits=train.result.logits,
        train_labels=train.result.labels, train_index=train.result.index,
        test_logits=test.result.logits, test_labels=test.result.labels,
        test_index=test.result.index)
  except margins_lib.MarginsError as e:
    return MarginsRecord(None, str(e))
  return MarginsRecord(path)


def _kit_groups(root: str, name: str, selected, model: str, dataset: str,
                data_dir: Optional[str]):
  """`[(experiment, dataset, model, runs)]` per ratio of a kit-made
  collection (each ratio's config.json: `collection.recorded`), or None
  when the runs have no config.json (released runs). Data and models are
  shared between ratios that record the same."""
  loaded, built, out = {}, {}, []
  for ratio in sorted({run.ratio for run in selected}):
    found = recorded.of_ratio(root, name, ratio, model)
    if found is None:
      if out:
        raise errors.ConfigError(
            f"{layout.ratio_dir(root, name, ratio)}: no config.json, unlike "
            "the other ratios of this experiment (made by heldout train)")
      return None
    source = provenance.source_of(found.config, found.where, dataset,
                                  data_dir)
    if source not in loaded:
      data, _ = found.load_data(dataset, data_dir)
      loaded[source] = (data, pipelines.in_memory_dataset(
          data.name, data.images, data.labels))
    data, split_source = loaded[source]
    key = (found.model, found.options, found.num_classes, found.image_shape)
    if key not in built:
      built[key] = found.build()
    experiment = experiments.Experiment(
        name, found.model, found.num_classes, found.dataset,
        input_shape=found.image_shape, preprocessing=recorded.PREPROCESSING)
    out.append((experiment, split_source, built[key],
                [run for run in selected if run.ratio == ratio]))
  return out


def evaluate_collection(root: str, experiment, ratios=(0.7,), run_ids=(0,),
                        split: str = "test", data_dir: Optional[str] = None,
                        download: bool = False,
                        index_map: Optional[str] = None,
                        batch_size: int = 200, progress: bool = True,
                        record_margins: bool = False, model: str = "",
                        dataset: str = ""
                        ) -> Iterator[Tuple[layout.RunPath, RunEvaluation]]:
  """Re-evaluates the selected runs of a collection; the evaluate workflow.

  Selects the runs (`select_runs`), checks that every one has its files,
  and yields `(run, RunEvaluation)` per run and split from
  `evaluate_runs`. A collection `heldout train` made (config.json beside
  its runs) is evaluated with its recorded model and data
  (`collection.recorded`); released runs with their experiment's model
  and pipeline (`heldout_tf.data.pipelines.load`). With `record_margins`
  (needs `split='both'`) each run's `margins.npz` is written from the
  logits of its two evaluations (`write_margins`; the run's test-split
  RunEvaluation says how in `margins`).

  Args:
    root: the collection root, holding `<experiment>/<ratio>/<run>/`.
    experiment: an experiment name or `heldout_tf.collection.experiments.Experiment`.
    ratios, run_ids: the runs (None: all on disk), as in `select_runs`.
    split, batch_size, progress: as in `evaluate_runs`.
    data_dir, download, index_map: as in `heldout_tf.data.pipelines.load`
      (a kit collection: `data_dir` is its tfds directory).
    record_margins: write each run's `margins.npz` (split must be 'both').
    model: --model as given: names a kit collection's recorded user module
      again (it is imported only then); '' otherwise.
    dataset: a kit collection's data from elsewhere than recorded (e.g. a
      moved npz file); its fingerprint must match.

  Raises:
    RunNotFoundError: no run selected, or one lacks its files (nothing was
      evaluated); errors.UsageError: `record_margins` without 'both', or
      an experiment neither registered nor made by the kit; and the errors
      of `collection.recorded`, `pipelines.load` and `evaluate_runs`.
  """
  if record_margins and split != "both":
    raise errors.UsageError("recording margins needs split 'both' (the "
                            f"training and the test set), got {split!r}")
  name = experiment if isinstance(experiment, str) else experiment.name
  selected = select_runs(root, name, ratios, run_ids)
  if not selected:
    where = os.path.join(root, name)
    raise RunNotFoundError(f"No run found under {where}" + (
        "" if ratios is None else " at ratio(s) " + ", ".join(
            layout.format_ratio(r) for r in ratios)))
  missing = check_runs_present(run.path for run in selected)
  if missing:
    more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
    raise RunNotFoundError(missing[0] + more)
  groups = _kit_groups(root, name, selected, model, dataset, data_dir)
  if groups is None:
    if isinstance(experiment, str):
      if experiment not in experiments.EXPERIMENTS:
        raise errors.UsageError(
            f"--experiment {experiment!r}: {os.path.join(root, experiment)} "
            "has no config.json (not made by heldout train) and it is not "
            f"a released experiment ({', '.join(experiments.EXPERIMENTS)})")
      experiment = experiments.get(experiment)
    if model or dataset:
      raise errors.UsageError(
          f"--model and --dataset name a collection made by heldout train; "
          f"{name} is a released experiment")
    groups = [(experiment, pipelines.load(experiment.dataset, data_dir,
                                          download, index_map=index_map),
               None, selected)]
  per_run = len(_splits(split))
  for experiment, split_source, module, runs_of in groups:
    previous = None
    evaluated = evaluate_runs(experiment, [run.path for run in runs_of],
                              split_source, split, batch_size,
                              progress=progress, model=module)
    for k, result in enumerate(evaluated):
      if record_margins and k % per_run == 1:
        result.margins = write_margins(previous, result)
      previous = result
      yield runs_of[k // per_run], result
