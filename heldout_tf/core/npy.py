"""The header of an untrusted `.npy` stream, read and checked before any
array is allocated: the part of `heldout_tf.core.npz` (the one reader of
untrusted npz / npy files) that knows numpy's format.

A header whose dtype holds Python objects, whose shape is not the caller's
or claims more entries than allowed, or that is not numpy's format is
refused, naming the file and key, with the caller's error class.
"""

import io
import math
import re
from typing import Optional, Sequence, Tuple

import numpy as np

MAX_HEADER_BYTES = 10_000  # numpy's own default limit.
# Dtype kinds a member may have: bool, integers, floats, complex, bytes,
# str. Not objects (pickles), structured/void, datetimes.
ALLOWED_KINDS = "biufcSU"
_NPY_MAGIC = b"\x93NUMPY"
# The header numpy writes; parsed by a regex, much faster than numpy's `ast`
# parse when thousands of files are read. Anything else goes to numpy.
_NPY_HEADER = re.compile(
    r"\{'descr': '([<>|=][a-zA-Z][0-9]+)', 'fortran_order': (False|True), "
    r"'shape': \(((?:[0-9]+(?:, [0-9]+)*)?),?\), \}\s*")
Shape = Tuple[int, ...]


def read_header(f, path: str, key: str, error):
  """`(dtype, shape, fortran_order, raw)` of an npy stream at its start.

  Leaves `f` at the array's data; `raw` is the header's bytes (magic
  included). Raises `error` naming `path` and `key`.
  """
  start = f.read(8)
  if len(start) != 8 or start[:6] != _NPY_MAGIC or start[6] not in (1, 2, 3):
    raise error(f"{path}: cannot read key {key!r}: not an npy array")
  width = 2 if start[6] == 1 else 4
  length_bytes = f.read(width)
  header_len = int.from_bytes(length_bytes, "little")
  if len(length_bytes) != width or header_len > MAX_HEADER_BYTES:
    raise error(f"{path}: cannot read key {key!r}: npy header of "
                f"{header_len} bytes (at most {MAX_HEADER_BYTES})")
  header = f.read(header_len)
  if len(header) != header_len:
    raise error(f"{path}: cannot read key {key!r}: truncated npy header")
  raw = start + length_bytes + header
  match = _NPY_HEADER.fullmatch(header.decode("latin1"))
  if match:
    try:
      dtype = np.dtype(match.group(1))
    except TypeError:
      pass  # An unknown descr: let numpy name the problem.
    else:
      dims = match.group(3)
      if "," not in dims:  # The usual vector (or a scalar).
        shape = (int(dims),) if dims else ()
      else:
        shape = tuple(int(d) for d in dims.split(", "))
      return dtype, shape, match.group(2) == "True", raw
  parse = (np.lib.format.read_array_header_1_0 if start[6] == 1
           else np.lib.format.read_array_header_2_0)
  try:
    shape, fortran, dtype = parse(io.BytesIO(length_bytes + header),
                                  max_header_size=MAX_HEADER_BYTES)
  except (ValueError, TypeError, SyntaxError) as e:
    raise error(f"{path}: cannot read key {key!r} ({e})") from None
  return dtype, tuple(shape), fortran, raw


def _kind_names(kinds: str) -> str:
  names = {"b": "bool", "i": "integer", "u": "integer",
           "f": "floating point", "c": "complex", "S": "string",
           "U": "string"}
  return " or ".join(dict.fromkeys(names[k] for k in kinds))


def check_header(dtype, shape: Shape, path: str, key: str, error, *,
                 kinds: Optional[str] = None, ndim: Optional[int] = None,
                 expected: Optional[Sequence[Optional[int]]] = None,
                 max_elements: Optional[int] = None):
  """Refuses a dtype or shape before any data is read.

  Args:
    dtype, shape: from the member's header.
    path, key, error: for the message.
    kinds: allowed dtype kinds (e.g. 'iu'); None: any of `ALLOWED_KINDS`.
    ndim: the number of dimensions required.
    expected: the shape required (None entries: any length).
    max_elements: most entries allowed.
  """
  if dtype.hasobject:
    raise error(f"{path}: cannot read key {key!r}: a pickled object array "
                f"({dtype}); refusing to unpickle it")
  if dtype.kind not in ALLOWED_KINDS or dtype.fields is not None or (
      dtype.subdtype is not None):
    raise error(f"{path}: cannot read key {key!r}: dtype {dtype} is not a "
                "plain number or string type")
  if kinds is not None and dtype.kind not in kinds:
    raise error(f"{path}: key {key!r} has dtype {dtype}, expected "
                f"{_kind_names(kinds)}")
  if ndim is not None and len(shape) != ndim:
    what = {0: "a scalar", 1: "a vector"}.get(ndim, f"{ndim} dimensions")
    raise error(f"{path}: key {key!r} has shape {shape}, expected {what}")
  if expected is not None and (
      len(shape) != len(expected) or
      any(e is not None and s != e for s, e in zip(shape, expected))):
    want = tuple("*" if e is None else e for e in expected)
    raise error(f"{path}: key {key!r} has shape {shape}, expected "
                f"{want}".replace("'*'", "*"))
  count = math.prod(shape)
  if max_elements is not None and count > max_elements:
    raise error(f"{path}: key {key!r} claims {count} entries, more than "
                f"the {max_elements} expected")


def empty_array(dtype, shape, fortran):
  """`(array, its bytes as a writable memoryview)`."""
  if fortran and len(shape) > 1:
    data = np.empty(shape[::-1], dtype)
    return data.T, memoryview(data.reshape(-1).view(np.uint8))
  array = np.empty(shape, dtype)
  flat = array if array.ndim == 1 else array.reshape(-1)
  return array, memoryview(flat.view(np.uint8))
