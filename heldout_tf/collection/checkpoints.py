"""Strict, all-or-nothing restore (and safe save) of `ckpt-<N>` checkpoints.

Released runs were saved with
`tf.train.Checkpoint(model=..., epoch=..., global_step=..., ...)`.
`restore` loads the `model/...` values into a module built by
`heldout_tf.models.build_model` (building it first when needed) and refuses
anything but an exact match. It reads and checks every value before it
assigns any, so a mismatched or corrupt checkpoint leaves the model as it
was.

A mismatch error shows the counts and the first few keys of each kind; its
`.missing`, `.unexpected` and `.shape_mismatches` attributes hold all of
them, `diff(model, path)` computes them without raising, and setting
`HELDOUT_VERBOSE_ERRORS=1` puts every key in the message.
"""

import collections
import dataclasses
import glob
import os
import re
import secrets
import shutil
from typing import List, Optional, Tuple

import numpy as np
import tensorflow as tf

from heldout_tf.core import errors
from heldout_tf.core import files
from heldout_tf.collection import layout
from heldout_tf import models
from heldout_tf.core import npz

VERBOSE_ERRORS_ENV = "HELDOUT_VERBOSE_ERRORS"
KEYS_SHOWN = 5  # Keys of each kind a mismatch message shows.

_VALUE_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"
_CKPT_RE = re.compile(r"ckpt-(\d+)\.index")
# Temporary names of `save`: `.tmp-<pid>-ckpt-<step>-<random>` plus TF's
# `.index`, `.data-*` and `_temp/` suffixes (`core.files` removes those of
# processes that no longer exist).


class CheckpointMismatchError(errors.HeldoutError, ValueError):
  """The checkpoint's model variables are not exactly the model's.

  Attributes:
    path: the `ckpt-<N>` prefix.
    missing: keys of model variables the checkpoint lacks.
    unexpected: `model/...` keys of the checkpoint the model lacks.
    shape_mismatches: `(key, model shape, checkpoint shape)`.
    dtype_mismatches: `(key, model dtype, checkpoint dtype)`.
  """

  def __init__(self, path, missing=(), unexpected=(), shape_mismatches=(),
               dtype_mismatches=()):
    self.path = path
    self.missing = list(missing)
    self.unexpected = list(unexpected)
    self.shape_mismatches = list(shape_mismatches)
    self.dtype_mismatches = list(dtype_mismatches)
    super().__init__(self._message())

  @property
  def mismatched(self) -> List[str]:
    """Keys present on both sides whose shape or dtype differ."""
    return sorted({k for k, _, _ in
                   self.shape_mismatches + self.dtype_mismatches})

  def _message(self) -> str:
    verbose = os.environ.get(VERBOSE_ERRORS_ENV, "") not in ("", "0")
    shown = None if verbose else KEYS_SHOWN
    lines = [f"Checkpoint {self.path} does not match the model:"]
    cut = False
    kinds = [
        (self.missing, "model variable(s) missing from the checkpoint",
         lambda k: k),
        (self.unexpected, "checkpoint value(s) the model does not have",
         lambda k: k),
        (self.shape_mismatches, "shape mismatch(es) (key: model vs "
         "checkpoint)", lambda m: f"{m[0]}: {m[1]} vs {m[2]}"),
        (self.dtype_mismatches, "dtype mismatch(es) (key: model vs "
         "checkpoint)", lambda m: f"{m[0]}: {m[1]} vs {m[2]}"),
    ]
    for items, what, fmt in kinds:
      if not items:
        continue
      lines.append(f"  {len(items)} {what}:")
      lines += [f"    {fmt(item)}" for item in items[:shown]]
      if shown is not None and len(items) > shown:
        lines.append(f"    ... and {len(items) - shown} more")
        cut = True
    if cut:
      lines.append(f"  Set {VERBOSE_ERRORS_ENV}=1 or call heldout_tf."
                   "checkpoints.diff(model, path) to list all.")
    return "\n".join(lines)


