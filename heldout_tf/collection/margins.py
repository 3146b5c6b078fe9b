"""`margins.npz`: each run's final margins and correct-label probabilities.

The released `aux_arrays.npz` keeps one bit per example (was the final
model right?). Attribution methods (datamodels, the linear datamodeling
score) need the margin it throws away. This file sits beside the aux
arrays, which stay exactly as they are:

  <root>/<experiment>/<ratio>/<run>/margins.npz

Keys (`FORMAT_VERSION` 1):

  format_version                    int64 scalar
  index_train, index_removed,       int64: the run's aux arrays' own index
  index_test                          arrays, in the same order
  margin_train, margin_removed,     float32: logit of the label minus the
  margin_test                         largest other logit (datamodels, TRAK)
  probability_train, ..._removed,   float32: the softmax probability of
  probability_test                    the label

Both are computed in float64 from the final model's logits and stored as
float32 (the difference of two float32 logits keeps its sign). `write`
is the one writer (atomic); `read` the one reader, through the hardened
npz reader (`heldout_tf.core.npz`), and it checks the file against its run
(the `aux_arrays.npz` beside it), like `signals.npz`: the index arrays
equal the aux arrays' (so a file copied from another run, whose training
subset differs, is refused), every value is finite, probabilities lie in
[0, 1], and the margin is positive where the aux arrays record a correct
prediction and negative where they record a wrong one.

Ties. Correctness is `argmax(logits) == label`, and argmax picks the lowest
class index among equal logits. A margin of exactly 0 (the label's logit
ties the largest other one) is therefore counted right or wrong depending
on the class order; a margin of 0 is accepted with either bit.

A trainer that has a run's float32 logits on the whole training and test
sets in canonical order passes them to the store, which writes this file
before the aux arrays (a run that looks finished has its margins):

  store.write_run(run, subset=..., correct_train=..., correct_test=...,
                  save_checkpoint=...,
                  logits=dict(train_logits=..., train_labels=...,
                              test_logits=..., test_labels=...))

or, for a run whose aux arrays exist, calls `write(run_dir, train_logits=
..., train_labels=..., test_logits=..., test_labels=...)` itself.
"""

import os
from typing import Optional

import numpy as np

from heldout_tf.core import errors
from heldout_tf.core import files
from heldout_tf.core import npz
from heldout_tf.collection import layout
from heldout_tf.collection import runs as runs_lib
from heldout_tf.collection import signals

MARGINS_FILENAME = layout.MARGINS_FILENAME
FORMAT_VERSION = 1
SPLITS = runs_lib.SPLITS  # train, removed, test: the aux arrays' own.
KINDS = ("margin", "probability")
KEYS = (("format_version",) + tuple(f"index_{s}" for s in SPLITS) +
        tuple(f"{k}_{s}" for k in KINDS for s in SPLITS))
_CHUNK_ROWS = 8192  # Rows of logits turned to float64 at a time.


class MarginsError(errors.HeldoutError, ValueError):
  """A margins file, or the logits to write one, is bad (names file, key)."""


def margins_path(run_path: str) -> str:
  """`<run>/margins.npz`."""
  return os.path.join(run_path, MARGINS_FILENAME)


# ------------------------------------------------------------ per example --


