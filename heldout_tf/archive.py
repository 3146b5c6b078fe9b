"""Streams a released `<experiment>.tar.gz`: verify, extract selected, resume.

The archive is read once, sequentially. A reader thread fetches compressed
chunks (from GCS, HTTP(S) or a local file), feeds them to an MD5 and, when
asked, to a kept copy of the archive; the calling thread inflates them, walks
the tar stream and writes only the selected members into a staging directory
inside `dest`. Staged runs are moved into place only once the whole-stream MD5
matches.

A dropped connection is resumed with a byte-range request from the current
offset, keeping the MD5 and decompressor state. Each committed run directory
holds a small marker file naming the archive MD5 and the parts extracted, so a
re-run skips runs already committed; after a complete pass a manifest listing
every run of the archive and its parts lets a later run skip the download
altogether when everything requested is on disk. Runs that lack a requested
part are reported; a run with none of them gets no directory.
"""

import base64
import binascii
import contextlib
import dataclasses
import hashlib
import http.client
import json
import math
import os
import queue
import re
import shutil
import tarfile
import tempfile
import threading
import time
from typing import Optional
import urllib.error
import urllib.parse
import urllib.request
import zlib

try:
  import fcntl  # pylint: disable=g-import-not-at-top
except ImportError:  # Windows: no locks, so leftover staging is always stale.
  fcntl = None

from absl import logging
import tqdm

from heldout_tf import released
from heldout_tf import runs as runs_lib
from heldout_tf import sizes

# Parts of a run: aux_arrays.npz, checkpoints/, and anything else in the run.
KINDS_FOR_ONLY = {
    "all": frozenset({"aux", "checkpoints", "other"}),
    "aux": frozenset({"aux"}),
    "checkpoints": frozenset({"checkpoints"}),
}
ONLY_CHOICES = tuple(KINDS_FOR_ONLY)
# Parts every released run has; a run lacking a requested one is reported.
EXPECTED_PARTS = {"aux": runs_lib.AUX_FILENAME,
                  "checkpoints": runs_lib.CHECKPOINTS_DIRNAME + "/"}
MARKER_FILENAME = ".heldout_extracted.json"
MANIFEST_FILENAME = ".heldout_manifest.json"
STAGING_PREFIX = ".heldout-staging-"
_NEW_STAGING_PREFIX = ".heldout-new-"  # Staging until it is locked.
_NO_LOCKING = -1  # `_lock_dir`: file locks unsupported here.
PART_SUFFIX = ".part"

# Compressed bytes per read; GCS chunks are separate ranged GETs.
READ_BYTES = 4 << 20
GCS_CHUNK_BYTES = 16 << 20
QUEUE_CHUNKS = 8
# Decompressed bytes handed to tarfile per read.
TAR_BUFSIZE = 1 << 20
HTTP_TIMEOUT_S = 60


class ArchiveError(Exception):
  """The archive cannot be fetched, verified or extracted."""


class ChecksumError(ArchiveError):
  """The archive's MD5 is not the expected one."""


class UnsafeMemberError(ArchiveError):
  """A tar member would write outside the run layout or is not a plain file."""


class DownloadError(ArchiveError):
  """The archive could not be read from its source."""


class _TransientError(Exception):
  """A read failure worth retrying from the current offset."""


# ----------------------------------------------------------------- sources ---


class _LocalSource:
  """A local archive file."""

  def __init__(self, path):
    if not os.path.isfile(path):
      raise DownloadError(f"{path}: archive file not found")
    self.url = path
    self.size = os.path.getsize(path)
    self.advertised_md5 = None

  def chunks(self, offset, end=None):
    end = self.size if end is None else end
    with open(self.url, "rb") as f:
      f.seek(offset)
      while offset < end:
        chunk = f.read(min(READ_BYTES, end - offset))
        if not chunk:
          raise DownloadError(f"{self.url}: file shrank while reading "
                              f"(at byte {offset})")
        offset += len(chunk)
        yield chunk


def _goog_md5(value):
  """Hex MD5 from a base64 GCS md5Hash / `x-goog-hash: md5=` value, or None."""
  try:
    return binascii.hexlify(base64.b64decode(value)).decode()
  except (binascii.Error, TypeError, ValueError):
    return None


