"""The papers' published score files, loaded and validated; compared to ours.

Files (from the papers' project pages) and what `load` returns:

- `cifar10-cscores-orig-order.npz`, `cifar100-cscores-orig-order.npz`:
  `CScores` (`labels`, `scores`, 50 000 each);
- `imagenet-cscores-with-filename.npz`: `CScores` (+ `filenames`);
- `mnist-cscores.npy`: `CScores` (`scores`, 60 000; no labels);
- `cifar100_infl_matrix.npz`: `InflMatrix`;
- `*_high_infl_pairs_infl0.15_mem0.25.npz`: `Pairs`.

Orders: the CIFAR C-score files are in the **original** CIFAR order; the
released runs (and so `heldout_tf.estimates`) index examples by their
position in tfds order. `tfds_original_order` builds the bridge from the tfds
`id` feature (`train_16399` is original example 16399). The memorization /
influence files (`infl-matrix`, `pairs`) are taken to be in tfds order, as
the MNIST and ImageNet C-scores are taken to be in the order the runs use;
`compare` says which order it assumed.

Files are opened only if they are regular files; nothing is unpickled
unless asked for (the ImageNet `filenames` entry, `load_cscores`'s
`unpickle_filenames`, and then only strings). Every problem is a
`PublishedFileError` naming the file and key.
"""

import dataclasses
import io
import os
import pickle
import re
import stat
from typing import Dict, Optional, Tuple, Union
import warnings

from absl import logging
import numpy as np

from heldout_tf import errors
from heldout_tf import files

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
CACHE_DIRNAME = "heldout_tf_cache"
MAX_PLOT_POINTS = 100_000

_INTEGER, _FLOAT, _STRING = "iu", "f", "SUO"
_KIND_NAMES = {_INTEGER: "integer", _FLOAT: "floating point",
               _STRING: "string"}


class PublishedFileError(errors.HeldoutError, ValueError):
  """A published file is missing, unreadable or not what its name says."""


class DatasetNotPreparedError(errors.HeldoutError, FileNotFoundError):
  """The tfds dataset needed for the order mapping is not prepared."""


class CompareError(errors.HeldoutError, ValueError):
  """Our estimates and a published file cannot be compared."""


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


def _check_regular(path: str):
  """Raises unless `path` is a regular file (never opens a FIFO/device)."""
  with errors.user_path(path, "read"):
    mode = os.stat(path).st_mode
  if not stat.S_ISREG(mode):
    raise PublishedFileError(f"{path}: not a regular file")


class _Npz:
  """Reads members of an npz file one at a time, without unpickling."""

  def __init__(self, path: str):
    _check_regular(path)
    self.path = path
    try:
      with errors.user_path(path, "read"):
        self._npz = np.load(path, allow_pickle=False)
    except (ValueError, EOFError) as e:
      raise PublishedFileError(f"{path}: not an npz file ({e})") from e
    if not hasattr(self._npz, "files"):
      raise PublishedFileError(f"{path}: a single .npy array, not an npz "
                               "file")
    self.keys = set(self._npz.files)

  def __enter__(self):
    return self

  def __exit__(self, *unused):
    self._npz.close()

  def get(self, key: str) -> np.ndarray:
    """Member `key`, never unpickled (an object array is refused)."""
    self._require(key)
    try:
      return self._npz[key]
    except ValueError as e:
      if "allow_pickle" in str(e):
        raise PublishedFileError(
            f"{self.path}: key {key!r} is a pickled object array; refusing "
            "to unpickle it") from e
      raise PublishedFileError(f"{self.path}: key {key!r}: {e}") from e

  def is_object_array(self, key: str) -> bool:
    """Whether member `key` is stored as an object (pickled) array."""
    self._require(key)
    with self._npz.zip.open(f"{key}.npy") as f:
      dtype = _npy_dtype(f, self.path, key)
    return dtype.hasobject

  def get_strings_unpickled(self, key: str) -> np.ndarray:
    """An object array of str/bytes, unpickled by `_StringArrayUnpickler`.

    Only numpy's array reconstruction is allowed: any other global the pickle
    names (a function, a class) is refused before it is called, so the file
    cannot run code; the result must hold only str/bytes.
    """
    self._require(key)
    with self._npz.zip.open(f"{key}.npy") as f:
      dtype = _npy_dtype(f, self.path, key)
      if not dtype.hasobject:
        raise PublishedFileError(f"{self.path}: key {key!r} is not an object "
                                 "array")
      try:
        array = _StringArrayUnpickler(f).load()
      except pickle.UnpicklingError as e:
        raise PublishedFileError(
            f"{self.path}: key {key!r}: refusing to unpickle ({e})") from e
      except Exception as e:  # pylint: disable=broad-except
        raise PublishedFileError(f"{self.path}: key {key!r}: not a pickled "
                                 f"string array ({type(e).__name__})") from e
    if not isinstance(array, np.ndarray) or array.dtype != object:
      raise PublishedFileError(f"{self.path}: key {key!r}: not a pickled "
                               "string array")
    return array

  def _require(self, key: str):
    if key not in self.keys:
      raise PublishedFileError(
          f"{self.path}: missing key {key!r} (has "
          f"{', '.join(sorted(self.keys)[:12]) or 'no keys'})")


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