class CheckpointNotFoundError(errors.HeldoutError, FileNotFoundError):
  """No single `ckpt-<N>` could be found at the given path."""


class CheckpointCorruptError(errors.HeldoutError, ValueError):
  """A checkpoint file cannot be read (truncated, bit-flipped, missing)."""


@dataclasses.dataclass(frozen=True)
class RestoreInfo:
  path: str  # The `ckpt-<N>` prefix that was restored.
  epoch: Optional[int]
  global_step: Optional[int]


@dataclasses.dataclass(frozen=True)
class CheckpointDiff:
  """How a checkpoint's `model/...` values differ from a model's variables
  (the fields of `CheckpointMismatchError`)."""
  path: str
  missing: List[str]
  unexpected: List[str]
  shape_mismatches: List[Tuple[str, list, list]]
  dtype_mismatches: List[Tuple[str, str, str]]

  @property
  def ok(self) -> bool:
    return not (self.missing or self.unexpected or self.shape_mismatches or
                self.dtype_mismatches)

  def error(self) -> CheckpointMismatchError:
    return CheckpointMismatchError(self.path, self.missing, self.unexpected,
                                   self.shape_mismatches,
                                   self.dtype_mismatches)


def model_variables(model, prefix="model"):
  """Maps each checkpoint key (`model/.../.ATTRIBUTES/VARIABLE_VALUE`) to the
  model variable a `tf.train.Checkpoint(model=model)` would save there."""
  view = tf.train.TrackableView(model)
  found = {}
  seen = {id(model)}
  queue = collections.deque([(prefix, model)])
  # Breadth first, like the checkpoint's object graph: each object is saved
  # under the first (shortest) path that reaches it.
  while queue:
    path, obj = queue.popleft()
    for name, child in view.children(obj).items():
      if id(child) in seen:
        continue
      seen.add(id(child))
      child_path = f"{path}/{_escape(name)}"
      if isinstance(child, tf.Variable):
        found[child_path + _VALUE_SUFFIX] = child
      else:
        queue.append((child_path, child))
  return found


def _escape(name):
  return name.replace(".", "..").replace("/", "./")


def find_checkpoint(path: str) -> str:
  """Resolves a run directory, its `checkpoints/` dir, or a `ckpt-N` prefix to
  the single `ckpt-<N>` prefix there."""
  if os.path.exists(path + ".index"):
    return path
  if not os.path.isdir(path):
    raise CheckpointNotFoundError(
        f"{path}: neither a directory nor a checkpoint prefix "
        f"({path}.index does not exist)")
  directory = path
  sub = os.path.join(path, layout.CHECKPOINTS_DIRNAME)
  if os.path.isdir(sub):
    directory = sub
  found = sorted(
      (int(m.group(1)), m.group(0)[:-len(".index")])
      for m in (_CKPT_RE.fullmatch(os.path.basename(f))
                for f in glob.glob(os.path.join(directory, "ckpt-*.index")))
      if m)
  if len(found) != 1:
    what = ("no ckpt-<N>.index file" if not found else
            f"{len(found)} checkpoints ({', '.join(n for _, n in found)})")
    with errors.user_path(directory, "read"):
      listing = sorted(os.listdir(directory))[:20]
    raise CheckpointNotFoundError(
        f"{directory}: expected exactly one ckpt-<N> checkpoint, found {what}. "
        f"Directory contents: {listing}")
  return os.path.join(directory, found[0][1])


def _built_variables(model, arch):
  """`model_variables(model)`, building a `models.build_model` module first."""
  arch = arch or models.arch_of(model)
  if arch is not None:
    models.ensure_built(model, arch)
  variables = model_variables(model)
  if not variables:
    raise ValueError("The model has no variables yet: call it once on a "
                     "batch of inputs before restoring.")
  return variables


def _check_regular_files(prefix):
  """Refuses a checkpoint whose `.index` or `.data-*` files are not regular
  files (a FIFO would block TensorFlow's reader forever)."""
  for path in [prefix + ".index"] + sorted(
      glob.glob(glob.escape(prefix) + ".data-*")):
    npz.check_regular(path, CheckpointCorruptError,
                      os_error=CheckpointCorruptError)