def per_example(logits, labels, what: str = "logits"):
  """`(margin, probability)`, float32 [n] each, of float logits [n, classes].

  Computed in float64, `_CHUNK_ROWS` rows at a time (ImageNet's training
  set is 1.28 M x 1000 logits). Raises MarginsError naming `what` for
  non-finite logits or labels outside the classes.
  """
  logits = np.asarray(logits)
  labels = np.asarray(labels)
  if (logits.ndim != 2 or labels.shape != logits.shape[:1] or
      logits.shape[1] < 2 or logits.dtype.kind != "f"):
    raise MarginsError(
        f"{what}: need float logits [n, classes >= 2] and int labels [n], "
        f"got {logits.dtype} {logits.shape} and {labels.shape}")
  if labels.dtype.kind not in "iu" or (labels.size and (
      labels.min() < 0 or labels.max() >= logits.shape[1])):
    raise MarginsError(f"{what}: labels must be integers in [0, "
                       f"{logits.shape[1]})")
  margin = np.empty(len(labels), np.float32)
  probability = np.empty(len(labels), np.float32)
  for start in range(0, len(labels), _CHUNK_ROWS):
    rows = slice(start, start + _CHUNK_ROWS)
    chunk = logits[rows].astype(np.float64)
    if not np.isfinite(chunk).all():
      bad = start + int(np.flatnonzero(~np.isfinite(chunk).all(1))[0])
      raise MarginsError(f"{what}: row {bad} holds a NaN or infinite logit")
    margin[rows] = signals.margins(chunk, labels[rows])
    probability[rows] = np.take_along_axis(
        signals.softmax(chunk), labels[rows, None].astype(np.int64), 1)[:, 0]
  return margin, probability


def _canonical(values, index, n: int, what: str) -> np.ndarray:
  """`values` placed at their canonical positions `index` (a permutation)."""
  index = np.arange(n) if index is None else np.asarray(index)
  seen = np.zeros(n, bool)
  if index.shape == (n,) and index.dtype.kind in "iu" and (
      not n or (index.min() >= 0 and index.max() < n)):
    seen[index] = True
  if not seen.all() or len(values) != n:
    raise MarginsError(f"{what}: {len(values)} examples with index "
                       f"{index.shape}; the run's aux arrays need each of "
                       f"0..{n - 1} once")
  out = np.empty(n, values.dtype)
  out[index] = values
  return out


def arrays_for(aux: dict, *, train_logits, train_labels, test_logits,
               test_labels, train_index=None, test_index=None) -> dict:
  """A margins file's arrays for the run whose aux arrays are `aux`.

  Args:
    aux: the run's aux arrays (`runs.read_aux`).
    train_logits, train_labels: float [n_train, classes] and int [n_train]
      on the whole training set (trained-on and held-out examples).
    test_logits, test_labels: the same on the test set.
    train_index, test_index: each row's canonical example index (default:
      rows in canonical order, 0..n-1).

  Returns:
    `{key: array}` with every key of `KEYS`, aligned to `aux`.
  """
  out = {"format_version": np.array(FORMAT_VERSION, np.int64)}
  n_train = len(aux["index_train"]) + len(aux["index_removed"])
  sources = {"train": (train_logits, train_labels, train_index, n_train,
                       ("train", "removed")),
             "test": (test_logits, test_labels, test_index,
                      len(aux["index_test"]), ("test",))}
  for name, (logits, labels, index, n, parts) in sources.items():
    values = per_example(logits, labels, f"{name} logits")
    values = [_canonical(v, index, n, f"{name} logits") for v in values]
    for part in parts:
      where = np.asarray(aux[f"index_{part}"], np.int64)
      if where.size and (where.min() < 0 or where.max() >= n):
        raise MarginsError(f"aux key 'index_{part}' holds indices outside "
                           f"[0, {n})")
      out[f"index_{part}"] = where
      for kind, v in zip(KINDS, values):
        out[f"{kind}_{part}"] = v[where]
  return out


def write(run_path: str, *, train_logits, train_labels, test_logits,
          test_labels, train_index=None, test_index=None,
          aux: Optional[dict] = None) -> str:
  """Writes `<run_path>/margins.npz` atomically; returns its path.

  `aux` is the run's aux arrays (default: read from `run_path`, so write
  them first); the other arguments are those of `arrays_for`. The new file
  is checked as `read` would check it: logits whose predictions disagree
  with the recorded correctness are refused (MarginsError), not written.
  """
  path = margins_path(run_path)
  if aux is None:
    aux = runs_lib.read_aux(run_path)
  arrays = arrays_for(aux, train_logits=train_logits,
                      train_labels=train_labels, test_logits=test_logits,
                      test_labels=test_labels, train_index=train_index,
                      test_index=test_index)
  check(arrays, aux, path)
  files.save_npz(path, **arrays)
  return path