class _HttpSource:
  """An archive served over HTTP(S); resumes with `Range: bytes=<offset>-`."""

  def __init__(self, url):
    self.url = url
    self.size = None
    self.advertised_md5 = None
    try:
      with urllib.request.urlopen(
          urllib.request.Request(url, method="HEAD"),
          timeout=HTTP_TIMEOUT_S) as resp:
        length = resp.headers.get("Content-Length")
        self.size = int(length) if length is not None else None
        for part in resp.headers.get_all("x-goog-hash") or []:
          for item in part.split(","):
            key, _, value = item.strip().partition("=")
            if key == "md5":
              self.advertised_md5 = _goog_md5(value)
    except urllib.error.HTTPError as e:
      if e.code in (404, 403, 401, 410):
        raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from None
      # Otherwise (e.g. HEAD not allowed) learn the size from the GET.
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
      raise DownloadError(f"{url}: cannot connect ({e})") from None

  def chunks(self, offset):
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    try:
      resp = urllib.request.urlopen(
          urllib.request.Request(self.url, headers=headers),
          timeout=HTTP_TIMEOUT_S)
    except urllib.error.HTTPError as e:
      if e.code in (408, 429) or e.code >= 500:
        raise _TransientError(f"HTTP {e.code} {e.reason}") from None
      raise DownloadError(f"{self.url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
      raise _TransientError(str(e)) from None
    with resp:
      if offset and resp.status != 206:
        raise DownloadError(f"{self.url}: server ignored the byte-range "
                            f"request (HTTP {resp.status}); cannot resume")
      if self.size is None and not offset:
        length = resp.headers.get("Content-Length")
        self.size = int(length) if length is not None else None
      while True:
        try:
          chunk = resp.read(READ_BYTES)
        except (OSError, http.client.HTTPException) as e:
          raise _TransientError(str(e) or type(e).__name__) from None
        if not chunk:
          return
        yield chunk


class _GcsSource:
  """A `gs://bucket/object`, read anonymously with gcsfs in ranged chunks."""

  def __init__(self, url, endpoint_url=None):
    # The core filesystem: `gcsfs.GCSFileSystem` may be the experimental
    # zonal/HNS subclass, which probes each bucket over gRPC first (a minute
    # of timeouts against an emulator, and nothing gained for plain reads).
    try:
      from gcsfs import core as gcsfs_core  # pylint: disable=g-import-not-at-top
    except ImportError:
      raise DownloadError(f"{url}: gs:// needs gcsfs (pip install gcsfs); "
                          "use --source https") from None
    self.url = url
    self._path = url[len("gs://"):]
    self._fs = gcsfs_core.GCSFileSystem(token="anon",
                                        endpoint_url=endpoint_url)
    try:
      info = self._fs.info(self._path)
    except FileNotFoundError:
      raise DownloadError(f"{url}: object not found") from None
    except Exception as e:  # pylint: disable=broad-except
      raise DownloadError(f"{url}: cannot read object metadata ({e})") from e
    self.size = int(info["size"])
    self.advertised_md5 = _goog_md5(info.get("md5Hash"))

  def chunks(self, offset):
    while offset < self.size:
      end = min(self.size, offset + GCS_CHUNK_BYTES)
      try:
        chunk = self._fs.cat_file(self._path, start=offset, end=end)
      except (FileNotFoundError, PermissionError) as e:
        raise DownloadError(f"{self.url}: {e}") from None
      except Exception as e:  # pylint: disable=broad-except
        raise _TransientError(f"{type(e).__name__}: {e}") from None
      if not chunk:
        raise _TransientError(f"empty response at byte {offset}")
      offset += len(chunk)
      yield chunk


class _ResumedSource:
  """The bytes of a partial local download, then the rest from `remote`."""

  def __init__(self, part_path, remote):
    self.url = remote.url
    self.size = remote.size
    self.advertised_md5 = remote.advertised_md5
    self.part_size = os.path.getsize(part_path)
    self._local = _LocalSource(part_path)
    self._remote = remote

  def chunks(self, offset):
    if offset < self.part_size:
      yield from self._local.chunks(offset, self.part_size)
      offset = self.part_size
    if self.size is None or offset < self.size:
      # A complete part needs nothing more (a range past the end is a 416).
      yield from self._remote.chunks(offset)


def archive_url(experiment, source="gs", base_url=None):
  """Where `<experiment>.tar.gz` lives: gs://, http(s)://, file:// or a path."""
  if base_url is None:
    if source == "gs":
      base_url = released.GS_PREFIX
    elif source == "https":
      base_url = released.HTTPS_PREFIX
    else:
      raise ValueError(f"source must be 'gs' or 'https', got {source!r}")
  return base_url.rstrip("/") + f"/{experiment}.tar.gz"


def open_source(url, gcs_endpoint=None):
  """Opens `url` (gs://, http(s)://, file:// or a local path) for streaming."""
  scheme = urllib.parse.urlparse(url).scheme
  if scheme == "gs":
    return _GcsSource(url, gcs_endpoint or os.environ.get(
        "STORAGE_EMULATOR_HOST") or None)
  if scheme in ("http", "https"):
    return _HttpSource(url)
  if scheme == "file":
    return _LocalSource(urllib.request.url2pathname(
        urllib.parse.urlparse(url).path))
  return _LocalSource(url)


# ----------------------------------------------------------- reader thread ---


class _Reader(threading.Thread):
  """Reads the source sequentially, hashing (and keeping) bytes as they pass.

  Chunks go to a bounded queue; `None` marks the end, an exception instance a
  failure. Dropped connections are retried from the current offset.
  """

  def __init__(self, source, keep_file, keep_offset, retries, backoff_s, bar):
    super().__init__(daemon=True)
    self.source = source
    self.queue = queue.Queue(QUEUE_CHUNKS)
    self.md5 = hashlib.md5()
    self.offset = 0
    self.stop = threading.Event()
    self._keep_file = keep_file
    self._keep_offset = keep_offset
    self._retries = retries
    self._backoff_s = backoff_s
    self._bar = bar

  def run(self):
    try:
      self._read_all()
      self._put(None)
    except BaseException as e:  # pylint: disable=broad-except
      self._put(e)

  def _put(self, item):
    while not self.stop.is_set():
      try:
        self.queue.put(item, timeout=0.2)
        return
      except queue.Full:
        pass

  def _read_all(self):
    failures = 0
    while True:
      start = self.offset
      try:
        for chunk in self.source.chunks(self.offset):
          if self.stop.is_set():
            return
          self._consume(chunk)
        size = self.source.size
        if size is not None and self.offset < size:
          raise _TransientError(f"connection closed at byte {self.offset} "
                                f"of {size}")
        if size is not None and self.offset > size:
          raise DownloadError(f"{self.source.url}: got {self.offset} bytes, "
                              f"expected {size}")
        return
      except _TransientError as e:
        failures = 1 if self.offset > start else failures + 1
        if failures > self._retries:
          raise DownloadError(
              f"{self.source.url}: giving up at byte {self.offset} after "
              f"{self._retries} retries ({e})") from None
        delay = self._backoff_s * 2 ** (failures - 1)
        logging.warning("Read failed at byte %d (%s); retry %d/%d in %.1fs "
                        "with a range request.", self.offset, e, failures,
                        self._retries, delay)
        if self.stop.wait(delay):
          return

  def _consume(self, chunk):
    self.md5.update(chunk)
    end = self.offset + len(chunk)
    if self._keep_file is not None and end > self._keep_offset:
      self._keep_file.write(chunk[self._keep_offset - self.offset:])
      self._keep_offset = end
    self.offset = end
    self._bar.update(len(chunk))
    self._put(chunk)


class _Inflater:
  """A read-only file over the gunzipped chunks of a `_Reader`."""

  def __init__(self, reader):
    self._reader = reader
    self._inflate = zlib.decompressobj(wbits=31)
    self._tail = b""
    self._done = False  # The reader's end-of-stream was seen: nothing more.

  def _next_chunk(self):
    item = self._reader.queue.get()
    if isinstance(item, BaseException):
      raise item
    return item

  def read(self, size=-1):
    if size is None or size < 0:
      size = TAR_BUFSIZE
    while True:
      if not self._tail:
        if self._done:
          return b""
        chunk = self._next_chunk()
        if chunk is None:
          if not self._inflate.eof:
            raise ArchiveError("archive is truncated (the gzip stream ends "
                               f"early, at byte {self._reader.offset})")
          self._done = True
          return b""
        self._tail = chunk
      if self._inflate.eof:
        # After a complete gzip member: zero padding or another member.
        if not self._tail.strip(b"\0"):
          self._tail = b""
          continue
        self._inflate = zlib.decompressobj(wbits=31)
      try:
        out = self._inflate.decompress(self._tail, size)
      except zlib.error as e:
        raise ArchiveError(
            f"archive is corrupt near compressed byte {self._reader.offset} "
            f"({e}); the download is damaged or not a .tar.gz") from None
      self._tail = (self._inflate.unused_data if self._inflate.eof else
                    self._inflate.unconsumed_tail)
      if out:
        return out

  def drain(self):
    while self.read(TAR_BUFSIZE):
      pass


# ------------------------------------------------------------- tar members ---


def _member_parts(member):
  """Checks a tar member is safe; returns its normalized path components."""
  name = member.name
  if member.issym():
    raise UnsafeMemberError(f"refusing symlink member {name!r} -> "
                            f"{member.linkname!r}")
  if member.islnk():
    raise UnsafeMemberError(f"refusing hard link member {name!r} -> "
                            f"{member.linkname!r}")
  if member.ischr() or member.isblk():
    raise UnsafeMemberError(f"refusing device member {name!r}")
  if member.isfifo():
    raise UnsafeMemberError(f"refusing FIFO member {name!r}")
  if not (member.isreg() or member.isdir()):
    raise UnsafeMemberError(f"refusing member {name!r} of tar type "
                            f"{member.type!r}")
  if not name or name.startswith(("/", "\\")) or (
      len(name) > 1 and name[1] == ":"):
    raise UnsafeMemberError(f"refusing member with absolute path {name!r}")
  parts = name.replace("\\", "/").split("/")
  if ".." in parts:
    raise UnsafeMemberError(f"refusing member with '..' in its path {name!r}")
  return [p for p in parts if p not in ("", ".")]


def _run_of(parts, experiment):
  """`(ratio_name, run_id)` when parts are `<experiment>/<ratio>/<run>/...`."""
  if (len(parts) < 3 or parts[0] != experiment or
      not re.fullmatch(r"[0-9]+", parts[2])):
    return None
  try:
    ratio = float(parts[1])
  except ValueError:
    return None
  if not math.isfinite(ratio):  # 'nan' would not even equal itself.
    return None
  return parts[1], int(parts[2])


def _kind_of(sub_parts):
  if sub_parts == [runs_lib.AUX_FILENAME]:
    return "aux"
  if sub_parts[0] == runs_lib.CHECKPOINTS_DIRNAME:
    return "checkpoints"
  return "other"


def _run_key(ratio, run):
  return float(ratio), int(run)


# --------------------------------------------------------------- selection ---


@dataclasses.dataclass(frozen=True)
class _Selection:
  """The runs to extract and the parts (kinds) of each run to write."""
  ratios: Optional[frozenset]  # None: all.
  runs: Optional[frozenset]  # None: all.
  kinds: frozenset

  @classmethod
  def parse(cls, only, ratios, runs):
    if only not in KINDS_FOR_ONLY:
      raise ValueError(f"only must be one of {ONLY_CHOICES}, got {only!r}")
    ratios = None if ratios is None else frozenset(float(r) for r in ratios)
    runs = None if runs is None else frozenset(int(r) for r in runs)
    if ratios is not None and not ratios:
      raise ValueError("ratios is empty; pass None for all ratios")
    if runs is not None and not runs:
      raise ValueError("runs is empty; pass None for all runs")
    return cls(ratios, runs, KINDS_FOR_ONLY[only])

  def wants(self, key):
    """Whether the run `(ratio, run)` is selected."""
    return ((self.ratios is None or key[0] in self.ratios) and
            (self.runs is None or key[1] in self.runs))

  def pending(self, present, have):
    """Selected kinds the archive's run has and `dest` does not yet."""
    return (self.kinds & present) - have

  def missing(self, present):
    """Selected parts every run should have that the archive's run lacks."""
    return [kind for kind in EXPECTED_PARTS
            if kind in self.kinds and kind not in present]


def _expected_md5(experiment, md5):
  md5 = (md5 or released.get(experiment).md5).lower()
  if len(md5) != 32 or any(c not in "0123456789abcdef" for c in md5):
    raise ValueError(f"md5 must be 32 hex digits, got {md5!r}")
  return md5


# --------------------------------------------------------- commit records ---


def _read_json(path):
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def _write_json(path, obj):
  runs_lib.atomic_write(path, lambda f: json.dump(obj, f, indent=1), mode="w")


def _committed_runs(dest, experiment, md5):
  """`{(ratio, run): kinds}` of runs committed from the archive with `md5`."""
  committed = {}
  for ratio_name, run, path in runs_lib.list_runs(dest, experiment):
    marker = _read_json(os.path.join(path, MARKER_FILENAME))
    if isinstance(marker, dict) and marker.get("archive_md5") == md5:
      committed[_run_key(ratio_name, run)] = frozenset(marker.get("kinds", ()))
  return committed


def _manifest_runs(dest, experiment, md5):
  """The archive's runs `{(ratio, run): (ratio_name, kinds)}`, if known.

  A manifest from before kinds were recorded counts every kind as present.
  """
  manifest = _read_json(os.path.join(dest, experiment, MANIFEST_FILENAME))
  if not isinstance(manifest, dict) or manifest.get("archive_md5") != md5:
    return None
  try:
    return {_run_key(name, run): (name, frozenset(kinds[0]) if kinds else
                                  KINDS_FOR_ONLY["all"])
            for name, run, *kinds in manifest["runs"]}
  except (KeyError, TypeError, ValueError):
    logging.warning("Ignoring the malformed %s.", MANIFEST_FILENAME)
    return None


def _write_manifest(dest, experiment, md5, in_archive):
  _write_json(os.path.join(dest, experiment, MANIFEST_FILENAME),
              {"archive_md5": md5,
               "runs": sorted([name, run, sorted(kinds)]
                              for (_, run), (name, kinds) in
                              in_archive.items())})


# ------------------------------------------------------------------- fetch ---


@dataclasses.dataclass
class FetchResult:
  """What `fetch` did."""
  experiment: str
  dest: str
  md5: str
  downloaded: bool = False
  archive_bytes: int = 0
  committed: list = dataclasses.field(default_factory=list)
  already_committed: list = dataclasses.field(default_factory=list)
  # `(ratio_name, run, [kinds])`: selected runs lacking requested parts in the
  # archive. A run with none of the requested parts gets no directory.
  incomplete_runs: list = dataclasses.field(default_factory=list)
  files: int = 0
  bytes_written: int = 0
  ignored_members: list = dataclasses.field(default_factory=list)
  missing_ratios: list = dataclasses.field(default_factory=list)
  missing_runs: list = dataclasses.field(default_factory=list)
  kept_archive: str = None
  seconds: float = 0.0

  def summary(self) -> str:
    lines = []
    if self.downloaded:
      rate = self.archive_bytes / max(self.seconds, 1e-9)
      lines.append(f"Streamed {sizes.format_bytes(self.archive_bytes)} in "
                   f"{self.seconds:.1f} s ({sizes.format_bytes(rate)}/s); "
                   f"MD5 {self.md5} verified.")
    else:
      lines.append("Nothing to download: every requested run is already "
                   f"extracted in {self.dest}.")
    lines.append(f"Committed {len(self.committed)} run(s) ({self.files} "
                 f"files, {sizes.format_bytes(self.bytes_written)}) under "
                 f"{os.path.join(self.dest, self.experiment)}; "
                 f"{len(self.already_committed)} already there.")
    lines.extend(_listed(f"{ratio}/{run}" for ratio, run in self.committed))
    if self.incomplete_runs:
      lines.append(
          f"Warning: {len(self.incomplete_runs)} run(s) lack requested parts "
          "in the archive (a run with none of them gets no directory):")
      lines.extend(_listed(
          f"{ratio}/{run}: no {', '.join(EXPECTED_PARTS[k] for k in kinds)}"
          for ratio, run, kinds in self.incomplete_runs))
    if self.missing_ratios:
      lines.append(f"Not in the archive: ratio(s) {self.missing_ratios}")
    if self.missing_runs:
      lines.append(f"Not in the archive: run id(s) {self.missing_runs}")
    if self.ignored_members:
      lines.append(f"Ignored {len(self.ignored_members)} member(s) outside "
                   f"<experiment>/<ratio>/<run>/, e.g. "
                   f"{self.ignored_members[0]!r}")
    if self.kept_archive:
      lines.append(f"Kept the verified archive at {self.kept_archive}")
    return "\n".join(lines)


def _listed(items, limit=20):
  """Indented lines for `items`, the first `limit` of them."""
  items = list(items)
  lines = [f"  {item}" for item in items[:limit]]
  if len(items) > limit:
    lines.append(f"  ... and {len(items) - limit} more")
  return lines


def fetch(experiment, dest, *, source="gs", base_url=None, md5=None,
          only="all", ratios=None, runs=None, keep_archive=None,
          gcs_endpoint=None, retries=5, backoff_s=1.0, progress=True):
  """Streams `<experiment>.tar.gz`, verifies its MD5, extracts selected runs.

  Args:
    experiment: released experiment name (the archive's top directory).
    dest: root directory; runs land in `<dest>/<experiment>/<ratio>/<run>/`.
    source: 'gs' or 'https'; picks the default `base_url`.
    base_url: directory holding the archive: gs://bucket/prefix,
      http(s)://host/prefix, file:///dir or a local directory.
    md5: expected hex MD5 of the archive; default from `heldout_tf.released`.
    only: 'all', 'aux' (aux_arrays.npz) or 'checkpoints' (checkpoints/).
    ratios: subset ratios to extract (floats or strings); None for all.
    runs: run ids to extract; None for all.
    keep_archive: also keep the verified archive at this path (or in this
      directory); a partial `<path>.part` from an earlier attempt is resumed.
    gcs_endpoint: GCS endpoint (emulator) URL; default STORAGE_EMULATOR_HOST
      or the real service.
    retries: retries per stall of a dropped connection.
    backoff_s: first retry delay; doubles on each consecutive retry.
    progress: show a progress bar.

  Returns:
    A FetchResult. Selected runs that lack a requested part in the archive
    are listed in `incomplete_runs`; a run with none of the requested parts
    gets no directory.

  Raises:
    ChecksumError: the MD5 does not match; `dest` is left as it was.
    UnsafeMemberError: a member is a link/device or escapes the layout.
    DownloadError, ArchiveError: the archive cannot be read or decoded.
  """
  selection = _Selection.parse(only, ratios, runs)
  md5 = _expected_md5(experiment, md5)
  result = FetchResult(experiment=experiment, dest=dest, md5=md5)
  committed = _committed_runs(dest, experiment, md5)
  if _all_on_disk(dest, experiment, md5, selection, committed, result):
    return result

  keep_path = _keep_path(keep_archive, experiment)
  src, reused = _open_archive(experiment, source, base_url, md5, keep_path,
                              gcs_endpoint)
  if reused:
    keep_path = None  # Read from, not written to.
    result.kept_archive = reused
  with _staging_dir(dest, experiment) as staging:
    with _discarding_bad_kept_bytes(md5, reused, keep_path):
      in_archive, actual = _stream(
          src, keep_path, staging, experiment, selection, committed, result,
          retries=retries, backoff_s=backoff_s, progress=progress)
      _check_md5(actual, md5, src.url, dest, reused)
    if keep_path:
      os.replace(keep_path + PART_SUFFIX, keep_path)
      result.kept_archive = keep_path
    _commit(staging, dest, experiment, md5, in_archive, selection, committed,
            result)
    _write_manifest(dest, experiment, md5, in_archive)
  _note_absent(result, selection, in_archive)
  return result


def _all_on_disk(dest, experiment, md5, selection, committed, result):
  """Fills `result` and returns True if no download is needed.

  Known from an earlier pass's manifest of the archive's runs, or when
  explicit ratios and run ids are all committed.
  """
  in_archive = _manifest_runs(dest, experiment, md5)
  if in_archive is None:
    if selection.ratios is None or selection.runs is None:
      return False
    every_kind = (None, KINDS_FOR_ONLY["all"])  # Kinds unknown: assume all.
    in_archive = {(r, n): every_kind
                  for r in selection.ratios for n in selection.runs}
  requested = {k: v for k, v in in_archive.items() if selection.wants(k)}
  if not requested:
    raise ArchiveError(
        f"no run of {experiment} matches ratios="
        f"{sorted(selection.ratios or [])} runs="
        f"{sorted(selection.runs or [])}; the archive has ratios "
        f"{sorted({r for r, _ in in_archive})}")
  if any(selection.pending(present, committed.get(key, frozenset()))
         for key, (_, present) in requested.items()):
    return False
  for key in sorted(requested):
    ratio_name, present = requested[key]
    _note_missing_parts(result, selection, ratio_name, key[1], present)
    if selection.kinds & present & committed.get(key, frozenset()):
      result.already_committed.append(key)
  _note_absent(result, selection, in_archive)
  return True


def _note_missing_parts(result, selection, ratio_name, run, present):
  """Records a selected run that lacks requested parts in the archive."""
  missing = selection.missing(present)
  if missing:
    result.incomplete_runs.append((ratio_name, run, missing))


def _note_absent(result, selection, in_archive):
  """Records selected ratios and run ids the archive does not have."""
  result.missing_ratios = sorted(
      (selection.ratios or set()) - {r for r, _ in in_archive})
  result.missing_runs = sorted(
      (selection.runs or set()) - {n for _, n in in_archive})


def _keep_path(keep_archive, experiment):
  if keep_archive and os.path.isdir(keep_archive):
    return os.path.join(keep_archive, f"{experiment}.tar.gz")
  return keep_archive


def _open_archive(experiment, source, base_url, md5, keep_path, gcs_endpoint):
  """The archive to read: a complete kept copy, else the remote one.

  Returns `(source, path of the kept copy or None)`.
  """
  url = archive_url(experiment, source, base_url)
  if keep_path and os.path.isfile(keep_path):
    logging.info("Reading the kept archive %s instead of %s.", keep_path, url)
    src = _LocalSource(keep_path)
    return src, src.url
  src = open_source(url, gcs_endpoint)
  if src.advertised_md5 and src.advertised_md5 != md5:
    raise ChecksumError(f"{url}: the server reports MD5 {src.advertised_md5}, "
                        f"expected {md5}; not downloading. Check --md5 / "
                        "--experiment.")
  return src, None


@contextlib.contextmanager
def _staging_dir(dest, experiment):
  """A fresh staging directory in `dest`, locked while in use, then removed.

  On an error, a `dest` created here is removed again if it is empty.
  """
  created_dest = not os.path.isdir(dest)
  os.makedirs(dest, exist_ok=True)
  _remove_stale_staging(dest, experiment)
  # Locked under a name the clean-up ignores, then renamed (the lock stays
  # with the directory): no other download can see it unlocked.
  fresh = tempfile.mkdtemp(prefix=f"{_NEW_STAGING_PREFIX}{experiment}-",
                           dir=dest)
  lock = _lock_dir(fresh)
  staging = os.path.join(dest, STAGING_PREFIX + os.path.basename(fresh)[
      len(_NEW_STAGING_PREFIX):])
  os.rename(fresh, staging)
  try:
    yield staging
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)  # Before removing `dest`.
    if created_dest:
      try:
        os.rmdir(dest)
      except OSError:
        pass
    raise
  finally:
    shutil.rmtree(staging, ignore_errors=True)
    _unlock(lock)