def _open(prefix):
  """A `CheckpointReader` of `prefix`; CheckpointCorruptError when its files
  are not regular files or its index cannot be read."""
  _check_regular_files(prefix)
  try:
    return tf.train.load_checkpoint(prefix)
  except tf.errors.OpError as e:
    raise CheckpointCorruptError(
        f"{prefix}.index: not a readable checkpoint index "
        f"({_first_line(e.message)})") from e


def _first_line(text, limit=200):
  line = text.strip().splitlines()[0] if text.strip() else ""
  return line if len(line) <= limit else line[:limit] + "..."


def _compare(prefix, variables, reader) -> CheckpointDiff:
  shapes = reader.get_variable_to_shape_map()
  dtypes = reader.get_variable_to_dtype_map()
  stored = {k for k in shapes if k.startswith("model/")}
  both = sorted(set(variables) & stored)
  return CheckpointDiff(
      prefix,
      missing=sorted(set(variables) - stored),
      unexpected=sorted(stored - set(variables)),
      shape_mismatches=[
          (k, list(variables[k].shape), list(shapes[k])) for k in both
          if list(variables[k].shape) != list(shapes[k])],
      dtype_mismatches=[
          (k, variables[k].dtype.name, dtypes[k].name) for k in both
          if variables[k].dtype.base_dtype != dtypes[k].base_dtype])


def diff(model, path: str, arch: Optional[str] = None) -> CheckpointDiff:
  """Every difference between `model`'s variables and the checkpoint at
  `path` (building a `models.build_model` module first), without raising."""
  prefix = find_checkpoint(path)
  variables = _built_variables(model, arch)
  return _compare(prefix, variables, _open(prefix))


def _data_file(prefix) -> str:
  files = sorted(glob.glob(glob.escape(prefix) + ".data-*"))
  return files[0] if len(files) == 1 else prefix + ".data-*"


def _read(reader, prefix, key, shape, dtype) -> np.ndarray:
  """One stored value, checked against `shape` and `dtype`."""
  try:
    value = np.asarray(reader.get_tensor(key))
  except (tf.errors.OpError, IndexError, ValueError) as e:
    reason = _first_line(getattr(e, "message", None) or str(e))
    raise CheckpointCorruptError(
        f"{_data_file(prefix)}: corrupt checkpoint data, cannot read {key} "
        f"({reason}); nothing was restored") from e
  if list(value.shape) != list(shape) or value.dtype != dtype:
    raise CheckpointCorruptError(
        f"{_data_file(prefix)}: corrupt checkpoint data, {key} reads as "
        f"{value.dtype}{list(value.shape)}, its index says "
        f"{dtype}{list(shape)}; nothing was restored")
  return value


def restore(model, path: str, arch: Optional[str] = None) -> RestoreInfo:
  """Restores `model` from the checkpoint at `path`, strictly and atomically.

  A module made by `models.build_model` is built first when needed (`arch`
  defaults to `models.arch_of(model)`); other modules must be built. Every
  model variable must be in the checkpoint with the same shape and dtype, and
  every `model/...` value in the checkpoint must belong to the model; other
  top-level objects (optimizer, counters) are ignored. All values are read
  and checked before any is assigned: on any error the model is unchanged.

  Raises:
    CheckpointNotFoundError: no single `ckpt-<N>` at `path`.
    CheckpointMismatchError: missing / unexpected keys, shape or dtype
      mismatches.
    CheckpointCorruptError: a checkpoint file cannot be read.
  """
  prefix = find_checkpoint(path)
  variables = _built_variables(model, arch)
  reader = _open(prefix)
  found = _compare(prefix, variables, reader)
  if not found.ok:
    raise found.error()
  values = {key: _read(reader, prefix, key, var.shape, var.dtype.as_numpy_dtype)
            for key, var in variables.items()}
  info = RestoreInfo(prefix, _scalar(reader, prefix, "epoch"),
                     _scalar(reader, prefix, "global_step"))
  for key, var in variables.items():
    var.assign(values[key])
  return info