# ---------------------------------------------------------------- reading --


def read(path: str, aux: Optional[dict] = None) -> dict:
  """Reads `margins.npz` (a file or its run directory), checked against
  its run; returns `{key: array}` (every key of `KEYS`).

  `aux` are the run's aux arrays (default: `runs.read_aux` of the
  directory holding the file). Members are bounded by the aux arrays'
  lengths before anything is read.

  Raises:
    MarginsError naming the file and key: missing file or key, a newer
      format, wrong dtype or shape, or values that do not belong to the run
      (see the module docstring).
    runs.AuxArraysError: the run's aux arrays are missing or bad.
  """
  if os.path.isdir(path):
    path = margins_path(path)
  if aux is None:
    aux = runs_lib.read_aux(os.path.dirname(os.path.abspath(path)))
  with npz.Reader(path, MarginsError) as reader:
    reader.require(KEYS)
    version = int(reader.read("format_version", kinds="iu", shape=()))
    if version != FORMAT_VERSION:
      raise MarginsError(f"{path}: key 'format_version' is {version}; this "
                         f"kit reads version {FORMAT_VERSION}")
    arrays = {"format_version": np.array(version, np.int64)}
    for split in SPLITS:
      n = len(aux[f"index_{split}"])
      arrays[f"index_{split}"] = reader.read(f"index_{split}", kinds="iu",
                                             shape=(n,))
      for kind in KINDS:
        key = f"{kind}_{split}"
        arrays[key] = reader.read(key, shape=(n,),
                                  check=_float32(path, key))
  check(arrays, aux, path)
  return arrays


def _float32(path: str, key: str):
  """A header check: member `key` must be float32."""

  def check(dtype, unused_shape):
    if dtype != np.float32:
      raise MarginsError(f"{path}: key {key!r} has dtype {dtype}, expected "
                         "float32")
  return check


def check(arrays: dict, aux: dict, path: str):
  """Raises MarginsError (naming `path` and the key) unless `arrays` are
  the margins of the run whose aux arrays are `aux`."""
  for split in SPLITS:
    index = arrays[f"index_{split}"]
    if not np.array_equal(index, aux[f"index_{split}"]):
      raise MarginsError(
          f"{path}: key 'index_{split}' differs from the run's "
          f"{layout.AUX_FILENAME}: not the margins of this run (copied from "
          "another run?)")
    margin = arrays[f"margin_{split}"]
    probability = arrays[f"probability_{split}"]
    for kind, values in zip(KINDS, (margin, probability)):
      bad = ~np.isfinite(values)
      if bad.any():
        raise MarginsError(f"{path}: key '{kind}_{split}' holds a NaN or "
                           f"infinite value (position "
                           f"{int(np.flatnonzero(bad)[0])})")
    bad = (probability < 0) | (probability > 1)
    if bad.any():
      raise MarginsError(f"{path}: key 'probability_{split}' must lie in "
                         f"[0, 1], has {probability[bad][0]}")
    correct = np.asarray(aux[f"correctness_{split}"], bool)
    wrong_sign = ((margin < 0) & correct) | ((margin > 0) & ~correct)
    if wrong_sign.any():
      first = int(np.flatnonzero(wrong_sign)[0])
      raise MarginsError(
          f"{path}: key 'margin_{split}' disagrees with the run's "
          f"'correctness_{split}' at {int(wrong_sign.sum())} example(s) "
          f"(e.g. example {int(index[first])}: margin {margin[first]:g}, "
          f"recorded {'correct' if correct[first] else 'wrong'})")
