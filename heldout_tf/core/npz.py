"""The one reader of untrusted `.npz` and `.npy` files.

  with npz.Reader(path, MyError) as f:            # a regular file, a zip
    f.require(["scores", "labels"])                # MyError naming missing
    scores = f.read("scores", kinds="f", shape=(50_000,))
    idx = f.read("idx", kinds="iu", ndim=1, max_elements=n)
  scores = npz.read_npy(path, MyError, kinds="f", shape=(60_000,))

Every npz and npy file the kit reads (aux arrays, signals, published score
files, exported weights) goes through here, and is treated as hostile:

- only a regular file is opened: `os.stat` first (a FIFO would block in
  `open`), then a non-blocking open and `os.fstat` again (it may have been
  swapped in between); a FIFO, a device (e.g. a symlink to `/dev/zero`) or a
  directory is refused before anything is read;
- only the members asked for are read: others are never inflated;
- each member's npy header is read first and the member refused when its
  dtype holds Python objects (nothing is ever unpickled here), its shape is
  not the caller's (`shape`, `ndim`) or claims more than `max_elements`
  entries, its zip entry's size differs from what the header implies, a
  stored entry reaches past the end of the file, or it is neither stored nor
  deflated. So nothing is allocated or inflated beyond what the header
  declares and the caller allows (a `.npy` declaring 10^12 entries is
  refused before any allocation);
- CRC-32s are checked; a truncated or bit-flipped file is an error naming
  the file and key, never a raw `zipfile.BadZipFile`.

Errors are instances of the caller's class (`error`, a `HeldoutError`
subclass), so each module keeps its own error type.
"""

import io
import math
import os
import stat
import struct
from typing import Iterable, Optional, Sequence, Tuple, Union
import zipfile
import zlib

import numpy as np

from heldout_tf.core import errors
from heldout_tf.core import files
from heldout_tf.core import npy

# `max_total_bytes="auto"`: members may declare at most this many bytes, or
# INFLATION_RATIO times the file's size if more: a compressed bomb (a small
# file declaring huge arrays) is refused before it inflates.
MIN_BUDGET_BYTES = 256 << 20
INFLATION_RATIO = 64
# What a broken zip or npy stream raises while being read.
_READ_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError,
                ValueError, NotImplementedError, RuntimeError, zlib.error,
                struct.error, OverflowError)



class NpzError(errors.HeldoutError, ValueError):
  """An npz / npy file is unreadable or not what was expected."""


# ----------------------------------------------------------- regular files --


def _os_error(path, e, error, os_error):
  if os_error is not None:
    return os_error(f"cannot read {path}: {errors.describe_os_error(e)}")
  if isinstance(e, FileNotFoundError):
    return error(f"{path}: file not found")
  return error(f"{path}: cannot read ({errors.describe_os_error(e)})")


def check_regular(path: str, error=NpzError, os_error=None):
  """Raises `error` unless `path` is a regular file (never opens it).

  For files another library opens (e.g. TensorFlow's checkpoint reader),
  so that a FIFO cannot block it. A missing or unreadable path raises
  `os_error` (e.g. `errors.PathError`) when given, else `error`.
  """
  try:
    st = os.stat(path)
  except OSError as e:
    raise _os_error(path, e, error, os_error) from None
  if not stat.S_ISREG(st.st_mode):
    raise error(f"{path}: not a regular file ({files.kind_of(st)})")


def open_regular(path: str, error=NpzError, os_error=None):
  """A binary file object for `path`, refusing anything but a regular file.

  Checks with `os.stat` before opening (a FIFO would block in `open`), opens
  without blocking and checks the opened file again. Errors as
  `check_regular`.
  """
  check_regular(path, error, os_error)
  try:
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK |
                 getattr(os, "O_CLOEXEC", 0))
  except OSError as e:
    raise _os_error(path, e, error, os_error) from None
  try:
    after = os.fstat(fd)
    if not stat.S_ISREG(after.st_mode):
      raise error(f"{path}: not a regular file ({files.kind_of(after)})")
    return os.fdopen(fd, "rb")
  except BaseException:
    os.close(fd)
    raise


# ---------------------------------------------------------------- npz files --


Source = Union[str, os.PathLike, bytes]


