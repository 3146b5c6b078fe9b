"""The store of one collection being made: one experiment at one ratio.

  <root>/<experiment>/<ratio>/config.json
  <root>/<experiment>/<ratio>/<run>/checkpoints/ckpt-<N>.{index,data-*}
  <root>/<experiment>/<ratio>/<run>/margins.npz     (optional)
  <root>/<experiment>/<ratio>/<run>/aux_arrays.npz

(names from `heldout_tf.collection.layout`). `record_config` writes the
collection's settings once and checks every later call against them
(`collection.train` records them as its first block starts, after the
training workflow's data and model checks passed: a call that fails those
checks leaves nothing that blocks the corrected one). A run is finished
once its `aux_arrays.npz` exists: `write_run` writes the checkpoint first
and the aux arrays last, each atomically, so a killed job never leaves a
run that looks finished but is not, and a repeated `write_run` rewrites the
same bytes.
"""

import json
import os
from typing import Callable, List, Optional, Sequence

import numpy as np

from heldout_tf.core import errors
from heldout_tf.core import files
from heldout_tf.collection import layout
from heldout_tf.collection import margins as margins_lib
from heldout_tf.collection import runs as runs_lib

_FINISH_HINT = "Train them (same settings), then estimate."
# config.json keys recorded for information, never compared: where the data
# was found and what it was called (the data itself is compared by its
# fingerprint, so the same bytes at another path resume).
INFORMATION_KEYS = ("source", "dataset")
# Keys newer than some collections: compared where a config records them;
# a config recorded before they existed keeps resuming, and nothing is
# added to it.
LATER_KEYS = ("model_variables",)
_SHOWN_DIFFERENCES = 6  # Differing keys a refusal names (then "N more").


class IncompleteRunsError(errors.HeldoutError, ValueError):
  """The runs on disk are not exactly the ones asked for."""


class MissingConfigError(errors.HeldoutError, FileNotFoundError):
  """No collection here yet: its config.json does not exist."""


def _differences(recorded: dict, config: dict, prefix: str = ""):
  """`[(key, recorded value, new value)]` of the keys that differ, nested
  objects compared key by key ('recipe.epochs'); missing values are None."""
  out = []
  for key in sorted(set(recorded) | set(config)):
    old, new = recorded.get(key), config.get(key)
    if isinstance(old, dict) and isinstance(new, dict):
      out += _differences(old, new, f"{prefix}{key}.")
    elif old != new:
      out.append((prefix + key, old, new))
  return out


class Store:
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
          "first with the same --root and --ratio")
    return config

  def record_config(self, config: dict,
                    say: Optional[Callable[[str], None]] = None) -> dict:
    """Writes `config` as config.json, or checks it equals the recorded one.

    Values are compared as JSON (tuples equal lists), except the
    `INFORMATION_KEYS` (never compared) and the `LATER_KEYS` a recorded
    config lacks (not recorded then: not compared). A recorded config that
    differs is replaced only when nothing was trained under it (no file in
    any run directory: e.g. its first run diverged, which leaves nothing),
    saying so with `say`; otherwise it is never rewritten. Raises
    `errors.ConfigError` naming the differing keys with both values, and
    `errors.PathError` if the directory cannot be written.
    """
    config = json.loads(json.dumps(config))
    with errors.user_path(self.path, "write"):
      os.makedirs(self.path, exist_ok=True)
    recorded = self.recorded_config()
    if recorded is None:
      return self._write_config(config)
    ignored = set(INFORMATION_KEYS) | {k for k in LATER_KEYS
                                       if k not in recorded}
    differ = _differences(
        {k: v for k, v in recorded.items() if k not in ignored},
        {k: v for k, v in config.items() if k not in ignored})
    if differ:
      details = "; ".join(f"{k}: on disk {old!r}, now {new!r}"
                          for k, old, new in differ[:_SHOWN_DIFFERENCES])
      if len(differ) > _SHOWN_DIFFERENCES:
        details += f"; and {len(differ) - _SHOWN_DIFFERENCES} more"
      if not self.has_work():
        self._write_config(config)
        if say is not None:
          say(f"{self.config_path}: replaced (nothing was trained under it; "
              f"{details})")
        return config
      raise errors.ConfigError(
          f"{self.config_path}: the runs there were made with other settings "
          f"({details}). Use another --root, or the same settings to resume.")
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
      from heldout_tf.collection import checkpoints  # pylint: disable=g-import-not-at-top
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

  def _write_config(self, config: dict) -> dict:
    """Writes `config` (JSON values) as config.json, atomically."""
    files.atomic_write(self.config_path, lambda f: f.write(json.dumps(
        config, indent=2, sort_keys=True) + "\n"), mode="w")
    return config

  def has_work(self) -> bool:
    """Whether any run directory holds a file (a finished run, a partial
    one's resume checkpoints, a trajectory): work a new config would
    orphan."""
    for run in self.run_ids_on_disk():
      for _, _, names in os.walk(self.run_dir(run)):
        if names:
          return True
    return False

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
                save_checkpoint: Optional[Callable[[str], object]] = None,
                logits: Optional[dict] = None):
    """Writes one finished run: its checkpoint (optional), its margins
    (optional), then its aux arrays.

    The one place that turns a run's outputs into the released layout.

    Args:
      run: the run id.
      subset: int [k], the training examples the run trained on.
      correct_train: bool [n_train], correctness on every training example.
      correct_test: bool [n_test], correctness on every test example.
      test_index: int [n_test] canonical test indices (default 0..n_test-1).
      save_checkpoint: called with the run's `checkpoints/` directory before
        the aux arrays are written (e.g. `checkpoints.save(module, d, ...)`).
      logits: the final model's float32 `train_logits` [n_train, classes],
        `train_labels`, `test_logits` [n_test, classes], `test_labels`,
        rows in the order of `correct_train` / `correct_test` (the logits
        the correctness came from): writes `margins.npz`
        (`heldout_tf.collection.margins`) before the aux arrays, so a run
        that looks finished has its margins.
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
    correctness = {"train": correct_train[subset],
                   "removed": correct_train[removed], "test": correct_test}
    index = {"train": subset, "removed": removed,
             "test": np.asarray(test_index, np.int64)}
    with errors.user_path(path, "write"):
      if save_checkpoint is not None:
        save_checkpoint(os.path.join(path, layout.CHECKPOINTS_DIRNAME))
      if logits is not None:
        aux = {f"{kind}_{split}": values[split]
               for kind, values in (("correctness", correctness),
                                    ("index", index))
               for split in runs_lib.SPLITS}
        margins_lib.write(path, aux=aux, test_index=index["test"], **logits)
      runs_lib.write_aux(path, correctness=correctness, index=index,
                         subsample_idx=subset)