def _npy_dtype(f, path, key) -> np.dtype:
  """The dtype in an npy member's header (the stream is left at its data)."""
  try:
    version = np.lib.format.read_magic(f)
    reader = (np.lib.format.read_array_header_1_0 if version == (1, 0)
              else np.lib.format.read_array_header_2_0)
    _, _, dtype = reader(f)
  except ValueError as e:
    raise PublishedFileError(f"{path}: key {key!r}: not an npy array "
                             f"({e})") from e
  return dtype


def _checked(path, key, array, kinds, shape=None) -> np.ndarray:
  """`array` if its dtype kind is in `kinds` and its shape is `shape`."""
  if array.dtype.kind not in kinds:
    raise PublishedFileError(f"{path}: key {key!r} has dtype {array.dtype}, "
                             f"expected {_KIND_NAMES[kinds]}")
  if shape is not None and array.shape != tuple(shape):
    raise PublishedFileError(f"{path}: key {key!r} has shape {array.shape}, "
                             f"expected {tuple(shape)}")
  return array


def _vector(path, key, array, kinds, n=None) -> np.ndarray:
  if array.ndim != 1:
    raise PublishedFileError(f"{path}: key {key!r} has shape {array.shape}, "
                             "expected a vector")
  return _checked(path, key, array, kinds, None if n is None else (n,))


def _indices(path, key, array, n=None, bound=None) -> np.ndarray:
  """An integer vector with values in [0, bound), as int64."""
  array = _vector(path, key, array, _INTEGER, n).astype(np.int64)
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
  with _Npz(path) as npz:
    keys = npz.keys
    if {"tr_idx", "tt_idx", "infl", "mem"} <= keys:
      return PAIRS
    if "tr_mem" in keys and any(k.startswith("infl_matrix_class")
                                for k in keys):
      return INFL_MATRIX
    if {"labels", "scores", "filenames"} <= keys:
      return IMAGENET_CSCORES
    if {"labels", "scores"} <= keys:
      labels = npz.get("labels")
      if labels.dtype.kind in _INTEGER and labels.size and labels.max() >= 10:
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
    _check_regular(path)
    try:
      with errors.user_path(path, "read"):
        scores = np.load(path, allow_pickle=False)
    except ValueError as e:
      raise PublishedFileError(f"{path}: not a readable .npy array of floats "
                               f"({e})") from e
    if not isinstance(scores, np.ndarray):
      raise PublishedFileError(f"{path}: an npz archive, expected one .npy "
                               "array")
    return CScores(kind, path, _vector(path, "scores", scores, _FLOAT, n))
  with _Npz(path) as npz:
    scores = _vector(path, "scores", npz.get("scores"), _FLOAT, n)
    labels = _indices(path, "labels", npz.get("labels"), len(scores),
                      NUM_CLASSES[kind])
    filenames = None
    if kind == IMAGENET_CSCORES:
      if not npz.is_object_array("filenames"):
        raw = npz.get("filenames")
      elif unpickle_filenames:
        raw = npz.get_strings_unpickled("filenames")
      else:
        raw = None
        logging.info("%s: 'filenames' is a pickled object array: not read "
                     "(pass unpickle_filenames=True to read it)", path)
      if raw is not None:
        filenames = _strings(path, "filenames", _vector(
            path, "filenames", raw, _STRING, len(scores)))
  return CScores(kind, path, scores, labels, filenames)