def _lock_dir(path):
  """Takes an exclusive lock on directory `path` without waiting.

  Returns the fd holding it; None if another process holds it;
  `_NO_LOCKING` where locks are unsupported (Windows, some network file
  systems), so staging there is never taken for in use.
  """
  if fcntl is None:
    return _NO_LOCKING
  fd = os.open(path, os.O_RDONLY)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    os.close(fd)
    return None
  except OSError:
    os.close(fd)
    return _NO_LOCKING
  return fd


def _unlock(lock):
  if lock not in (None, _NO_LOCKING):
    os.close(lock)


def _remove_stale_staging(dest, experiment):
  """Removes staging a crashed run left (not staging a live run is using)."""
  for name in os.listdir(dest):
    path = os.path.join(dest, name)
    if (not name.startswith(f"{STAGING_PREFIX}{experiment}-") or
        not os.path.isdir(path)):
      continue
    try:
      lock = _lock_dir(path)
    except OSError:  # Gone meanwhile.
      continue
    if lock is None:
      logging.info("Leaving %s: another download is using it.", path)
      continue
    try:
      shutil.rmtree(path, ignore_errors=True)
    finally:
      _unlock(lock)


def _resume_part(part, src):
  """`(source, offset)`: `src` continued after a partial download `part`."""
  if (os.path.isfile(part) and src.size is not None and
      os.path.getsize(part) <= src.size):
    src = _ResumedSource(part, src)
    logging.info("Resuming %s from byte %d.", part, src.part_size)
    return src, src.part_size
  return src, 0