class Reader:
  """Members of an npz file, read one at a time under the checks above.

  `Reader(path, error)` opens a regular file; `Reader(payload_bytes, error,
  name=...)` reads bytes in memory. Use as a context manager.

  Attributes:
    path: the file (or `name`) that messages name.
    keys: the member names (without `.npy`), in file order.
  """

  def __init__(self, source: Source, error=NpzError, *,
               name: Optional[str] = None, os_error=None,
               max_total_bytes: Optional[int] = None):
    """Args:
      source: a path, or the file's bytes.
      error: the exception class raised (a `HeldoutError` subclass taking
        a message).
      name: what messages call `source` when it is bytes.
      os_error: raised for a missing or unreadable path (default `error`).
      max_total_bytes: most bytes all members read may declare in total;
        "auto": max(MIN_BUDGET_BYTES, INFLATION_RATIO * file size).
    """
    self.error = error
    self.max_total_bytes = max_total_bytes
    self.total_bytes = 0
    self._file = not isinstance(source, (bytes, bytearray, memoryview))
    if not self._file:
      self.path = name or "<bytes>"
      self._raw = io.BytesIO(source)
    else:
      self.path = os.fspath(source)
      self._raw = open_regular(self.path, error, os_error)
    try:
      self.size = (os.fstat(self._raw.fileno()).st_size if self._file
                   else memoryview(source).nbytes)
      if max_total_bytes == "auto":
        self.max_total_bytes = max(MIN_BUDGET_BYTES,
                                   INFLATION_RATIO * self.size)
      self._zip = zipfile.ZipFile(self._raw)
    except _READ_ERRORS as e:
      self._raw.close()
      raise error(f"{self.path}: cannot read: not an npz file ({e})") from e
    self._members = {}
    for info in self._zip.infolist():
      if info.filename.endswith(".npy"):
        self._members.setdefault(info.filename[:-4], info)
    self.keys = list(self._members)

  def __enter__(self):
    return self

  def __exit__(self, *unused):
    self.close()

  def close(self):
    self._zip.close()
    self._raw.close()

  def __contains__(self, key: str) -> bool:
    return key in self._members

  def require(self, keys: Iterable[str]):
    """Raises `error` naming the file and every missing key."""
    missing = [k for k in keys if k not in self._members]
    if missing:
      shown = sorted(self.keys)[:12]
      more = ", ..." if len(self.keys) > 12 else ""
      raise self.error(
          f"{self.path}: missing key(s) {missing}; has "
          f"{', '.join(repr(k) for k in shown) + more or 'no keys'}")

  def _info(self, key: str) -> zipfile.ZipInfo:
    info = self._members.get(key)
    if info is None:
      self.require([key])
    err = self.error
    if info.flag_bits & 0x1:
      raise err(f"{self.path}: cannot read key {key!r}: encrypted")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
      raise err(f"{self.path}: cannot read key {key!r}: zip compression "
                f"method {info.compress_type} (only stored or deflated)")
    if (info.compress_type == zipfile.ZIP_STORED and
        info.compress_size != info.file_size):
      raise err(f"{self.path}: cannot read key {key!r}: stored entry with "
                "different compressed size")
    if info.header_offset + info.compress_size > self.size:
      raise err(f"{self.path}: cannot read key {key!r}: truncated (the "
                f"entry reaches past the end of the file's {self.size} "
                "bytes)")
    return info

  def _wrapped(self, key, fn):
    """`fn()`, with a broken zip or stream as `error` naming the key."""
    try:
      return fn()
    except errors.HeldoutError:
      raise
    except _READ_ERRORS as e:
      raise self.error(f"{self.path}: cannot read key {key!r} "
                       f"({type(e).__name__}: {e})") from e

  def header(self, key: str) -> Tuple[np.dtype, npy.Shape]:
    """`(dtype, shape)` of member `key`, reading only its header."""
    info = self._info(key)

    def read():
      with self._zip.open(info) as f:
        dtype, shape, _, _ = npy.read_header(f, self.path, key, self.error)
      return dtype, shape
    return self._wrapped(key, read)

  def read(self, key: str, *, kinds: Optional[str] = None,
           ndim: Optional[int] = None,
           shape: Optional[Sequence[Optional[int]]] = None,
           max_elements: Optional[int] = None, check=None) -> np.ndarray:
    """Member `key` as a (writable) array, refused before reading when its
    header does not fit (see `check_header` for the arguments; `check`, if
    given, is called as `check(dtype, shape)` before reading and raises)."""
    info = self._info(key)
    limits = dict(kinds=kinds, ndim=ndim, expected=shape,
                  max_elements=max_elements)
    try:
      if info.compress_type == zipfile.ZIP_STORED:
        return self._read_stored(info, key, check, limits)
      return self._read_deflated(info, key, check, limits)
    except errors.HeldoutError:
      raise
    except _READ_ERRORS as e:
      raise self.error(f"{self.path}: cannot read key {key!r} "
                       f"({type(e).__name__}: {e})") from e

  def _checked(self, info, key, dtype, shape, header, check, limits) -> int:
    """The member's data bytes, after every check of its header."""
    if check is not None:
      check(dtype, shape)
    npy.check_header(dtype, shape, self.path, key, self.error, **limits)
    nbytes = math.prod(shape) * dtype.itemsize
    if info.file_size != len(header) + nbytes:
      raise self.error(
          f"{self.path}: key {key!r} is {info.file_size} bytes uncompressed "
          f"but its header declares {len(header) + nbytes} ({shape} x "
          f"{dtype})")
    self.total_bytes += nbytes
    if (self.max_total_bytes is not None and
        self.total_bytes > self.max_total_bytes):
      raise self.error(
          f"{self.path}: key {key!r}: the members read declare "
          f"{self.total_bytes} bytes, more than the {self.max_total_bytes} "
          "allowed for this file")
    return nbytes

  def _read_stored(self, info, key, check, limits) -> np.ndarray:
    """A stored member read straight into its array (one copy instead of
    zipfile's two); the CRC is checked as zipfile would."""
    raw, err = self._raw, self.error
    raw.seek(info.header_offset)
    local = raw.read(30)
    if len(local) != 30 or local[:4] != b"PK\x03\x04":
      raise err(f"{self.path}: cannot read key {key!r}: bad zip local header")
    name_len, extra_len = struct.unpack("<HH", local[26:30])
    raw.seek(info.header_offset + 30 + name_len + extra_len)
    dtype, shape, fortran, header = npy.read_header(raw, self.path, key, err)
    nbytes = self._checked(info, key, dtype, shape, header, check, limits)
    array, data = npy.empty_array(dtype, shape, fortran)
    if nbytes and raw.readinto(data) != nbytes:
      raise err(f"{self.path}: cannot read key {key!r}: truncated")
    if zlib.crc32(data, zlib.crc32(header)) != info.CRC:
      raise err(f"{self.path}: cannot read key {key!r}: bad CRC-32")
    return array

  def _read_deflated(self, info, key, check, limits) -> np.ndarray:
    """A deflated member, never inflating more than its header declares."""
    with self._zip.open(info) as f:
      dtype, shape, fortran, header = npy.read_header(f, self.path, key,
                                                  self.error)
      nbytes = self._checked(info, key, dtype, shape, header, check,
                             limits)
      array, data = npy.empty_array(dtype, shape, fortran)
      got = f.readinto(data) if nbytes else 0
      if got != nbytes or f.read(1):  # The read at the end checks the CRC.
        raise self.error(f"{self.path}: cannot read key {key!r}: truncated")
    return array

  def open_member(self, key: str, max_bytes: int):
    """A stream of member `key`'s raw npy bytes (for a caller that must
    parse them itself); refused when it inflates to more than `max_bytes`.
    Reading it raises zipfile/zlib errors: wrap them."""
    info = self._info(key)
    if info.file_size > max_bytes:
      raise self.error(f"{self.path}: key {key!r} is {info.file_size} bytes "
                       f"uncompressed, more than the {max_bytes} allowed")
    return self._zip.open(info)