def load_infl_matrix(path: str) -> InflMatrix:
  """Loads `cifar100_infl_matrix.npz` (classes 0..K-1, all keys present)."""
  with _Npz(path) as npz:
    tr_mem = _vector(path, "tr_mem", npz.get("tr_mem"), _FLOAT)
    n_train = len(tr_mem)
    tr_labels = _indices(path, "tr_labels", npz.get("tr_labels"), n_train)
    tt_labels = _indices(path, "tt_labels", npz.get("tt_labels"))
    class_ids = sorted(int(m.group(1)) for m in (
        re.fullmatch(r"infl_matrix_class(\d+)", k) for k in npz.keys) if m)
    if class_ids != list(range(len(class_ids))) or not class_ids:
      raise PublishedFileError(
          f"{path}: expected keys infl_matrix_class0..K-1, found classes "
          f"{class_ids[:10]}")
    classes = {}
    for k in class_ids:
      tr_idx = _indices(path, f"tr_classidx_{k}", npz.get(f"tr_classidx_{k}"),
                        bound=n_train)
      tt_idx = _indices(path, f"tt_classidx_{k}", npz.get(f"tt_classidx_{k}"),
                        bound=len(tt_labels))
      infl = _checked(path, f"infl_matrix_class{k}",
                      npz.get(f"infl_matrix_class{k}"), _FLOAT,
                      (len(tr_idx), len(tt_idx)))
      classes[k] = ClassInfluence(infl, tr_idx, tt_idx)
  return InflMatrix(path, tr_mem, tr_labels, tt_labels, classes)


def load_pairs(path: str) -> Pairs:
  """Loads a `*_high_infl_pairs_*.npz` file (4 vectors of equal length)."""
  with _Npz(path) as npz:
    tr_idx = _indices(path, "tr_idx", npz.get("tr_idx"))
    n = len(tr_idx)
    tt_idx = _indices(path, "tt_idx", npz.get("tt_idx"), n)
    infl = _vector(path, "infl", npz.get("infl"), _FLOAT, n)
    mem = _vector(path, "mem", npz.get("mem"), _FLOAT, n)
  match = PAIRS_NAME_RE.fullmatch(os.path.basename(path))
  return Pairs(path, tr_idx, tt_idx, infl, mem,
               match.group("dataset") if match else None)


# ------------------------------------------------------- tfds <-> original


def default_data_dir() -> str:
  """tfds' default data directory: `$TFDS_DATA_DIR`, ~/tensorflow_datasets."""
  return os.path.expanduser(os.environ.get("TFDS_DATA_DIR",
                                           "~/tensorflow_datasets"))


def parse_ids(ids, split: str, where: str) -> np.ndarray:
  """`['train_16399', ...]` -> original positions [n] int64 (a permutation).

  Raises:
    PublishedFileError: an id is not `<split>_<digits>` or the positions are
      not a permutation of 0..n-1 (naming `where`).
  """
  pattern = re.compile(rf"{re.escape(split)}_([0-9]+)")
  positions = np.empty(len(ids), np.int64)
  for k, raw in enumerate(ids):
    text = raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
    match = pattern.fullmatch(text)
    if not match:
      raise PublishedFileError(f"{where}: example {k} has id {text!r}, "
                               f"expected {split}_<number>")
    positions[k] = int(match.group(1))
  seen = np.zeros(len(ids), bool)
  inside = positions < len(ids)
  seen[positions[inside]] = True
  if not inside.all() or not seen.all():
    raise PublishedFileError(
        f"{where}: the ids are not {split}_0 .. {split}_{len(ids) - 1} "
        f"(each once): {int((~seen).sum())} positions missing")
  return positions


