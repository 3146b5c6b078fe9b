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
every run of the archive lets a later run skip the download altogether when
everything requested is on disk.
"""

import base64
import binascii
import dataclasses
import hashlib
import http.client
import json
import os
import queue
import re
import shutil
import tarfile
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib

from absl import logging
import tqdm

from heldout_tf import released
from heldout_tf import runs as runs_lib

# Parts of a run: aux_arrays.npz, checkpoints/, and anything else in the run.
KINDS_FOR_ONLY = {
    "all": frozenset({"aux", "checkpoints", "other"}),
    "aux": frozenset({"aux"}),
    "checkpoints": frozenset({"checkpoints"}),
}
ONLY_CHOICES = tuple(KINDS_FOR_ONLY)
MARKER_FILENAME = ".heldout_extracted.json"
MANIFEST_FILENAME = ".heldout_manifest.json"
STAGING_PREFIX = ".heldout-staging-"
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
    float(parts[1])
  except ValueError:
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
    if marker and marker.get("archive_md5") == md5:
      committed[_run_key(ratio_name, run)] = frozenset(marker.get("kinds", ()))
  return committed


def _manifest_runs(dest, experiment, md5):
  """`{(ratio, run): ratio_name}` of every run in the archive, if known."""
  manifest = _read_json(os.path.join(dest, experiment, MANIFEST_FILENAME))
  if not manifest or manifest.get("archive_md5") != md5:
    return None
  return {_run_key(r, n): r for r, n in manifest["runs"]}


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
      lines.append(f"Streamed {_human(self.archive_bytes)} in "
                   f"{self.seconds:.1f} s ({_human(rate)}/s); MD5 {self.md5} "
                   "verified.")
    else:
      lines.append("Nothing to download: every requested run is already "
                   f"extracted in {self.dest}.")
    lines.append(f"Committed {len(self.committed)} run(s) ({self.files} "
                 f"files, {_human(self.bytes_written)}) under "
                 f"{os.path.join(self.dest, self.experiment)}; "
                 f"{len(self.already_committed)} already there.")
    for ratio, run in self.committed[:20]:
      lines.append(f"  {ratio}/{run}")
    if len(self.committed) > 20:
      lines.append(f"  ... and {len(self.committed) - 20} more")
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


def _requested_runs(dest, experiment, md5, wanted_ratios, wanted_runs,
                    selected):
  """The `(ratio, run)` keys asked for, if known without reading the archive."""
  known = _manifest_runs(dest, experiment, md5)
  if known is not None:
    requested = {k for k in known if selected(k)}
    if not requested:
      raise ArchiveError(
          f"no run of {experiment} matches ratios={sorted(wanted_ratios or [])}"
          f" runs={sorted(wanted_runs or [])}; the archive has ratios "
          f"{sorted({r for r, _ in known})}")
    return requested
  if wanted_ratios is not None and wanted_runs is not None:
    return {(r, n) for r in wanted_ratios for n in wanted_runs}
  return None


def _human(n):
  return f"{n:.0f} B" if n < 1000 else tqdm.tqdm.format_sizeof(n, "B")


def _keep_path(keep_archive, experiment):
  if keep_archive and os.path.isdir(keep_archive):
    return os.path.join(keep_archive, f"{experiment}.tar.gz")
  return keep_archive


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
    A FetchResult.

  Raises:
    ChecksumError: the MD5 does not match; `dest` is left as it was.
    UnsafeMemberError: a member is a link/device or escapes the layout.
    DownloadError, ArchiveError: the archive cannot be read or decoded.
  """
  if only not in KINDS_FOR_ONLY:
    raise ValueError(f"only must be one of {ONLY_CHOICES}, got {only!r}")
  md5 = (md5 or released.get(experiment).md5).lower()
  if len(md5) != 32 or any(c not in "0123456789abcdef" for c in md5):
    raise ValueError(f"md5 must be 32 hex digits, got {md5!r}")
  wanted_ratios = None if ratios is None else {float(r) for r in ratios}
  wanted_runs = None if runs is None else {int(r) for r in runs}
  if wanted_ratios is not None and not wanted_ratios:
    raise ValueError("ratios is empty; pass None for all ratios")
  if wanted_runs is not None and not wanted_runs:
    raise ValueError("runs is empty; pass None for all runs")
  needed = KINDS_FOR_ONLY[only]
  result = FetchResult(experiment=experiment, dest=dest, md5=md5)

  def selected(key):
    return ((wanted_ratios is None or key[0] in wanted_ratios) and
            (wanted_runs is None or key[1] in wanted_runs))

  committed = _committed_runs(dest, experiment, md5)
  requested = _requested_runs(dest, experiment, md5, wanted_ratios,
                              wanted_runs, selected)
  if requested is not None and all(
      needed <= committed.get(k, frozenset()) for k in requested):
    result.already_committed = sorted(requested)
    return result

  keep_path = _keep_path(keep_archive, experiment)
  url = archive_url(experiment, source, base_url)
  reused = None  # An archive kept by an earlier run, read instead of `url`.
  if keep_path and os.path.isfile(keep_path):
    logging.info("Reading the kept archive %s instead of %s.", keep_path, url)
    src, keep_path = _LocalSource(keep_path), None
    reused = result.kept_archive = src.url
  else:
    src = open_source(url, gcs_endpoint)
  if src.advertised_md5 and src.advertised_md5 != md5:
    raise ChecksumError(f"{url}: the server reports MD5 {src.advertised_md5}, "
                        f"expected {md5}; not downloading. Check --md5 / "
                        "--experiment.")

  created_dest = not os.path.isdir(dest)
  os.makedirs(dest, exist_ok=True)
  _remove_stale_staging(dest, experiment)
  staging = tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{experiment}-", dir=dest)
  keep_file = None
  keep_offset = 0
  try:
    if keep_path:
      part = keep_path + PART_SUFFIX
      if os.path.isfile(part) and src.size is not None and (
          os.path.getsize(part) <= src.size):
        src = _ResumedSource(part, src)
        keep_offset = src.part_size
        logging.info("Resuming %s from byte %d.", part, keep_offset)
      keep_file = open(part, "ab" if keep_offset else "wb")
    start = time.time()
    with tqdm.tqdm(total=src.size, unit="B", unit_scale=True,
                   desc=f"{experiment}.tar.gz", disable=not progress,
                   smoothing=0.05) as bar:
      reader = _Reader(src, keep_file, keep_offset, retries, backoff_s, bar)
      reader.start()
      try:
        seen = _extract(_Inflater(reader), staging, experiment,
                                selected, needed, committed, result)
      finally:
        reader.stop.set()
        reader.join(timeout=HTTP_TIMEOUT_S)
    result.downloaded = True
    result.archive_bytes = reader.offset
    result.seconds = time.time() - start
    actual = reader.md5.hexdigest()
    if keep_file is not None:
      keep_file.flush()
      os.fsync(keep_file.fileno())
      keep_file.close()
      keep_file = None
    if actual != md5 and reused:
      raise _set_aside_kept(reused, actual, md5)
    if actual != md5:
      raise ChecksumError(
          f"MD5 mismatch for {src.url}: got {actual}, expected {md5}; nothing "
          f"was written to {dest}. Re-run to download again.")
    if keep_path:
      os.replace(keep_path + PART_SUFFIX, keep_path)
      result.kept_archive = keep_path
    _commit(staging, dest, experiment, md5, seen, selected, needed, committed,
            result)
    _write_json(os.path.join(dest, experiment, MANIFEST_FILENAME),
                {"archive_md5": md5,
                 "runs": sorted([name, run]
                                for (_, run), name in seen.items())})
    ratios_seen = {r for r, _ in seen}
    runs_seen = {n for _, n in seen}
    result.missing_ratios = sorted((wanted_ratios or set()) - ratios_seen)
    result.missing_runs = sorted((wanted_runs or set()) - runs_seen)
    return result
  except BaseException as e:
    if keep_file is not None:
      keep_file.close()
    replacement = None
    if reused and type(e) in (ArchiveError, UnsafeMemberError):
      # Undecodable: if the kept file is not the archive, set it aside.
      actual = _file_md5(reused)
      if actual is not None and actual != md5:
        replacement = _set_aside_kept(reused, actual, md5)
    if keep_path and isinstance(e, ArchiveError) and not isinstance(
        e, DownloadError):
      # The kept bytes are damaged (or the archive is bad): don't resume them.
      part = keep_path + PART_SUFFIX
      if os.path.exists(part):
        os.unlink(part)
    shutil.rmtree(staging, ignore_errors=True)  # Before removing `dest`.
    if created_dest:
      try:
        os.rmdir(dest)
      except OSError:
        pass
    if replacement is not None:
      raise replacement from e
    raise
  finally:
    shutil.rmtree(staging, ignore_errors=True)


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


