"""The papers' published score files: kinds, strict loaders, validation.

Files (from the papers' project pages) and what `load` returns:

- `cifar10-cscores-orig-order.npz`, `cifar100-cscores-orig-order.npz`:
  `CScores` (`labels`, `scores`, 50 000 each);
- `imagenet-cscores-with-filename.npz`: `CScores` (+ `filenames`);
- `mnist-cscores.npy`: `CScores` (`scores`, 60 000; no labels);
- `cifar100_infl_matrix.npz`: `InflMatrix`;
- `*_high_infl_pairs_infl0.15_mem0.25.npz`: `Pairs`.

Orders: the CIFAR C-score files are in the **original** CIFAR order; the
released runs (and so `heldout_tf.estimates`) index examples by their
position in tfds order (`heldout_tf.data.order.tfds_original_order` is the
bridge). The memorization / influence files (`infl-matrix`, `pairs`) are
taken to be in tfds order, as the MNIST and ImageNet C-scores are taken to
be in the order the runs use. `heldout_tf.estimates.comparison` compares a file with
our estimates and says which order it assumed.

Files are read by the kit's hardened reader (`heldout_tf.core.npz`): regular
files only, each member bounded by its expected shape before it is read;
nothing is unpickled unless asked for (the ImageNet `filenames` entry,
`load_cscores`'s `unpickle_filenames`, and then only strings). Every
problem is a `PublishedFileError` naming the file and key.
"""

import dataclasses
import os
import pickle
import re
from typing import Dict, Optional, Union

from absl import logging
import numpy as np

from heldout_tf.core import errors
from heldout_tf.core import npy
from heldout_tf.core import npz as npz_lib

CIFAR10_CSCORES = "cifar10-cscores"
CIFAR100_CSCORES = "cifar100-cscores"
IMAGENET_CSCORES = "imagenet-cscores"
MNIST_CSCORES = "mnist-cscores"
INFL_MATRIX = "infl-matrix"
PAIRS = "pairs"

FILE_NAMES = {
    "cifar10-cscores-orig-order.npz": CIFAR10_CSCORES,
    "cifar100-cscores-orig-order.npz": CIFAR100_CSCORES,
    "imagenet-cscores-with-filename.npz": IMAGENET_CSCORES,
    "mnist-cscores.npy": MNIST_CSCORES,
    "cifar100_infl_matrix.npz": INFL_MATRIX,
}
PAIRS_NAME_RE = re.compile(r"(?P<dataset>[a-z0-9]+)_high_infl_pairs_.*\.npz")
# Examples in each C-score file (None: any, labels and scores agreeing).
NUM_EXAMPLES = {CIFAR10_CSCORES: 50_000, CIFAR100_CSCORES: 50_000,
                IMAGENET_CSCORES: None, MNIST_CSCORES: 60_000}
NUM_CLASSES = {CIFAR10_CSCORES: 10, CIFAR100_CSCORES: 100,
               IMAGENET_CSCORES: 1000}
# The dataset (tfds name, or 'imagenet' / 'mnist') each kind belongs to.
DATASET_OF_KIND = {CIFAR10_CSCORES: "cifar10", CIFAR100_CSCORES: "cifar100",
                   IMAGENET_CSCORES: "imagenet", MNIST_CSCORES: "mnist",
                   INFL_MATRIX: "cifar100"}
# Most entries of a vector whose length the file's kind does not fix: 6.5x
# ImageNet's 1 281 167 training examples.
MAX_EXAMPLES = 2**23

_INTEGER, _FLOAT, _STRING = "iu", "f", "SU"


class PublishedFileError(errors.HeldoutError, ValueError):
  """A published file is missing, unreadable or not what its name says."""


class CompareError(errors.HeldoutError, ValueError):
  """Our estimates and a published file cannot be compared (e.g. the file
  is of another dataset than the experiment)."""


@dataclasses.dataclass
class CScores:
  """A published C-score file.

  Attributes:
    kind: one of the `*_CSCORES` kinds.
    path: the file.
    scores: [n] float, in the file's order (see the module docstring).
    labels: [n] int64, or None (the MNIST file has none).
    filenames: [n] str (ImageNet only), else None.
  """
  kind: str
  path: str
  scores: np.ndarray
  labels: Optional[np.ndarray] = None
  filenames: Optional[np.ndarray] = None


