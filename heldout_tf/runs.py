"""The released run layout: `<root>/<experiment>/<ratio>/<run>/aux_arrays.npz`.

Each run directory holds `aux_arrays.npz` and `checkpoints/ckpt-<N>.*`. This
module names those paths and reads/writes `aux_arrays.npz` with validation.
"""

import os
import re
import tempfile

import numpy as np

AUX_FILENAME = "aux_arrays.npz"
CHECKPOINTS_DIRNAME = "checkpoints"
SPLITS = ("train", "removed", "test")
AUX_KEYS = tuple(f"{kind}_{split}" for kind in ("correctness", "index")
                 for split in SPLITS) + ("subsample_idx",)


class AuxArraysError(ValueError):
  """An `aux_arrays.npz` file is missing keys or has inconsistent arrays."""


def format_ratio(ratio) -> str:
  """Formats a subset ratio as its directory name (0.7 -> '0.7')."""
  if isinstance(ratio, str):
    return ratio
  return repr(float(ratio))


def run_dir(root: str, experiment: str, ratio, run) -> str:
  """`<root>/<experiment>/<ratio>/<run>`."""
  return os.path.join(root, experiment, format_ratio(ratio), str(int(run)))


def list_runs(root: str, experiment: str, ratios=None):
  """Sorted `(ratio_str, run_id, run_dir)` for every run directory on disk.

  `ratios` (iterable of floats or strings) restricts to those subset ratios.
  """
  exp_dir = os.path.join(root, experiment)
  if not os.path.isdir(exp_dir):
    return []
  wanted = None if ratios is None else {float(r) for r in ratios}
  found = []
  for ratio_name in os.listdir(exp_dir):
    try:
      ratio = float(ratio_name)
    except ValueError:
      continue
    if wanted is not None and ratio not in wanted:
      continue
    ratio_dir = os.path.join(exp_dir, ratio_name)
    for run_name in os.listdir(ratio_dir):
      if re.fullmatch(r"\d+", run_name):
        found.append((ratio, int(run_name), ratio_name,
                      os.path.join(ratio_dir, run_name)))
  found.sort()
  return [(name, run, path) for _, run, name, path in found]


def _umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask


def atomic_write(path: str, write_fn, mode="wb"):
  """Calls `write_fn(file)` on a temporary file, then renames it to `path`."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-",
                             suffix=os.path.basename(path))
  try:
    os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 would stick.
    with os.fdopen(fd, mode) as f:
      write_fn(f)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def save_npz(path: str, **arrays):
  """Atomically writes an uncompressed npz file."""
  atomic_write(path, lambda f: np.savez(f, **arrays))


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
  save_npz(os.path.join(run_path, AUX_FILENAME), **arrays)


def read_aux(path: str) -> dict:
  """Reads and validates an `aux_arrays.npz` (a file or its run directory).

  Raises AuxArraysError naming the file and key when keys are missing, arrays
  are not 1-D, correctness/index lengths differ or indices are not integers.
  (`heldout_tf.estimates.load_runs` also checks that train + removed cover
  every example exactly once.)
  """
  if os.path.isdir(path):
    path = os.path.join(path, AUX_FILENAME)
  try:
    with np.load(path, allow_pickle=False) as npz:
      aux = {k: npz[k] for k in npz.files}
  except FileNotFoundError:
    raise AuxArraysError(f"{path}: file not found") from None
  except Exception as e:  # Truncated / corrupt zip, pickled objects.
    raise AuxArraysError(f"{path}: cannot read ({e})") from e
  return validate_aux(aux, path)


def validate_aux(aux: dict, path: str) -> dict:
  """`read_aux`'s checks on already loaded arrays; casts correctness to bool.

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
    aux[f"correctness_{split}"] = c.astype(bool)
  return aux