def _remove_stale_staging(dest, experiment):
  for name in os.listdir(dest):
    if name.startswith(f"{STAGING_PREFIX}{experiment}-"):
      shutil.rmtree(os.path.join(dest, name), ignore_errors=True)


def _extract(inflater, staging, experiment, selected, needed, committed,
             result):
  """Walks the tar stream, writing selected members under `staging`.

  Returns `{(ratio, run): ratio_name}` for every run in the archive.
  """
  seen = {}
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
      seen[key] = run[0]
      if not member.isreg() or len(parts) < 4:
        continue
      kind = _kind_of(parts[3:])
      if (not selected(key) or kind not in needed or
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
  return seen


def _commit(staging, dest, experiment, md5, seen, selected, needed, committed,
            result):
  """Moves each staged run into `dest` and records it as committed."""
  for key in sorted(seen):
    if not selected(key):
      continue
    have = committed.get(key, frozenset())
    if needed <= have:
      result.already_committed.append(key)
      continue
    ratio_name, run = seen[key], key[1]
    staged = os.path.join(staging, experiment, ratio_name, str(run))
    target = os.path.join(dest, experiment, ratio_name, str(run))
    marker = {"archive_md5": md5, "kinds": sorted(have | needed)}
    os.makedirs(staged, exist_ok=True)
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
  with tqdm.tqdm(total=src.size, unit="B", unit_scale=True,
                 desc=os.path.basename(path), disable=not progress) as bar:
    for chunk in src.chunks(0):
      digest.update(chunk)
      bar.update(len(chunk))
  actual = digest.hexdigest()
  if actual != md5.lower():
    raise ChecksumError(f"{path}: MD5 mismatch: got {actual}, expected {md5}")
  return actual
