"""Extracting the selected members of a released archive's tar stream into
staging, and committing the staged runs into `dest`."""

import os
import shutil
import tarfile

from absl import logging

from heldout_tf.archive import members
from heldout_tf.archive import staging as staging_lib
from heldout_tf.archive import stream
from heldout_tf.archive.exceptions import ArchiveError
from heldout_tf.core import errors


class Extraction:
  """Walks the tar stream, writing selected members under `staging`.

  After `run`: `in_archive` is `{(ratio, run): (ratio_name, kinds)}` for
  every run in the archive and `written` `{(ratio, run): {kind: {file:
  size}}}` for the files staged.
  """

  def __init__(self, staging, experiment, selection, committed, limits,
               result):
    self.staging = staging
    self.experiment = experiment
    self.selection = selection
    self.committed = committed
    self.limits = limits
    self.result = result
    self.in_archive = {}
    self.written = {}
    self._names = members.LayoutNames(experiment, selection, self._skip)

  def _skip(self, message):
    logging.warning("%s", message)
    self.result.skipped_names.append(message)

  def run(self, inflater):
    try:
      tar = tarfile.open(fileobj=inflater, mode="r|",
                         bufsize=stream.TAR_BUFSIZE)
      while True:
        member = tar.next()
        if member is None:
          break
        tar.members.clear()  # Streaming: don't accumulate TarInfo objects.
        self._member(tar, member)
      inflater.drain()
    except tarfile.TarError as e:
      raise ArchiveError(f"archive is not a valid tar stream: {e}") from None

  def _member(self, tar, member):
    parts = members.member_parts(member)
    run = self._names.run_of(parts, member.isdir())
    if run is None:
      if member.isreg():
        self.result.ignored_members.append(member.name)
      return
    ratio_name, ratio, run_id = run
    key = staging_lib.run_key(ratio, run_id)
    _, present = self.in_archive.setdefault(key, (ratio_name, set()))
    if not member.isreg() or len(parts) < 4:
      return
    sub_parts = parts[3:]
    kind = members.kind_of(sub_parts)
    present.add(kind)
    if (not self.selection.wants(key) or kind not in self.selection.kinds or
        kind in self.committed.get(key, {})):
      return
    members.check_size(member, sub_parts, self.limits)
    path = os.path.join(self.staging, *parts)
    staging_lib.check_free_space(
        self.staging, os.path.join(os.path.dirname(self.staging), *parts),
        member.size)
    with errors.user_path(path, "write"):
      os.makedirs(os.path.dirname(path), exist_ok=True)
      with open(path, "wb") as out:
        shutil.copyfileobj(tar.extractfile(member), out, stream.TAR_BUFSIZE)
        out.flush()
        os.fsync(out.fileno())
      if os.path.getsize(path) != member.size:
        raise ArchiveError(f"member {member.name!r} is truncated")
    files = self.written.setdefault(key, {}).setdefault(kind, {})
    files["/".join(sub_parts)] = member.size
    self.result.files += 1
    self.result.bytes_written += member.size
