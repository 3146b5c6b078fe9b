"""The kit's error base: every error caused by bad input derives from it.

Command-line entry points catch `HeldoutError` only (see `heldout_tf.cli`),
print `error: <message>` and exit 1; anything else is a bug and keeps its
traceback. Messages name the file, key, flag or variable at fault and are
short: one line where possible.

Module-specific errors (`runs.AuxArraysError`, `checkpoints.
CheckpointMismatchError`, `archive.ArchiveError`, ...) derive from
`HeldoutError`; most also derive from the builtin their callers used to
catch (`ValueError`, `FileNotFoundError`) so existing `except` clauses keep
working.
"""

import contextlib
import os


class HeldoutError(Exception):
  """Bad input (a file, key, flag or path): a clear message, no traceback."""


class UsageError(HeldoutError, ValueError):
  """A flag or argument value is invalid (names the flag)."""


class PathError(HeldoutError, OSError):
  """A user-given path cannot be read or written (names the path)."""


class ConfigError(HeldoutError, ValueError):
  """Settings disagree with what a collection on disk was made with."""


class MissingExtraError(HeldoutError, ImportError):
  """An optional package is not installed (the message names the extra)."""


def describe_os_error(error: OSError) -> str:
  """'Permission denied' / 'Not a directory' ... without errno noise."""
  return error.strerror or type(error).__name__


@contextlib.contextmanager
def user_path(path: str, action: str = "write", name_path: bool = False):
  """Turns an OSError raised inside the block into a `PathError`.

  `with user_path(out, "write"): os.makedirs(out)` raises
  `PathError("cannot write /ro/out: Permission denied")` instead of a
  traceback. Use it only around I/O on paths the user chose. The message
  names the file the OS error names (e.g. a file in the way), or `path`
  when `name_path` (e.g. around a hidden temporary file's writes).
  """
  try:
    yield
  except PathError:
    raise
  except OSError as e:
    where = (e.filename if isinstance(e.filename, str) and not name_path
             else path)
    raise PathError(f"cannot {action} {os.fspath(where)}: "
                    f"{describe_os_error(e)}") from e
