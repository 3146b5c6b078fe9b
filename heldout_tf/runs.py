"""`aux_arrays.npz`: the one reader and writer.

Each run directory `<root>/<experiment>/<ratio>/<run>/` (see
`heldout_tf.layout`, which owns the names) holds `aux_arrays.npz` and
`checkpoints/ckpt-<N>.*`. `read_aux` is the only code that opens an
`aux_arrays.npz`; it treats the file as untrusted:

- only a regular file is opened (a FIFO, a device such as a symlink to
  `/dev/zero`, or a directory is refused before anything is read);
- only the seven needed members are read: extra members are never inflated;
- each member's npy header (dtype, shape) is read first and the member is
  refused when it claims more elements than expected, when its zip entry's
  size differs from what the header implies, or when it is neither stored
  nor deflated; so nothing inflates beyond its declared shape;
- correctness must be bool, or integers holding only 0 and 1; indices must
  be integers.

`run_dir`, `format_ratio`, `list_runs`, `AUX_FILENAME` and
`CHECKPOINTS_DIRNAME` are re-exported from `heldout_tf.layout`.
"""

import io
import os
import re
import stat
import struct
import zipfile
import zlib

import numpy as np

from heldout_tf import errors
from heldout_tf import files
from heldout_tf import layout

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
_MAX_HEADER_BYTES = 10_000  # numpy's own default limit.
_NPY_MAGIC = b"\x93NUMPY"
_NPY_HEADER = re.compile(
    r"\{'descr': '([<>|=][a-zA-Z][0-9]+)', 'fortran_order': (?:False|True), "
    r"'shape': \(([0-9]+),?\), \}\s*")


class AuxArraysError(errors.HeldoutError, ValueError):
  """An `aux_arrays.npz` file is unreadable, or its arrays are inconsistent."""


def list_runs(root: str, experiment: str, ratios=None):
  """Sorted `(ratio_name, run_id, run_dir)` of every canonical run directory.

  A thin wrapper of `heldout_tf.layout.list_runs` (which see: non-canonical
  names are skipped with a warning, ambiguous ones raise `LayoutError`).
  """
  return [(found.ratio_name, found.run, found.path)
          for found in layout.list_runs(root, experiment, ratios)]


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


def _open_regular(path: str):
  """A binary file object for `path`, refusing anything but a regular file.

  Checks with `os.stat` before opening (a FIFO would block in `open`), opens
  without blocking and checks the opened file again (it may have been
  swapped in between).
  """
  try:
    before = os.stat(path)
  except FileNotFoundError:
    raise AuxArraysError(f"{path}: file not found") from None
  except OSError as e:
    raise AuxArraysError(
        f"{path}: cannot read ({errors.describe_os_error(e)})") from None
  if not stat.S_ISREG(before.st_mode):
    raise AuxArraysError(f"{path}: not a regular file ({_kind(before)})")
  try:
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC",
                                                             0))
  except OSError as e:
    raise AuxArraysError(
        f"{path}: cannot read ({errors.describe_os_error(e)})") from None
  try:
    after = os.fstat(fd)
    if not stat.S_ISREG(after.st_mode):
      raise AuxArraysError(f"{path}: not a regular file ({_kind(after)})")
    return os.fdopen(fd, "rb")
  except BaseException:
    os.close(fd)
    raise


def _kind(st) -> str:
  for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
                     (stat.S_ISCHR, "a character device"),
                     (stat.S_ISBLK, "a block device"),
                     (stat.S_ISSOCK, "a socket")):
    if test(st.st_mode):
      return name
  return "not a file"


def _npy_header(f, path, key):
  """`(dtype, shape, header)` from an npy stream; `header` is its raw bytes.

  A regex parses the usual header (much faster than numpy's `ast` parse for
  thousands of files); anything else goes through `np.lib.format` with its
  header size limit.
  """
  err = AuxArraysError
  start = f.read(8)
  if len(start) != 8 or start[:6] != _NPY_MAGIC or start[6] not in (1, 2, 3):
    raise err(f"{path}: cannot read key {key!r}: not an npy array")
  width = 2 if start[6] == 1 else 4
  length_bytes = f.read(width)
  header_len = int.from_bytes(length_bytes, "little")
  if len(length_bytes) != width or header_len > _MAX_HEADER_BYTES:
    raise err(f"{path}: cannot read key {key!r}: npy header of "
              f"{header_len} bytes (at most {_MAX_HEADER_BYTES})")
  header = f.read(header_len)
  if len(header) != header_len:
    raise err(f"{path}: cannot read key {key!r}: truncated npy header")
  raw = start + length_bytes + header
  match = _NPY_HEADER.fullmatch(header.decode("latin1"))
  if match:
    try:
      return np.dtype(match.group(1)), (int(match.group(2)),), raw
    except TypeError:
      pass  # An unknown descr: let numpy name the problem.
  reader = (np.lib.format.read_array_header_1_0 if start[6] == 1
            else np.lib.format.read_array_header_2_0)
  try:
    shape, _, dtype = reader(io.BytesIO(length_bytes + header),
                             max_header_size=_MAX_HEADER_BYTES)
  except ValueError as e:
    raise err(f"{path}: cannot read key {key!r} ({e})") from None
  return dtype, shape, raw