def _stream(src, keep_path, staging, experiment, selection, committed, result,
            *, retries, backoff_s, progress):
  """Reads `src` once, writing the selected members under `staging`.

  With `keep_path`, the bytes also go to `<keep_path>.part` (resumed if it
  holds an earlier attempt's first bytes).

  Returns:
    `{(ratio, run): (ratio_name, kinds)}` for every run in the archive, and
    the hex MD5 of the whole stream.
  """
  keep_file, keep_offset = None, 0
  if keep_path:
    part = keep_path + PART_SUFFIX
    src, keep_offset = _resume_part(part, src)
    keep_file = open(part, "ab" if keep_offset else "wb")
  try:
    start = time.time()
    with tqdm.tqdm(total=src.size, unit="B", unit_scale=True,
                   unit_divisor=1024, desc=f"{experiment}.tar.gz",
                   disable=not progress, smoothing=0.05) as bar:
      reader = _Reader(src, keep_file, keep_offset, retries, backoff_s, bar)
      reader.start()
      try:
        in_archive = _extract(_Inflater(reader), staging, experiment,
                              selection, committed, result)
      finally:
        reader.stop.set()
        reader.join(timeout=HTTP_TIMEOUT_S)
    result.downloaded = True
    result.archive_bytes = reader.offset
    result.seconds = time.time() - start
    if keep_file is not None:
      keep_file.flush()
      os.fsync(keep_file.fileno())
  finally:
    if keep_file is not None:
      keep_file.close()
  return in_archive, reader.md5.hexdigest()


