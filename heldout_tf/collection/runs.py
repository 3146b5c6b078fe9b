"""`aux_arrays.npz`: the one reader and writer.

Each run directory `<root>/<experiment>/<ratio>/<run>/` (see
`heldout_tf.collection.layout`, which owns the names) holds `aux_arrays.npz` and
`checkpoints/ckpt-<N>.*`. `read_aux` is the only code that opens an
`aux_arrays.npz`; it treats the file as untrusted, through the kit's one
hardened npz reader (`heldout_tf.core.npz`: regular files only, only the seven
needed members read, each refused from its npy header before anything is
inflated), plus:

- each member must be 1-D and hold at most `member_limits(...)` entries;
- correctness must be bool, or integers holding only 0 and 1; indices must
  be integers.

`run_dir`, `format_ratio`, `AUX_FILENAME` and `CHECKPOINTS_DIRNAME` are
re-exported from `heldout_tf.collection.layout` (list runs with `layout.list_runs`).
"""

import os

import numpy as np

from heldout_tf.core import errors
from heldout_tf.core import files
from heldout_tf.collection import layout
from heldout_tf.core import npz

AUX_FILENAME = layout.AUX_FILENAME
CHECKPOINTS_DIRNAME = layout.CHECKPOINTS_DIRNAME
format_ratio = layout.format_ratio
run_dir = layout.run_dir

SPLITS = ("train", "removed", "test")
AUX_KEYS = tuple(f"{kind}_{split}" for kind in ("correctness", "index")
                 for split in SPLITS) + ("subsample_idx",)
# Default bound on every member's length when the dataset's sizes are not
# known yet: 6.5x ImageNet's 1 281 167 training examples.
MAX_EXAMPLES = 2**23


class AuxArraysError(errors.HeldoutError, ValueError):
  """An `aux_arrays.npz` file is unreadable, or its arrays are inconsistent."""


# ---------------------------------------------------------------- writing --


def write_aux(run_path: str, *, correctness, index, subsample_idx):
  """Writes `aux_arrays.npz` for one run.

  Args:
    run_path: the run directory.
    correctness: dict split -> bool array, for 'train', 'removed', 'test'.
    index: dict split -> int array of canonical example indices.
    subsample_idx: int array, the training examples this run trained on.
  """
  arrays = {"subsample_idx": np.asarray(subsample_idx, np.int64)}
  for split in SPLITS:
    arrays[f"correctness_{split}"] = np.asarray(correctness[split], bool)
    arrays[f"index_{split}"] = np.asarray(index[split], np.int64)
  files.save_npz(os.path.join(run_path, AUX_FILENAME), **arrays)


# ---------------------------------------------------------------- reading --


def member_limits(n_train=None, n_test=None) -> dict:
  """Most elements each aux key may hold: `{key: int}`.

  With the dataset's sizes known (e.g. from a collection's first run),
  train/removed/subsample members hold at most `n_train` and test members at
  most `n_test`; unknown sizes default to `MAX_EXAMPLES`.
  """
  n_train = MAX_EXAMPLES if n_train is None else int(n_train)
  n_test = MAX_EXAMPLES if n_test is None else int(n_test)
  return {key: n_test if key.endswith("_test") else n_train
          for key in AUX_KEYS}


def _check_member(key, limit, path):
  """The aux-specific header checks of member `key` (see `npz.Reader.read`)."""
  err = AuxArraysError

  def check(dtype, shape):
    if dtype.hasobject:
      return  # `npz.check_header` refuses it.
    if len(shape) != 1:
      raise err(f"{path}: key {key!r} must be 1-D, has shape {shape}")
    if key.startswith("correctness_"):
      if dtype.kind not in "biu":
        raise err(f"{path}: key {key!r} must be bool (or 0/1 integers), is "
                  f"{dtype}")
    elif dtype.kind not in "iu":
      raise err(f"{path}: key {key!r} must be integer, is {dtype}")
    if dtype.itemsize > 8:
      raise err(f"{path}: key {key!r} has {dtype.itemsize}-byte items, at "
                "most 8")
    if shape[0] > limit:
      raise err(f"{path}: key {key!r} claims {shape[0]} entries, more than "
                f"the {limit} expected")
  return check


def aux_file(path: str) -> str:
  """`path`, or its `aux_arrays.npz` when `path` is a run directory."""
  if os.path.isdir(path) and not path.endswith(".npz"):
    return os.path.join(path, AUX_FILENAME)
  return path


def read_aux(path: str, n_train=None, n_test=None) -> dict:
  """Reads and validates an `aux_arrays.npz` (a file or its run directory).

  Reads only the members in `AUX_KEYS`, bounded by `member_limits(n_train,
  n_test)` (see the module docstring). Returns `{key: 1-D array}` (writable;
  correctness as bool).

  Raises AuxArraysError naming the file and key when the file is not a
  regular zip file, keys are missing, arrays are not 1-D, have the wrong
  dtype or too many entries, or correctness/index lengths differ.
  (`heldout_tf.estimates.load_runs` also checks that train + removed cover
  every example exactly once.)
  """
  path = aux_file(path)
  limits = member_limits(n_train, n_test)
  with npz.Reader(path, AuxArraysError) as f:
    f.require(AUX_KEYS)
    aux = {key: f.read(key, check=_check_member(key, limits[key], path))
           for key in AUX_KEYS}
  return validate_aux(aux, path)


def validate_aux(aux: dict, path: str) -> dict:
  """`read_aux`'s checks on loaded arrays; returns correctness as bool.

  Raises AuxArraysError naming `path` and the key at fault.
  """
  missing = [k for k in AUX_KEYS if k not in aux]
  if missing:
    raise AuxArraysError(f"{path}: missing key(s) {missing}; has "
                         f"{sorted(aux)}")
  for key in AUX_KEYS:
    if aux[key].ndim != 1:
      raise AuxArraysError(f"{path}: key {key!r} must be 1-D, has shape "
                           f"{aux[key].shape}")
  for split in SPLITS:
    c, i = aux[f"correctness_{split}"], aux[f"index_{split}"]
    if c.shape != i.shape:
      raise AuxArraysError(
          f"{path}: key 'correctness_{split}' has shape {c.shape} but "
          f"'index_{split}' has shape {i.shape}")
    if not np.issubdtype(i.dtype, np.integer):
      raise AuxArraysError(f"{path}: key 'index_{split}' must be integer, "
                           f"is {i.dtype}")
    aux[f"correctness_{split}"] = _as_bool(c, path, f"correctness_{split}")
  if not np.issubdtype(aux["subsample_idx"].dtype, np.integer):
    raise AuxArraysError(f"{path}: key 'subsample_idx' must be integer, is "
                         f"{aux['subsample_idx'].dtype}")
  return aux


def _as_bool(values: np.ndarray, path: str, key: str) -> np.ndarray:
  """Bool correctness; integers only when every value is 0 or 1."""
  if values.dtype == bool:
    return values
  if values.dtype.kind in "iu":
    as_bool = values.astype(bool)
    if np.array_equal(as_bool, values):
      return as_bool
    bad = values[(values != 0) & (values != 1)]
    raise AuxArraysError(
        f"{path}: key {key!r} must be bool (or integers 0/1), has the "
        f"value {bad[0]}")
  raise AuxArraysError(f"{path}: key {key!r} must be bool (or integers "
                       f"0/1), is {values.dtype}")
