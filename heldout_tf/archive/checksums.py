"""Checksums of the released archives: the expected MD5, checking a
stream's or a local file's, and setting aside a kept archive whose bytes
are bad (so a re-run downloads again instead of resuming them)."""

import contextlib
import hashlib
import os

from heldout_tf.archive import transport
from heldout_tf.archive.exceptions import ArchiveError
from heldout_tf.archive.exceptions import ChecksumError
from heldout_tf.archive.exceptions import DownloadError
from heldout_tf.archive.exceptions import UnsafeMemberError
from heldout_tf.collection import experiments
from heldout_tf.core import errors
from heldout_tf.core import progress as progress_lib

PART_SUFFIX = ".part"  # A kept archive being downloaded: `<keep>.part`.


def expected_md5(experiment, md5):
  if not md5:
    try:
      md5 = experiments.get(experiment, released_only=True).md5
    except ValueError as e:
      raise errors.UsageError(f"{e}; pass md5 (--md5) for others") from None
  md5 = md5.lower()
  if len(md5) != 32 or any(c not in "0123456789abcdef" for c in md5):
    raise errors.UsageError(f"md5 must be 32 hex digits, got {md5!r}")
  return md5


def check_md5(actual, md5, url, dest, reused):
  if actual == md5:
    return
  if reused:
    raise set_aside_kept(reused, actual, md5)
  raise ChecksumError(
      f"MD5 mismatch for {url}: got {actual}, expected {md5}; nothing "
      f"was written to {dest}. Re-run to download again.")


# Errors meaning the archive's bytes are bad (not a limit, lock or disk).
BAD_BYTES_ERRORS = (ArchiveError, ChecksumError, UnsafeMemberError)


@contextlib.contextmanager
def discarding_bad_kept_bytes(md5, reused, keep_path):
  """On bad archive bytes, sets aside a bad kept archive, drops a `.part`."""
  try:
    yield
  except ArchiveError as e:
    if keep_path and type(e) in BAD_BYTES_ERRORS:
      # The kept bytes are damaged (or the archive is bad): don't resume them.
      part = keep_path + PART_SUFFIX
      if os.path.exists(part):
        os.unlink(part)
    if reused and type(e) in (ArchiveError, UnsafeMemberError):
      # Undecodable: if the kept file is not the archive, set it aside.
      actual = file_md5(reused)
      if actual is not None and actual != md5:
        raise set_aside_kept(reused, actual, md5) from e
    raise


def file_md5(path):
  """Hex MD5 of a local file, or None if it cannot be read."""
  digest = hashlib.md5()
  try:
    for chunk in transport.LocalSource(path).chunks(0):
      digest.update(chunk)
  except (OSError, DownloadError):
    return None
  return digest.hexdigest()


def set_aside_kept(path, actual, md5):
  """Moves a bad kept archive to `<path>.bad`; returns the error to raise."""
  problem = (f"the kept archive {path} is damaged or stale: MD5 {actual}, "
             f"expected {md5}; nothing was extracted.")
  try:
    os.replace(path, path + ".bad")
  except OSError as e:
    return ChecksumError(f"{problem} Delete it (could not move it aside: "
                         f"{e}) and re-run to download again.")
  return ChecksumError(f"{problem} Moved it to {path}.bad; re-run to download "
                       "again.")


def verify_file(path, md5, progress=True):
  """Checks a local archive's MD5; returns it or raises ChecksumError."""
  src = transport.LocalSource(path)
  digest = hashlib.md5()
  with progress_lib.bar(src.size, os.path.basename(path), unit="B",
                        enabled=progress, unit_scale=True) as bar:
    for chunk in src.chunks(0):
      digest.update(chunk)
      bar.update(len(chunk))
  actual = digest.hexdigest()
  if actual != md5.lower():
    raise ChecksumError(f"{path}: MD5 mismatch: got {actual}, expected {md5}")
  return actual
