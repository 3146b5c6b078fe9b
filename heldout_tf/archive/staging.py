"""The destination's bookkeeping: lock, staging, commit, markers, manifest.

`dest` is locked for the whole download (a second download into it stops
with `DestinationBusyError`). Selected members are written into a staging
directory inside `dest` and moved into place run by run only after the
archive's MD5 matched. Each committed run directory holds a marker naming
the archive's MD5, the parts extracted and their files' sizes; a part
counts as committed only while its files are still there with those sizes.
A manifest of every run in the archive (and the parts each has) lets a
later call skip the download when everything requested is on disk.
"""

import contextlib
import json
import os
import shutil
import tempfile

from absl import logging

from heldout_tf.core import errors
from heldout_tf.collection import layout
from heldout_tf.core import files
from heldout_tf.core import sizes
from heldout_tf.archive import members
from heldout_tf.archive.exceptions import DestinationBusyError
from heldout_tf.archive.exceptions import DiskSpaceError

MARKER_FILENAME = ".heldout_extracted.json"
MANIFEST_FILENAME = ".heldout_manifest.json"
STAGING_PREFIX = ".heldout-staging-"
_NEW_STAGING_PREFIX = ".heldout-new-"  # Staging until it is locked.


@contextlib.contextmanager
def locked_dest(dest):
  """Creates `dest` if needed and holds its lock; yields whether created.

  On an error, a `dest` created here is removed again if it is empty.

  Raises:
    errors.PathError: `dest` cannot be created or is not a directory.
    DestinationBusyError: another download holds the lock.
  """
  if os.path.exists(dest) and not os.path.isdir(dest):
    raise errors.PathError(f"cannot write {dest}: not a directory")
  created = not os.path.isdir(dest)
  with errors.user_path(dest, "write"):
    os.makedirs(dest, exist_ok=True)
    lock = files.try_lock(dest)
  try:
    if lock is files.BUSY:
      raise DestinationBusyError(
          f"another download is extracting into {dest}; wait for it to "
          "finish (then re-run: committed runs are skipped) or use another "
          "--root")
    yield created
  except BaseException:
    if created:
      try:
        os.rmdir(dest)
      except OSError:
        pass
    raise
  finally:
    files.unlock(lock)


@contextlib.contextmanager
def staging_dir(dest, experiment):
  """A fresh staging directory in `dest`, locked while in use, then removed."""
  remove_stale_staging(dest, experiment)
  # Locked under a name the clean-up ignores, then renamed (the lock stays
  # with the directory): no other download can see it unlocked.
  with errors.user_path(dest, "write"):
    fresh = tempfile.mkdtemp(prefix=f"{_NEW_STAGING_PREFIX}{experiment}-",
                             dir=dest)
    lock = files.try_lock(fresh)
    staging = os.path.join(dest, STAGING_PREFIX + os.path.basename(fresh)[
        len(_NEW_STAGING_PREFIX):])
    os.rename(fresh, staging)
  try:
    yield staging
  finally:
    shutil.rmtree(staging, ignore_errors=True)
    files.unlock(lock)


def remove_stale_staging(dest, experiment):
  """Removes staging a crashed run left (not staging a live run is using)."""
  for name in os.listdir(dest):
    path = os.path.join(dest, name)
    if (not name.startswith(f"{STAGING_PREFIX}{experiment}-") or
        not os.path.isdir(path)):
      continue
    try:
      lock = files.try_lock(path)
    except OSError:  # Gone meanwhile.
      continue
    if lock is files.BUSY:
      logging.info("Leaving %s: another download is using it.", path)
      continue
    try:
      shutil.rmtree(path, ignore_errors=True)
    finally:
      files.unlock(lock)


def check_free_space(staging, target, size):
  """Raises `DiskSpaceError` unless `staging`'s file system has `size` free."""
  free = shutil.disk_usage(staging).free
  if size > free:
    raise DiskSpaceError(
        f"not enough disk space for {target}: it needs "
        f"{sizes.format_bytes(size)}, {sizes.format_bytes(free)} free in "
        f"{os.path.dirname(staging)}; free some space or pick another --root")


# ------------------------------------------------------- markers/manifest ---


def read_json(path):
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def write_json(path, obj):
  files.atomic_write(path, lambda f: json.dump(obj, f, indent=1), mode="w")


def run_key(ratio, run):
  return float(ratio), int(run)


def committed_runs(dest, experiment, md5, warn=logging.warning):
  """`{(ratio, run): {kind: {file: size}}}` of parts committed and on disk.

  A part counts only if the run's marker names the archive `md5` and every
  file the marker lists for it is still there with its size (a marker from
  before files were listed: the part's file or directory exists).
  """
  committed = {}
  for found in layout.list_runs(dest, experiment, warn=warn):
    marker = read_json(os.path.join(found.path, MARKER_FILENAME))
    if not isinstance(marker, dict) or marker.get("archive_md5") != md5:
      continue
    listed = marker.get("files")
    parts = {}
    for kind in marker.get("kinds", ()):
      sizes_by_name = listed.get(kind) if isinstance(listed, dict) else None
      if _part_on_disk(found.path, kind, sizes_by_name):
        parts[kind] = (sizes_by_name if isinstance(sizes_by_name, dict)
                       else {})
    committed[run_key(found.ratio, found.run)] = parts
  return committed


def _part_on_disk(run_path, kind, sizes_by_name):
  if isinstance(sizes_by_name, dict) and sizes_by_name:
    try:
      return all(os.path.isfile(os.path.join(run_path, name)) and
                 os.path.getsize(os.path.join(run_path, name)) == size
                 for name, size in sizes_by_name.items())
    except (OSError, TypeError, ValueError):
      return False
  if kind == "aux":
    return os.path.isfile(os.path.join(run_path, layout.AUX_FILENAME))
  if kind == "checkpoints":
    path = os.path.join(run_path, layout.CHECKPOINTS_DIRNAME)
    return os.path.isdir(path) and bool(os.listdir(path))
  return True


def manifest_runs(dest, experiment, md5):
  """The archive's runs `{(ratio, run): (ratio_name, kinds)}`, if known.

  A manifest from before kinds were recorded counts every kind as present.
  """
  manifest = read_json(os.path.join(dest, experiment, MANIFEST_FILENAME))
  if not isinstance(manifest, dict) or manifest.get("archive_md5") != md5:
    return None
  try:
    return {run_key(name, run): (name, frozenset(kinds[0]) if kinds else
                                 members.KINDS_FOR_ONLY["all"])
            for name, run, *kinds in manifest["runs"]}
  except (KeyError, TypeError, ValueError):
    logging.warning("Ignoring the malformed %s.", MANIFEST_FILENAME)
    return None


def write_manifest(dest, experiment, md5, in_archive):
  write_json(os.path.join(dest, experiment, MANIFEST_FILENAME),
             {"archive_md5": md5,
              "runs": sorted([name, run, sorted(kinds)]
                             for (_, run), (name, kinds) in
                             in_archive.items())})


def commit_run(staged, target, marker):
  """Moves a staged run into place, or its parts into an existing run."""
  if not os.path.exists(target):
    write_json(os.path.join(staged, MARKER_FILENAME), marker)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    os.replace(staged, target)
    return
  # Add the missing parts to a run committed earlier (or unpacked by hand).
  for entry in os.listdir(staged):
    old = os.path.join(target, entry)
    if os.path.isdir(old) and not os.path.islink(old):
      shutil.rmtree(old)
    elif os.path.lexists(old):
      os.unlink(old)
    os.replace(os.path.join(staged, entry), old)
  write_json(os.path.join(target, MARKER_FILENAME), marker)
