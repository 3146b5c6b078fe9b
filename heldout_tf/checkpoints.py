"""Strict restore (and save) of released `ckpt-<N>` checkpoints.

Released runs were saved with
`tf.train.Checkpoint(model=..., epoch=..., global_step=..., ...)`.
`restore` loads the `model/...` values into a module built by
`heldout_tf.models.build_model` and refuses anything but an exact match.
"""

import collections
import dataclasses
import glob
import os
import re
from typing import Optional

import numpy as np
import tensorflow as tf

from heldout_tf import runs

_VALUE_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"
_CKPT_RE = re.compile(r"ckpt-(\d+)\.index")


class CheckpointMismatchError(ValueError):
  """The checkpoint's model variables are not exactly the model's."""

  def __init__(self, path, missing=(), unexpected=(), shape_mismatches=()):
    self.path = path
    self.missing = list(missing)
    self.unexpected = list(unexpected)
    self.shape_mismatches = list(shape_mismatches)
    lines = [f"Checkpoint {path} does not match the model:"]
    if self.missing:
      lines.append(f"  {len(self.missing)} model variable(s) missing from "
                   "the checkpoint:")
      lines += [f"    {k}" for k in self.missing]
    if self.unexpected:
      lines.append(f"  {len(self.unexpected)} checkpoint value(s) the model "
                   "does not have:")
      lines += [f"    {k}" for k in self.unexpected]
    if self.shape_mismatches:
      lines.append(f"  {len(self.shape_mismatches)} shape mismatch(es) "
                   "(key: model vs checkpoint):")
      lines += [f"    {k}: {m} vs {c}" for k, m, c in self.shape_mismatches]
    super().__init__("\n".join(lines))


class CheckpointNotFoundError(FileNotFoundError):
  """No single `ckpt-<N>` could be found at the given path."""


@dataclasses.dataclass(frozen=True)
class RestoreInfo:
  path: str  # The `ckpt-<N>` prefix that was restored.
  epoch: Optional[int]
  global_step: Optional[int]


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
  sub = os.path.join(path, runs.CHECKPOINTS_DIRNAME)
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
    listing = sorted(os.listdir(directory))[:20]
    raise CheckpointNotFoundError(
        f"{directory}: expected exactly one ckpt-<N> checkpoint, found {what}. "
        f"Directory contents: {listing}")
  return os.path.join(directory, found[0][1])


def restore(model, path: str) -> RestoreInfo:
  """Restores `model` (already built) from the checkpoint at `path`, strictly.

  Every model variable must be in the checkpoint with the same shape, and
  every `model/...` value in the checkpoint must belong to the model; other
  top-level objects (optimizer, counters) are ignored.

  Raises:
    CheckpointNotFoundError: no single `ckpt-<N>` at `path`.
    CheckpointMismatchError: missing / unexpected keys or shape mismatches.
  """
  prefix = find_checkpoint(path)
  variables = model_variables(model)
  if not variables:
    raise ValueError("The model has no variables yet: call it once (e.g. "
                     "heldout_tf.models.ensure_built) before restoring.")
  reader = tf.train.load_checkpoint(prefix)
  shapes = reader.get_variable_to_shape_map()
  stored = {k: v for k, v in shapes.items() if k.startswith("model/")}
  missing = sorted(set(variables) - set(stored))
  unexpected = sorted(set(stored) - set(variables))
  mismatched = sorted(
      (k, list(variables[k].shape), list(stored[k]))
      for k in set(variables) & set(stored)
      if list(variables[k].shape) != list(stored[k]))
  if missing or unexpected or mismatched:
    raise CheckpointMismatchError(prefix, missing, unexpected, mismatched)
  for key, var in variables.items():
    var.assign(reader.get_tensor(key))
  return RestoreInfo(prefix, _scalar(reader, shapes, "epoch"),
                     _scalar(reader, shapes, "global_step"))


def _scalar(reader, shapes, name):
  key = name + _VALUE_SUFFIX
  if key not in shapes:
    return None
  return int(np.asarray(reader.get_tensor(key)))


def save(model, directory: str, step: int, epoch: int = 0,
         global_step: int = 0, **extra) -> str:
  """Writes `directory/ckpt-<step>` in the released format; returns its prefix.

  Files are written under a temporary name and renamed, so an interrupted save
  never leaves a partial `ckpt-<N>` behind. `extra` are further trackables
  (e.g. an optimizer) saved beside the model.
  """
  os.makedirs(directory, exist_ok=True)
  ckpt = tf.train.Checkpoint(
      model=model, epoch=tf.Variable(epoch, dtype=tf.int64),
      global_step=tf.Variable(global_step, dtype=tf.int64), **extra)
  final = os.path.join(directory, f"ckpt-{step}")
  # Leftovers of saves killed mid-way (any process) would stay forever.
  for stale in glob.glob(os.path.join(directory, f".tmp-ckpt-{step}-*")):
    os.remove(stale)
  tmp = os.path.join(directory, f".tmp-ckpt-{step}-{os.getpid()}")
  moved = []
  try:
    written = ckpt.write(tmp)
    for f in glob.glob(written + ".data-*"):
      moved.append(final + f[len(written):])
      os.replace(f, moved[-1])
    os.replace(written + ".index", final + ".index")  # Last: marks completion.
  except BaseException:
    for f in glob.glob(tmp + "*") + moved:
      if os.path.exists(f):
        os.remove(f)
    raise
  return final