def _check_md5(actual, md5, url, dest, reused):
  if actual == md5:
    return
  if reused:
    raise _set_aside_kept(reused, actual, md5)
  raise ChecksumError(
      f"MD5 mismatch for {url}: got {actual}, expected {md5}; nothing "
      f"was written to {dest}. Re-run to download again.")


@contextlib.contextmanager
def _discarding_bad_kept_bytes(md5, reused, keep_path):
  """On an ArchiveError, sets aside a bad kept archive, drops a bad `.part`."""
  try:
    yield
  except ArchiveError as e:
    if keep_path and not isinstance(e, DownloadError):
      # The kept bytes are damaged (or the archive is bad): don't resume them.
      part = keep_path + PART_SUFFIX
      if os.path.exists(part):
        os.unlink(part)
    if reused and type(e) in (ArchiveError, UnsafeMemberError):
      # Undecodable: if the kept file is not the archive, set it aside.
      actual = _file_md5(reused)
      if actual is not None and actual != md5:
        raise _set_aside_kept(reused, actual, md5) from e
    raise


def _file_md5(path):
  """Hex MD5 of a local file, or None if it cannot be read."""
  digest = hashlib.md5()
  try:
    for chunk in _LocalSource(path).chunks(0):
      digest.update(chunk)
  except (OSError, DownloadError):
    return None
  return digest.hexdigest()