def _scalar(reader, prefix, name):
  key = name + _VALUE_SUFFIX
  if not reader.has_tensor(key):
    return None
  try:
    return int(np.asarray(reader.get_tensor(key)))
  except (tf.errors.OpError, IndexError, ValueError, TypeError) as e:
    raise CheckpointCorruptError(
        f"{_data_file(prefix)}: corrupt checkpoint data, cannot read {key} "
        f"({_first_line(str(e))}); nothing was restored") from e


def _remove(path: str):
  """Removes a file, link or directory tree; gone already is fine."""
  try:
    if os.path.isdir(path) and not os.path.islink(path):
      shutil.rmtree(path)
    else:
      os.remove(path)
  except FileNotFoundError:
    pass


def _save_failure(error, tmp: str, final: str) -> str:
  """Why a save failed, in one line naming no hidden temporary file.

  TensorFlow says `{{function_node ...}} <temp file>; File too large
  [Op:SaveV2]`: the part after the last `; ` is the OS's reason.
  """
  if not isinstance(error, tf.errors.OpError):
    return errors.describe_os_error(error)
  text = re.sub(r"\{\{.*?\}\}\s*", "", error.message or "")
  text = re.sub(r"\s*\[Op:\w+\]\s*$", "", _first_line(text, 1000))
  if "; " in text:
    text = text.rsplit("; ", 1)[1]
  return re.sub(re.escape(tmp) + r"\S*", final, text).strip() or "failed"


def remove_stale_temporaries(directory: str) -> List[str]:
  """Removes what saves killed mid-way left in `directory` (files and TF's
  `_temp/` directories alike, of processes that no longer exist, so
  concurrent savers never delete each other's files); returns it."""
  return files.remove_stale_temporaries(directory)


def save(model, directory: str, step: int, epoch: int = 0,
         global_step: int = 0, **extra) -> str:
  """Writes `directory/ckpt-<step>` in the released format; returns its prefix.

  Files are written under a temporary name unique to this process and call,
  then renamed, the `.index` last, under a lock on `directory`: an
  interrupted save never leaves a partial `ckpt-<N>` behind, and processes
  saving into one directory do not disturb each other. Leftovers of saves
  killed mid-way (by processes no longer alive) are removed first. `extra`
  are further trackables (e.g. an optimizer) saved beside the model.

  Raises:
    errors.PathError: the directory cannot be written (read-only, a full
      disk, a file size limit), naming it; nothing of the save is left.
  """
  with errors.user_path(directory, "write"):
    os.makedirs(directory, exist_ok=True)
    remove_stale_temporaries(directory)
  ckpt = tf.train.Checkpoint(
      model=model, epoch=tf.Variable(epoch, dtype=tf.int64),
      global_step=tf.Variable(global_step, dtype=tf.int64), **extra)
  final = os.path.join(directory, f"ckpt-{step}")
  tmp = os.path.join(directory, f"{files.temporary_prefix()}ckpt-{step}-"
                     f"{secrets.token_hex(4)}")
  moved = []
  try:
    try:
      written = ckpt.write(tmp)
      with files.locked(directory):
        # An older ckpt-<step> stops being one before its data is replaced.
        if os.path.exists(final + ".index"):
          os.remove(final + ".index")
        for f in sorted(glob.glob(glob.escape(written) + ".data-*")):
          moved.append(final + f[len(written):])
          os.replace(f, moved[-1])
        os.replace(written + ".index", final + ".index")  # Marks completion.
        moved = []
    except (tf.errors.OpError, OSError) as e:  # E.g. a full disk.
      raise errors.PathError(
          f"cannot write checkpoint {os.path.basename(final)} in "
          f"{directory}: {_save_failure(e, tmp, final)}") from e
  except BaseException:
    if os.path.exists(final + ".index"):  # Complete after all: keep it.
      moved = []
    for f in glob.glob(glob.escape(tmp) + "*") + moved:
      _remove(f)
    raise
  return final