def read(source: Source, keys: Sequence[str], error=NpzError,
         **limits) -> dict:
  """`{key: array}` of `keys` from an npz file, each read with `limits`
  (the keyword arguments of `Reader.read`)."""
  with Reader(source, error) as f:
    f.require(keys)
    return {key: f.read(key, **limits) for key in keys}


# ---------------------------------------------------------------- npy files --


def read_npy(path: str, error=NpzError, *, key: str = "array",
             os_error=None, kinds: Optional[str] = None,
             ndim: Optional[int] = None,
             shape: Optional[Sequence[Optional[int]]] = None,
             max_elements: Optional[int] = None) -> np.ndarray:
  """A single-array `.npy` file, under the same checks as an npz member
  (messages call its array `key`); the file's size must be what its header
  declares."""
  with open_regular(path, error, os_error) as f:
    size = os.fstat(f.fileno()).st_size
    try:
      if f.read(2) == b"PK":
        raise error(f"{path}: an npz archive, expected one .npy array")
      f.seek(0)
      dtype, got, fortran, header = npy.read_header(f, path, key, error)
      npy.check_header(dtype, got, path, key, error, kinds=kinds, ndim=ndim,
                   expected=shape, max_elements=max_elements)
      nbytes = math.prod(got) * dtype.itemsize
      if size != len(header) + nbytes:
        raise error(f"{path}: is {size} bytes but its header declares "
                    f"{len(header) + nbytes} ({got} x {dtype})")
      array, data = npy.empty_array(dtype, got, fortran)
      if nbytes and f.readinto(data) != nbytes:
        raise error(f"{path}: truncated")
    except errors.HeldoutError:
      raise
    except _READ_ERRORS as e:
      raise error(f"{path}: cannot read ({type(e).__name__}: {e})") from e
  return array