def _set_aside_kept(path, actual, md5):
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


def _extract(inflater, staging, experiment, selection, committed, result):
  """Walks the tar stream, writing selected members under `staging`.

  Returns `{(ratio, run): (ratio_name, kinds)}` for every run in the archive.
  """
  in_archive = {}
  try:
    tar = tarfile.open(fileobj=inflater, mode="r|", bufsize=TAR_BUFSIZE)
    while True:
      member = tar.next()
      if member is None:
        break
      tar.members.clear()  # Streaming: don't accumulate TarInfo objects.
      parts = _member_parts(member)
      run = _run_of(parts, experiment)
      if run is None:
        if member.isreg():
          result.ignored_members.append(member.name)
        continue
      key = _run_key(*run)
      _, present = in_archive.setdefault(key, (run[0], set()))
      if not member.isreg() or len(parts) < 4:
        continue
      kind = _kind_of(parts[3:])
      present.add(kind)
      if (not selection.wants(key) or kind not in selection.kinds or
          kind in committed.get(key, ())):
        continue
      path = os.path.join(staging, *parts)
      os.makedirs(os.path.dirname(path), exist_ok=True)
      with open(path, "wb") as out:
        shutil.copyfileobj(tar.extractfile(member), out, TAR_BUFSIZE)
        out.flush()
        os.fsync(out.fileno())
      if os.path.getsize(path) != member.size:
        raise ArchiveError(f"member {member.name!r} is truncated")
      result.files += 1
      result.bytes_written += member.size
    inflater.drain()
  except tarfile.TarError as e:
    raise ArchiveError(f"archive is not a valid tar stream: {e}") from None
  return in_archive