@dataclasses.dataclass
class ClassInfluence:
  """Influence among the examples of one class of `cifar100_infl_matrix`.

  Attributes:
    infl: [n_train_k, n_test_k] float, infl[a, b] = influence of training
      example `tr_idx[a]` on test example `tt_idx[b]`.
    tr_idx: [n_train_k] int64 training example indices.
    tt_idx: [n_test_k] int64 test example indices.
  """
  infl: np.ndarray
  tr_idx: np.ndarray
  tt_idx: np.ndarray


@dataclasses.dataclass
class InflMatrix:
  """`cifar100_infl_matrix.npz`: memorization and per-class influence.

  Attributes:
    tr_mem: [n_train] float memorization of every training example.
    tr_labels: [n_train] int64; tt_labels: [n_test] int64.
    classes: class k -> its `ClassInfluence` (keys `infl_matrix_class{k}`,
      `tr_classidx_{k}`, `tt_classidx_{k}`).
  """
  path: str
  tr_mem: np.ndarray
  tr_labels: np.ndarray
  tt_labels: np.ndarray
  classes: Dict[int, ClassInfluence]

  kind = INFL_MATRIX


@dataclasses.dataclass
class Pairs:
  """A `*_high_infl_pairs_*.npz` file: one entry per high-influence pair.

  Attributes:
    tr_idx, tt_idx: [n] int64 training / test example indices.
    infl: [n] float influence; mem: [n] float memorization of `tr_idx`.
    dataset: the file name's prefix (`cifar100`, `mnist`, ...) or None.
  """
  path: str
  tr_idx: np.ndarray
  tt_idx: np.ndarray
  infl: np.ndarray
  mem: np.ndarray
  dataset: Optional[str] = None

  kind = PAIRS


Published = Union[CScores, InflMatrix, Pairs]


# ---------------------------------------------------------------- reading


def _open(path: str) -> npz_lib.Reader:
  """`path` opened by the hardened npz reader, with a byte budget."""
  return npz_lib.Reader(path, PublishedFileError, os_error=errors.PathError,
                        max_total_bytes="auto")


def _strings_unpickled(reader: npz_lib.Reader, key: str, n: int
                       ) -> np.ndarray:
  """Object array `key` of `n` str/bytes, unpickled by
  `_StringArrayUnpickler`.

  Only numpy's array reconstruction is allowed: any other global the pickle
  names (a function, a class) is refused before it is called, so the file
  cannot run code; the result must hold only str/bytes.
  """
  path = reader.path
  dtype, shape = reader.header(key)
  if not dtype.hasobject:
    raise PublishedFileError(f"{path}: key {key!r} is not an object array")
  if shape != (n,):
    raise PublishedFileError(f"{path}: key {key!r} has shape {shape}, "
                             f"expected {(n,)}")
  try:
    with reader.open_member(key, reader.max_total_bytes) as f:
      npy.read_header(f, path, key, PublishedFileError)
      array = _StringArrayUnpickler(f).load()
  except errors.HeldoutError:
    raise
  except pickle.UnpicklingError as e:
    raise PublishedFileError(
        f"{path}: key {key!r}: refusing to unpickle ({e})") from e
  except Exception as e:  # pylint: disable=broad-except
    raise PublishedFileError(f"{path}: key {key!r}: not a pickled string "
                             f"array ({type(e).__name__})") from e
  if not isinstance(array, np.ndarray) or array.dtype != object:
    raise PublishedFileError(f"{path}: key {key!r}: not a pickled string "
                             "array")
  return array


# numpy pickles an object array as `_reconstruct(ndarray, shape, dtype)` plus
# its state (a list of the objects): these globals only.
_ARRAY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}


class _StringArrayUnpickler(pickle.Unpickler):
  """Unpickles a numpy object array and nothing else (no code runs)."""

  def find_class(self, module, name):
    if (module, name) in _ARRAY_GLOBALS:
      return super().find_class(module, name)
    raise pickle.UnpicklingError(f"the pickle names {module}.{name}, not "
                                 "allowed in a string array")


def _vector(reader, key, kinds, n=None, max_elements=MAX_EXAMPLES):
  """Member `key`: a vector of `kinds` (of length `n` when given)."""
  return reader.read(key, kinds=kinds, ndim=1,
                     shape=None if n is None else (n,),
                     max_elements=max_elements)


