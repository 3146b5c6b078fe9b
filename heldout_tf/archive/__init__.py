"""Streams a released `<experiment>.tar.gz`: verify, extract selected, resume.

The archive is read once, sequentially. A reader thread fetches compressed
chunks (from GCS, HTTP(S) or a local file), feeds them to an MD5 and, when
asked, to a kept copy of the archive; the calling thread inflates them, walks
the tar stream and writes only the selected members into a staging directory
inside `dest`. Staged runs are moved into place only once the whole-stream MD5
matches.

Modules, by concern:
  transport  sources (local file, HTTP(S), gs://), connection time-outs
  stream     the reader thread (MD5, kept copy, resume) and the inflater
  members    tar member safety, layout names, parts and size limits
  staging    the `dest` lock, staging, commit, markers and manifest
  extraction the selected members of the tar stream, written into staging
  checksums  the expected MD5, checking it, setting bad kept bytes aside
  workflow   the workflow (`fetch`, `FetchResult`)
  exceptions `ArchiveError` and its kinds
  (small released-layout archives for tests: `heldout_tf.synthetic`)

Every error is an `ArchiveError` (a `heldout_tf.core.errors.HeldoutError`), or an
`errors.UsageError` / `errors.PathError` for a bad argument or `dest`.
"""

from heldout_tf.archive import members
from heldout_tf.archive import staging
from heldout_tf.archive import stream
from heldout_tf.archive import transport
from heldout_tf.archive import workflow
from heldout_tf.archive.exceptions import AmbiguousMemberError
from heldout_tf.archive.exceptions import ArchiveError
from heldout_tf.archive.exceptions import ChecksumError
from heldout_tf.archive.exceptions import DestinationBusyError
from heldout_tf.archive.exceptions import DiskSpaceError
from heldout_tf.archive.exceptions import DownloadError
from heldout_tf.archive.exceptions import MemberTooLargeError
from heldout_tf.archive.exceptions import UnsafeMemberError
from heldout_tf.archive.workflow import FetchResult
from heldout_tf.archive.workflow import fetch
from heldout_tf.archive.checksums import PART_SUFFIX
from heldout_tf.archive.checksums import verify_file
from heldout_tf.archive.members import DEFAULT_SIZE_LIMITS
from heldout_tf.archive.members import EXPECTED_PARTS
from heldout_tf.archive.members import KINDS_FOR_ONLY
from heldout_tf.archive.members import ONLY_CHOICES
from heldout_tf.archive.members import parse_size_limits
from heldout_tf.archive.members import SIZE_KINDS
from heldout_tf.archive.staging import MANIFEST_FILENAME
from heldout_tf.archive.staging import MARKER_FILENAME
from heldout_tf.archive.staging import STAGING_PREFIX
from heldout_tf.archive.transport import archive_url
from heldout_tf.archive.transport import open_source