def _commit(staging, dest, experiment, md5, in_archive, selection, committed,
            result):
  """Moves each staged run into `dest` and records it as committed."""
  for key in sorted(in_archive):
    if not selection.wants(key):
      continue
    ratio_name, present = in_archive[key]
    _note_missing_parts(result, selection, ratio_name, key[1], present)
    have = committed.get(key, frozenset())
    if not selection.pending(present, have):
      if selection.kinds & present & have:
        result.already_committed.append(key)
      continue  # Nothing to write: no directory for a run lacking it all.
    run = key[1]
    staged = os.path.join(staging, experiment, ratio_name, str(run))
    target = os.path.join(dest, experiment, ratio_name, str(run))
    marker = {"archive_md5": md5,
              "kinds": sorted(have | (selection.kinds & present))}
    if not os.path.exists(target):
      _write_json(os.path.join(staged, MARKER_FILENAME), marker)
      os.makedirs(os.path.dirname(target), exist_ok=True)
      os.replace(staged, target)
    else:
      # Add the missing parts to a run committed earlier (or unpacked by hand).
      for entry in os.listdir(staged):
        old = os.path.join(target, entry)
        if os.path.isdir(old) and not os.path.islink(old):
          shutil.rmtree(old)
        elif os.path.lexists(old):
          os.unlink(old)
        os.replace(os.path.join(staged, entry), old)
      _write_json(os.path.join(target, MARKER_FILENAME), marker)
    result.committed.append((ratio_name, run))


def verify_file(path, md5, progress=True):
  """Checks a local archive's MD5; returns it or raises ChecksumError."""
  src = _LocalSource(path)
  digest = hashlib.md5()
  with tqdm.tqdm(total=src.size, unit="B", unit_scale=True, unit_divisor=1024,
                 desc=os.path.basename(path), disable=not progress) as bar:
    for chunk in src.chunks(0):
      digest.update(chunk)
      bar.update(len(chunk))
  actual = digest.hexdigest()
  if actual != md5.lower():
    raise ChecksumError(f"{path}: MD5 mismatch: got {actual}, expected {md5}")
  return actual