def _check_header(dtype, shape, limit, path, key):
  """Refuses a dtype or shape `key` cannot have before reading its data."""
  err = AuxArraysError
  if dtype.hasobject:
    raise err(f"{path}: cannot read key {key!r}: dtype {dtype} holds Python "
              "objects (pickled data is never loaded)")
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


def _check_size(info, header, dtype, shape, path, key) -> int:
  """The data bytes the header declares; refuses a zip entry of other size."""
  nbytes = shape[0] * dtype.itemsize
  if info.file_size != len(header) + nbytes:
    raise AuxArraysError(
        f"{path}: key {key!r} is {info.file_size} bytes uncompressed but its "
        f"header declares {len(header) + nbytes} ({shape[0]} x {dtype})")
  return nbytes


def _read_stored(raw, info, key, limit, path) -> np.ndarray:
  """A stored (uncompressed) member, read straight into its array.

  One copy from the file instead of zipfile's two; the CRC is checked as
  zipfile would.
  """
  err = AuxArraysError
  raw.seek(info.header_offset)
  local = raw.read(30)
  if len(local) != 30 or local[:4] != b"PK\x03\x04":
    raise err(f"{path}: cannot read key {key!r}: bad zip local header")
  name_len, extra_len = struct.unpack("<HH", local[26:30])
  raw.seek(info.header_offset + 30 + name_len + extra_len)
  dtype, shape, header = _npy_header(raw, path, key)
  _check_header(dtype, shape, limit, path, key)
  nbytes = _check_size(info, header, dtype, shape, path, key)
  array = np.empty(shape, dtype)
  data = memoryview(array).cast("B")
  if nbytes and raw.readinto(data) != nbytes:
    raise err(f"{path}: cannot read key {key!r}: truncated")
  if zlib.crc32(data, zlib.crc32(header)) != info.CRC:
    raise err(f"{path}: cannot read key {key!r}: bad CRC-32")
  return array


def _read_deflated(zf, info, key, limit, path) -> np.ndarray:
  """A deflated member, never inflating more than its header declares."""
  err = AuxArraysError
  with zf.open(info) as f:
    dtype, shape, header = _npy_header(f, path, key)
    _check_header(dtype, shape, limit, path, key)
    nbytes = _check_size(info, header, dtype, shape, path, key)
    array = np.empty(shape, dtype)
    got = f.readinto(memoryview(array).cast("B")) if nbytes else 0
    if got != nbytes or f.read(1):  # The read at the end checks the CRC.
      raise err(f"{path}: cannot read key {key!r}: truncated")
  return array


def _read_member(raw, zf, info, key, limit, path) -> np.ndarray:
  """One member as an array, refused before reading when oversized."""
  if info.flag_bits & 0x1:
    raise AuxArraysError(f"{path}: cannot read key {key!r}: encrypted")
  if info.compress_type == zipfile.ZIP_STORED:
    if info.compress_size != info.file_size:
      raise AuxArraysError(f"{path}: cannot read key {key!r}: stored entry "
                           "with different compressed size")
    return _read_stored(raw, info, key, limit, path)
  if info.compress_type == zipfile.ZIP_DEFLATED:
    return _read_deflated(zf, info, key, limit, path)
  raise AuxArraysError(f"{path}: cannot read key {key!r}: zip compression "
                       f"method {info.compress_type} (only stored or "
                       "deflated)")


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
  aux = {}
  with _open_regular(path) as raw:
    try:
      with zipfile.ZipFile(raw) as zf:
        members = {name[:-4]: info for info in zf.infolist()
                   if (name := info.filename).endswith(".npy")}
        missing = [k for k in AUX_KEYS if k not in members]
        if missing:
          raise AuxArraysError(f"{path}: missing key(s) {missing}; has "
                               f"{sorted(members)}")
        for key in AUX_KEYS:
          aux[key] = _read_member(raw, zf, members[key], key, limits[key],
                                  path)
    except AuxArraysError:
      raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError,
            ValueError, NotImplementedError, RuntimeError) as e:
      raise AuxArraysError(f"{path}: cannot read ({e})") from e
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
