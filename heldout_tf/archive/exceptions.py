"""The errors of `heldout_tf.archive`: all `errors.HeldoutError`s."""

from heldout_tf.core import errors
from heldout_tf.collection import layout


class ArchiveError(errors.HeldoutError):
  """The archive cannot be fetched, verified or extracted."""


class ChecksumError(ArchiveError):
  """The archive's MD5 is not the expected one."""


class UnsafeMemberError(ArchiveError):
  """A tar member would write outside the run layout or is not a plain file."""


class MemberTooLargeError(ArchiveError):
  """A selected member is larger than the limit for its kind."""


class DiskSpaceError(ArchiveError):
  """The staging directory's file system cannot hold a selected member."""


class AmbiguousMemberError(ArchiveError, layout.LayoutError):
  """Two directory names in the archive mean the same ratio or run."""


class DownloadError(ArchiveError):
  """The archive could not be read from its source."""


class DestinationBusyError(ArchiveError):
  """Another download is extracting into the same destination."""


class _TransientError(Exception):
  """A read failure worth retrying from the current offset (internal)."""
