"""Writing files so that nothing is lost or half-written; directory locks.

  atomic_write(path, lambda f: f.write(data))   # temp file, fsync, rename
  save_npz(path, a=..., b=...)                  # the same for an npz file
  with locked(directory): ...                   # waits for the lock
  fd = try_lock(directory)                      # fd, BUSY or UNSUPPORTED

The one home of both: every module that writes a result file or needs a
lock on a directory calls these.
"""

import contextlib
import os
import tempfile

try:
  import fcntl  # pylint: disable=g-import-not-at-top
except ImportError:  # Windows: no advisory locks.
  fcntl = None

import numpy as np

from heldout_tf.core import errors

BUSY = None  # `try_lock`: another process (or open file) holds the lock.
UNSUPPORTED = -1  # `try_lock`: locks do not work here (Windows, some NFS).


def _umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask


def atomic_write(path: str, write_fn, mode: str = "wb"):
  """Calls `write_fn(file)` on a temporary file, then renames it to `path`.

  A reader sees the old file or the whole new one, never a part. An
  unwritable `path` (read-only directory, a file in the way, a full disk)
  raises `errors.PathError` naming `path` (not the temporary file); the
  temporary file never survives.
  """
  directory = os.path.dirname(os.path.abspath(path))
  with errors.user_path(path, "write"):
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-",
                               suffix=os.path.basename(path))
  try:
    with errors.user_path(path, "write", name_path=True):
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
  """Atomically writes an uncompressed npz file (no pickled members)."""
  atomic_write(path, lambda f: np.savez(f, **arrays))


def try_lock(directory: str):
  """An exclusive lock on `directory`, without waiting.

  Returns the fd holding it (release with `unlock`), `BUSY` when another
  process (or another open of it in this one) holds it, or `UNSUPPORTED`
  where locks do not work.
  """
  if fcntl is None:
    return UNSUPPORTED
  fd = os.open(directory, os.O_RDONLY)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    os.close(fd)
    return BUSY
  except OSError:
    os.close(fd)
    return UNSUPPORTED
  return fd


def unlock(lock):
  """Releases a lock `try_lock` returned (BUSY / UNSUPPORTED: nothing)."""
  if lock not in (BUSY, UNSUPPORTED):
    os.close(lock)


@contextlib.contextmanager
def locked(directory: str):
  """Holds an exclusive lock on `directory` (waiting for it) in the block.

  Where locks do not work (no `fcntl`, or a file system that refuses
  them) the block runs unlocked.
  """
  if fcntl is None:
    yield
    return
  fd = os.open(directory, os.O_RDONLY)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError:
      pass  # Unsupported here: run unlocked rather than fail.
    yield
  finally:
    os.close(fd)  # Releases the lock.
