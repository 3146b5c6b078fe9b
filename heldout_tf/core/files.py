"""Writing files so that nothing is lost or half-written; directory locks.

  check_writable(out)                           # before long work
  atomic_write(path, lambda f: f.write(data))   # temp file, fsync, rename
  save_npz(path, a=..., b=...)                  # the same for an npz file
  with locked(directory): ...                   # waits for the lock
  fd = try_lock(directory)                      # fd, BUSY or UNSUPPORTED

The one home of both: every module that writes a result file or needs a
lock on a directory calls these. One rule for every output: a destination
that exists must be a regular file (a device, FIFO, socket, directory or
symbolic link is refused, naming it, never replaced). Temporary files are
named `.tmp-<pid>-...`; those of processes that no longer exist (killed
mid-write) are removed by the next write into their directory.
"""

import contextlib
import os
import re
import stat
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


def kind_of(st) -> str:
  """What an `os.stat` / `os.lstat` result is, in words, for a message."""
  for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
                     (stat.S_ISCHR, "a character device"),
                     (stat.S_ISBLK, "a block device"),
                     (stat.S_ISSOCK, "a socket"),
                     (stat.S_ISLNK, "a symbolic link")):
    if test(st.st_mode):
      return name
  return "not a file"


def check_destination(path: str):
  """`errors.PathError` naming `path` when something other than a regular
  file is there (the rule every output follows); nothing there is fine."""
  try:
    st = os.lstat(path)
  except (FileNotFoundError, NotADirectoryError):
    return  # Nothing there (making its directory names what is in the way).
  except OSError as e:
    raise errors.PathError(f"cannot write {path}: "
                           f"{errors.describe_os_error(e)}") from e
  if not stat.S_ISREG(st.st_mode):
    raise errors.PathError(f"cannot write {path}: it is {kind_of(st)}, not "
                           "a regular file (remove it or choose another "
                           "path)")


def check_writable(path: str):
  """Fails early (before long work) when file `path` cannot be written:
  `errors.PathError` naming it when something other than a regular file is
  there (a directory, a device, a symbolic link), it lies under a file, or
  its directory is not writable. Creates the missing parent directories."""
  check_destination(path)
  directory = os.path.dirname(os.path.abspath(path))
  existing = directory
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    raise errors.PathError(f"cannot write {path}: {existing} is not a "
                           "directory")
  try:
    os.makedirs(directory, exist_ok=True)
    with tempfile.TemporaryFile(dir=directory):
      pass
  except OSError as e:  # Name `path`, not the probe file.
    raise errors.PathError(f"cannot write {path}: "
                           f"{errors.describe_os_error(e)}") from e


TMP_PREFIX = ".tmp-"
# `.tmp-<pid>-...`, and the `.tmp-ckpt-<step>-<pid>[-...]` names of
# checkpoint saves by earlier versions; the first group is the writer's pid.
_TMP_RE = re.compile(r"\.tmp-(?:ckpt-\d+-)?(\d+)(?:[-_.].*)?")


def temporary_prefix() -> str:
  """The prefix of this process's temporary files: `.tmp-<pid>-`."""
  return f"{TMP_PREFIX}{os.getpid()}-"


def pid_alive(pid: int) -> bool:
  """Whether process `pid` exists (on this machine)."""
  if pid <= 0:
    return False
  if pid == os.getpid():
    return True
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # Exists, owned by someone else.
    return True
  return True


def remove_stale_temporaries(directory: str, pattern=_TMP_RE) -> list:
  """Removes the temporary files and directories in `directory` that
  writers killed mid-way left (named by `pattern`, whose first group is
  the writer's pid, and that process gone); returns their names. A
  directory that cannot be listed is left alone."""
  removed = []
  try:
    names = sorted(os.listdir(directory))
  except OSError:
    return removed
  for name in names:
    match = pattern.fullmatch(name)
    if match and not pid_alive(int(match.group(1))):
      path = os.path.join(directory, name)
      try:
        if os.path.isdir(path) and not os.path.islink(path):
          import shutil  # pylint: disable=g-import-not-at-top
          shutil.rmtree(path)
        else:
          os.remove(path)
        removed.append(name)
      except FileNotFoundError:
        pass
  return removed


def atomic_write(path: str, write_fn, mode: str = "wb"):
  """Calls `write_fn(file)` on a temporary file, then renames it to `path`.

  A reader sees the old file or the whole new one, never a part. An
  unwritable `path` (read-only directory, a file in the way, a full disk)
  or one that is not a regular file (`check_destination`) raises
  `errors.PathError` naming `path` (not the temporary file); the temporary
  file never survives, and those of killed writers in the same directory
  are removed first.
  """
  directory = os.path.dirname(os.path.abspath(path))
  check_destination(path)
  with errors.user_path(path, "write"):
    os.makedirs(directory, exist_ok=True)
    remove_stale_temporaries(directory)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=temporary_prefix(),
                               suffix=os.path.basename(path))
  try:
    with errors.user_path(path, "write", name_path=True):
      os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 would stick.
      with os.fdopen(fd, mode) as f:
        write_fn(f)
        f.flush()
        os.fsync(f.fileno())
      check_destination(path)  # Nothing swapped in meanwhile.
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