def tfds_original_order(dataset: str, split: str = "train",
                        data_dir: Optional[str] = None,
                        cache: bool = True) -> np.ndarray:
  """Original position of each example of a tfds CIFAR split, in tfds order.

  `order[k]` is the original CIFAR position of the example at position `k` of
  `tfds.load(dataset, split=split, shuffle_files=False)` (the index the
  released runs use), read from the tfds `id` feature. So a vector in the
  original order becomes one in the runs' order as `values[order]`.

  Reads a prepared tfds dataset (`dataset` as 'cifar10' or 'cifar10:3.0.2')
  from `data_dir` (tfds' default when None), never downloads. The mapping is
  cached atomically in `<data_dir>/heldout_tf_cache/<name>-<version>-<split>-
  order.npy` (skipped with a warning when that is not writable) and rebuilt
  when the dataset was prepared again since.

  Raises:
    DatasetNotPreparedError: the dataset is not prepared in `data_dir`.
    PublishedFileError: its ids are not `<split>_<n>` for n = 0..N-1.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  data_dir = os.path.expanduser(data_dir) if data_dir else default_data_dir()
  try:
    builder = tfds.builder(dataset, data_dir=data_dir)
    info_file = os.path.join(builder.data_dir, "dataset_info.json")
    if not os.path.isfile(info_file) or split not in builder.info.splits:
      raise FileNotFoundError(info_file)
  except (tfds.core.DatasetNotFoundError, AssertionError, FileNotFoundError,
          ValueError) as e:
    raise DatasetNotPreparedError(
        f"tfds dataset {dataset!r} split {split!r} is not prepared in "
        f"{data_dir} (needed to map the original CIFAR order to the runs' "
        "tfds order; prepare it with tfds, or pass --data_dir)") from e
  name = f"{builder.name}-{builder.version}-{split}"
  cache_path = os.path.join(data_dir, CACHE_DIRNAME, f"{name}-order.npy")
  num_examples = builder.info.splits[split].num_examples
  if cache:
    cached = _read_cached_order(cache_path, num_examples, info_file)
    if cached is not None:
      return cached
  ds = builder.as_dataset(split=split, shuffle_files=False,
                          decoders=tfds.decode.PartialDecoding({"id": True}))
  ids = [i for batch in tfds.as_numpy(ds.batch(10_000)) for i in batch["id"]]
  order = parse_ids(ids, split, f"tfds {builder.name}:{builder.version} "
                    f"{split} in {data_dir}")
  if cache:
    _write_cached_order(cache_path, order)
  return order


def _read_cached_order(path, num_examples, info_file) -> Optional[np.ndarray]:
  """The cached order if present, newer than the dataset and well formed."""
  try:
    if os.path.getmtime(path) < os.path.getmtime(info_file):
      return None
    order = np.load(path, allow_pickle=False)
  except (OSError, ValueError):
    return None
  if (order.shape != (num_examples,) or order.dtype != np.int64 or
      not np.array_equal(np.sort(order), np.arange(num_examples))):
    return None
  return order


def _write_cached_order(path, order):
  try:
    files.atomic_write(path, lambda f: np.save(f, order))
  except OSError as e:
    logging.warning("Not caching the tfds order in %s: %s", path,
                    errors.describe_os_error(e))


# ------------------------------------------------------------- comparison


@dataclasses.dataclass(frozen=True)
class Correlation:
  """Correlation of two score vectors over the entries finite in both."""
  n: int  # Pairs used.
  num_nan_ours: int
  num_nan_published: int
  spearman: float
  pearson: float

  def line(self, what: str) -> str:
    excluded = self.num_nan_ours + self.num_nan_published
    nan = (f" ({excluded} excluded as NaN: {self.num_nan_ours} ours, "
           f"{self.num_nan_published} published)" if excluded else "")
    return (f"{what}: Spearman {self.spearman:.4f}, Pearson "
            f"{self.pearson:.4f} over {self.n} examples{nan}")


def correlate(ours: np.ndarray, published: np.ndarray) -> Correlation:
  """Spearman and Pearson correlation, NaN entries excluded and counted.

  Entries NaN in ours are counted as ours (even when also NaN published).
  Fewer than 3 usable pairs, or a constant side, give NaN correlations.
  """
  import scipy.stats  # pylint: disable=g-import-not-at-top
  ours = np.asarray(ours, np.float64)
  published = np.asarray(published, np.float64)
  nan_ours = np.isnan(ours)
  nan_published = np.isnan(published) & ~nan_ours
  keep = ~(nan_ours | nan_published)
  x, y = ours[keep], published[keep]
  spearman = pearson = float("nan")
  if len(x) >= 3 and np.ptp(x) > 0 and np.ptp(y) > 0:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")
      spearman = float(scipy.stats.spearmanr(x, y)[0])
      pearson = float(scipy.stats.pearsonr(x, y)[0])
  return Correlation(int(keep.sum()), int(nan_ours.sum()),
                     int(nan_published.sum()), spearman, pearson)


def jaccard(ours: Tuple[np.ndarray, np.ndarray],
            published: Tuple[np.ndarray, np.ndarray]) -> Tuple[float, int,
                                                                int, int]:
  """Jaccard overlap of two sets of (tr_idx, tt_idx) pairs.

  Returns `(jaccard, |ours|, |published|, |both|)`; 1.0 when both are empty.
  """
  def as_set(pairs):
    tr, tt = (np.asarray(p, np.int64).ravel() for p in pairs)
    return set(zip(tr.tolist(), tt.tolist()))
  a, b = as_set(ours), as_set(published)
  both = len(a & b)
  union = len(a | b)
  return (both / union if union else 1.0), len(a), len(b), both


def write_scatter(path: str, ours, published, xlabel: str, ylabel: str,
                  title: str, seed: int = 0):
  """A PNG scatter plot of `published` against `ours`, written atomically.

  NaN pairs are left out; above `MAX_PLOT_POINTS` points a random subset is
  drawn (said in the title).
  """
  # pylint: disable=g-import-not-at-top
  from matplotlib import figure
  from matplotlib.backends import backend_agg
  # pylint: enable=g-import-not-at-top
  x = np.asarray(ours, np.float64)
  y = np.asarray(published, np.float64)
  keep = np.flatnonzero(~(np.isnan(x) | np.isnan(y)))
  if len(keep) > MAX_PLOT_POINTS:
    keep = np.sort(np.random.default_rng(seed).choice(
        keep, MAX_PLOT_POINTS, replace=False))
    title += f" (random {MAX_PLOT_POINTS} points)"
  fig = figure.Figure(figsize=(5, 5), dpi=100)
  backend_agg.FigureCanvasAgg(fig)
  ax = fig.add_subplot()
  ax.scatter(x[keep], y[keep], s=2, alpha=0.3, linewidths=0)
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.set_title(title, fontsize=9)
  buffer = io.BytesIO()
  fig.savefig(buffer, format="png")
  with errors.user_path(path, "write"):
    files.atomic_write(path, lambda f: f.write(buffer.getvalue()))


def _experiment_dataset(experiment: str) -> str:
  """'cifar10', 'cifar100', 'imagenet' or 'mnist' for an experiment name
  (from `heldout_tf.experiments`, else the name's prefix)."""
  from heldout_tf import experiments  # pylint: disable=g-import-not-at-top
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


def _ours(result, key: str, what: str, path: str) -> np.ndarray:
  if key not in result:
    raise CompareError(f"the estimates have no {key!r}: compute {what} "
                       f"(--what ...,{what}) to compare with {path}")
  return np.asarray(result[key])


def _same_length(ours, published, what, path):
  if len(ours) != len(published):
    raise CompareError(f"{path}: {len(published)} published {what} but "
                       f"{len(ours)} of ours (another dataset or split?)")


def compare(result, path: str, *, experiment: str,
            data_dir: Optional[str] = None,
            plot_path: Optional[str] = None) -> str:
  """Compares our estimates with a published file; returns a report.

  Args:
    result: `heldout_tf.estimates.compute`'s dict (or the .npz it saved):
      `cscores` for a C-score file, `memorization` for `cifar100_infl_matrix`
      (and pair files, optional), `tr_idx` and `tt_idx` for a pairs file;
      `labels`, when present, is checked against the published labels.
    path: the published file (kind detected from its name or keys).
    experiment: the experiment the estimates are of (its dataset must be the
      file's).
    data_dir: tfds data directory holding the prepared CIFAR dataset (CIFAR
      C-score files only: their original order is mapped to tfds order).
    plot_path: where to write a scatter plot PNG (ours vs published).

  Returns:
    Lines: the file and order assumed, Spearman and Pearson correlations
    (NaNs excluded and counted), the Jaccard overlap of pair sets, label
    agreement, the plot written.

  Raises:
    PublishedFileError, DatasetNotPreparedError, CompareError, UsageError.
  """
  dataset = check_compatible(path, experiment)
  published = load(path)
  name = os.path.basename(path)
  if isinstance(published, CScores):
    lines, x, y, what = _compare_cscores(result, published, dataset, data_dir)
  elif isinstance(published, InflMatrix):
    lines, x, y, what = _compare_memorization(result, published)
  else:
    lines, x, y, what = _compare_pairs(result, published)
  lines.insert(0, f"published: {name} ({published.kind})")
  if plot_path and x is not None:
    write_scatter(plot_path, x, y, f"ours ({experiment})",
                  f"published ({name})", what)
    lines.append(f"plot: wrote {plot_path}")
  elif plot_path:
    lines.append("plot: none (the estimates have no memorization to plot)")
  return "\n".join(lines)


def _label_line(result, labels, what="labels") -> list:
  if labels is None or "labels" not in result:
    return []
  ours = np.asarray(result["labels"])
  if len(ours) != len(labels):
    return [f"{what}: not compared ({len(ours)} ours, {len(labels)} "
            "published)"]
  agree = int(np.sum(ours == labels))
  warning = "" if agree == len(ours) else (
      "  WARNING: the orders (or datasets) differ")
  return [f"{what}: {agree}/{len(ours)} agree{warning}"]


def _compare_cscores(result, published: CScores, dataset, data_dir):
  ours = _ours(result, "cscores", "cscores", published.path)
  _same_length(ours, published.scores, "C-scores", published.path)
  scores, labels = published.scores, published.labels
  if dataset in ("cifar10", "cifar100"):
    order = tfds_original_order(dataset, "train", data_dir)
    _same_length(ours, order, "tfds examples", published.path)
    scores, labels = scores[order], labels[order]
    note = ("order: published original CIFAR order mapped to the runs' tfds "
            "order by the tfds `id` feature")
  else:
    note = ("order: taken as the runs' order (no mapping is known for "
            f"{dataset}; a label mismatch below would show otherwise)")
  lines = [note, correlate(ours, scores).line("C-scores")]
  lines += _label_line(result, labels)
  return lines, ours, scores, "C-score"


def _compare_memorization(result, published: InflMatrix):
  ours = _ours(result, "memorization", "mem", published.path)
  _same_length(ours, published.tr_mem, "memorization values", published.path)
  lines = ["order: published memorization taken in the runs' tfds order",
           correlate(ours, published.tr_mem).line("memorization")]
  lines += _label_line(result, published.tr_labels, "train labels")
  return lines, ours, published.tr_mem, "memorization"


def _compare_pairs(result, published: Pairs):
  ours_pairs = (_ours(result, "tr_idx", "pairs", published.path),
                _ours(result, "tt_idx", "pairs", published.path))
  score, n_ours, n_published, both = jaccard(
      ours_pairs, (published.tr_idx, published.tt_idx))
  lines = ["order: published pairs taken in the runs' tfds order",
           f"high-influence pairs: Jaccard {score:.4f} ({both} in both, "
           f"{n_ours} ours, {n_published} published)"]
  if "memorization" not in result:
    return lines, None, None, "memorization"
  mem = np.asarray(result["memorization"])
  train, first = np.unique(published.tr_idx, return_index=True)
  if train.size and train.max() >= len(mem):
    raise CompareError(f"{published.path}: training index {train.max()} but "
                       f"the estimates have {len(mem)} training examples")
  lines.append(correlate(mem[train], published.mem[first]).line(
      "memorization of the published pairs' training examples"))
  return lines, mem[train], published.mem[first], "memorization"