def _indices(reader, key, n=None, bound=None) -> np.ndarray:
  """Member `key`: an integer vector with values in [0, bound), as int64."""
  path = reader.path
  array = _vector(reader, key, _INTEGER, n).astype(np.int64)
  if array.size and (array.min() < 0 or
                     (bound is not None and array.max() >= bound)):
    raise PublishedFileError(
        f"{path}: key {key!r} has values outside [0, {bound}) (min "
        f"{array.min()}, max {array.max()})")
  return array


def _strings(path, key, array) -> np.ndarray:
  """A vector of str from a str / bytes / object array of those."""
  if array.dtype.kind == "O":
    bad = [type(v).__name__ for v in array.ravel()[:1000]
           if not isinstance(v, (str, bytes))]
    if bad:
      raise PublishedFileError(f"{path}: key {key!r} holds {bad[0]} objects, "
                               "expected strings")
  if array.dtype.kind == "S" or array.dtype.kind == "O":
    return np.array([v.decode("utf-8") if isinstance(v, bytes) else v
                     for v in array.tolist()], dtype=str)
  return array


def detect_kind(path: str) -> str:
  """The kind of a published file, from its name or else from its keys."""
  name = os.path.basename(path)
  if name in FILE_NAMES:
    return FILE_NAMES[name]
  if PAIRS_NAME_RE.fullmatch(name):
    return PAIRS
  if name.endswith(".npy"):
    return MNIST_CSCORES
  with _open(path) as reader:
    keys = set(reader.keys)
    if {"tr_idx", "tt_idx", "infl", "mem"} <= keys:
      return PAIRS
    if "tr_mem" in keys and any(k.startswith("infl_matrix_class")
                                for k in keys):
      return INFL_MATRIX
    if {"labels", "scores", "filenames"} <= keys:
      return IMAGENET_CSCORES
    if {"labels", "scores"} <= keys:
      labels = _vector(reader, "labels", _INTEGER)
      if labels.size and labels.max() >= 10:
        return CIFAR100_CSCORES
      return CIFAR10_CSCORES
  raise PublishedFileError(
      f"{path}: not a known published file (names: "
      f"{', '.join(sorted(FILE_NAMES))}, *_high_infl_pairs_*.npz; keys: "
      f"{', '.join(sorted(keys)[:12]) or 'none'})")


def load(path: str, kind: Optional[str] = None, *,
         unpickle_filenames: bool = False) -> Published:
  """Loads and validates any published file (kind detected when None).

  Nothing is unpickled unless `unpickle_filenames` (see `load_cscores`).
  """
  kind = kind or detect_kind(path)
  if kind in NUM_EXAMPLES:
    return load_cscores(path, kind, unpickle_filenames=unpickle_filenames)
  if kind == INFL_MATRIX:
    return load_infl_matrix(path)
  if kind == PAIRS:
    return load_pairs(path)
  raise errors.UsageError(f"unknown published file kind {kind!r}")


def load_cscores(path: str, kind: Optional[str] = None, *,
                 unpickle_filenames: bool = False) -> CScores:
  """Loads a C-score file (`kind` one of the `*_CSCORES`; detected if None).

  Nothing is unpickled by default. The ImageNet file's `filenames` is read
  when stored as a string array; the papers' file stores it as an object
  array, which only pickle can read: then `filenames` is None unless
  `unpickle_filenames=True`, which unpickles that one key with an unpickler
  that allows numpy's array reconstruction only (no other code can run) and
  accepts only str/bytes values. Scores and labels never need it.
  """
  kind = kind or detect_kind(path)
  if kind not in NUM_EXAMPLES:
    raise PublishedFileError(f"{path}: a {kind} file, not C-scores")
  n = NUM_EXAMPLES[kind]
  if kind == MNIST_CSCORES:
    scores = npz_lib.read_npy(path, PublishedFileError, key="scores",
                              os_error=errors.PathError, kinds=_FLOAT,
                              ndim=1, shape=(n,))
    return CScores(kind, path, scores)
  with _open(path) as reader:
    reader.require(["scores", "labels"])
    scores = _vector(reader, "scores", _FLOAT, n)
    labels = _indices(reader, "labels", len(scores), NUM_CLASSES[kind])
    filenames = None
    if kind == IMAGENET_CSCORES:
      reader.require(["filenames"])
      if not reader.header("filenames")[0].hasobject:
        raw = _vector(reader, "filenames", _STRING, len(scores))
      elif unpickle_filenames:
        raw = _strings_unpickled(reader, "filenames", len(scores))
      else:
        raw = None
        logging.info("%s: 'filenames' is a pickled object array: not read "
                     "(pass unpickle_filenames=True to read it)", path)
      if raw is not None:
        filenames = _strings(path, "filenames", raw)
  return CScores(kind, path, scores, labels, filenames)


def load_infl_matrix(path: str) -> InflMatrix:
  """Loads `cifar100_infl_matrix.npz` (classes 0..K-1, all keys present)."""
  with _open(path) as reader:
    reader.require(["tr_mem", "tr_labels", "tt_labels"])
    tr_mem = _vector(reader, "tr_mem", _FLOAT)
    n_train = len(tr_mem)
    tr_labels = _indices(reader, "tr_labels", n_train)
    tt_labels = _indices(reader, "tt_labels")
    class_ids = sorted(int(m.group(1)) for m in (
        re.fullmatch(r"infl_matrix_class(\d+)", k) for k in reader.keys)
                       if m)
    if class_ids != list(range(len(class_ids))) or not class_ids:
      raise PublishedFileError(
          f"{path}: expected keys infl_matrix_class0..K-1, found classes "
          f"{class_ids[:10]}")
    classes = {}
    for k in class_ids:
      reader.require([f"tr_classidx_{k}", f"tt_classidx_{k}"])
      tr_idx = _indices(reader, f"tr_classidx_{k}", bound=n_train)
      tt_idx = _indices(reader, f"tt_classidx_{k}", bound=len(tt_labels))
      infl = reader.read(f"infl_matrix_class{k}", kinds=_FLOAT,
                         shape=(len(tr_idx), len(tt_idx)))
      classes[k] = ClassInfluence(infl, tr_idx, tt_idx)
  return InflMatrix(path, tr_mem, tr_labels, tt_labels, classes)


def load_pairs(path: str) -> Pairs:
  """Loads a `*_high_infl_pairs_*.npz` file (4 vectors of equal length)."""
  with _open(path) as reader:
    reader.require(["tr_idx", "tt_idx", "infl", "mem"])
    tr_idx = _indices(reader, "tr_idx")
    n = len(tr_idx)
    tt_idx = _indices(reader, "tt_idx", n)
    infl = _vector(reader, "infl", _FLOAT, n)
    mem = _vector(reader, "mem", _FLOAT, n)
  match = PAIRS_NAME_RE.fullmatch(os.path.basename(path))
  return Pairs(path, tr_idx, tt_idx, infl, mem,
               match.group("dataset") if match else None)


# ------------------------------------------------- file vs an experiment


def _experiment_dataset(experiment: str) -> str:
  """'cifar10', 'cifar100', 'imagenet' or 'mnist' for an experiment name
  (from `heldout_tf.collection.experiments`, else the name's prefix)."""
  from heldout_tf.collection import experiments  # pylint: disable=g-import-not-at-top
  if experiment in experiments.EXPERIMENTS:
    return experiments.get(experiment).dataset_name
  prefix = experiment.split("-")[0]
  if prefix in ("cifar10", "cifar100", "imagenet", "mnist"):
    return prefix
  raise errors.UsageError(f"--experiment {experiment!r}: cannot tell its "
                          "dataset (cifar10, cifar100, imagenet or mnist)")


def check_compatible(path: str, experiment: str) -> str:
  """The experiment's dataset, after checking `path` is a file of it.

  Reads only the file's name and member names (and, for unnamed C-score
  files, its labels), so it is cheap enough to run before a long estimate.

  Raises:
    CompareError: the file belongs to another dataset.
    PublishedFileError, UsageError: unreadable file, unknown experiment.
  """
  dataset = _experiment_dataset(experiment)
  kind = detect_kind(path)
  if kind == PAIRS:
    match = PAIRS_NAME_RE.fullmatch(os.path.basename(path))
    expected = match.group("dataset") if match else None
  else:
    expected = DATASET_OF_KIND[kind]
  if expected is not None and expected != dataset:
    raise CompareError(f"{path} is a {expected} file but --experiment "
                       f"{experiment} is {dataset}")
  return dataset
