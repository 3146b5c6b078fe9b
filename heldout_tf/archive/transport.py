"""Where the archive's bytes come from: a local file, HTTP(S) or gs://.

Each source has `url`, `size` (None if unknown), `advertised_md5` (hex, or
None) and `chunks(offset)`, a generator of the bytes from `offset` on. A
recoverable read failure raises `_TransientError` (the reader retries it from
its current offset); anything else raises `DownloadError`.

Connecting fails fast: a refused or unresolvable connection is one
`DownloadError`, not a minute of library retries. Dropped connections in the
middle of the archive are retried by the reader (`stream.Reader`) from its
current offset, with a byte-range request.
"""

import base64
import binascii
import http.client
import os
import urllib.error
import urllib.parse
import urllib.request

from heldout_tf.core import errors
from heldout_tf.collection import experiments
from heldout_tf.archive.exceptions import DownloadError
from heldout_tf.archive.exceptions import _TransientError

# Compressed bytes per read; GCS chunks are separate ranged GETs.
READ_BYTES = 4 << 20
GCS_CHUNK_BYTES = 16 << 20
# Seconds to wait for a connection, and for each read of an open one.
CONNECT_TIMEOUT_S = 10
HTTP_TIMEOUT_S = 60
# Loggers of the gs:// libraries: they log tracebacks of failures the kit
# reports itself (`quiet_library_loggers`).
LIBRARY_LOGGERS = ("gcsfs", "fsspec", "aiohttp", "google.auth", "urllib3")


class LocalSource:
  """A local archive file."""

  def __init__(self, path):
    if not os.path.isfile(path):
      raise DownloadError(f"{path}: archive file not found")
    self.url = path
    self.size = os.path.getsize(path)
    self.advertised_md5 = None

  def chunks(self, offset, end=None):
    end = self.size if end is None else end
    try:
      with open(self.url, "rb") as f:
        f.seek(offset)
        while offset < end:
          chunk = f.read(min(READ_BYTES, end - offset))
          if not chunk:
            raise DownloadError(f"{self.url}: file shrank while reading "
                                f"(at byte {offset})")
          offset += len(chunk)
          yield chunk
    except OSError as e:
      raise DownloadError(f"cannot read {self.url}: "
                          f"{e.strerror or e}") from None


def _goog_md5(value):
  """Hex MD5 from a base64 GCS md5Hash / `x-goog-hash: md5=` value, or None."""
  try:
    return binascii.hexlify(base64.b64decode(value)).decode()
  except (binascii.Error, TypeError, ValueError):
    return None


class HttpSource:
  """An archive served over HTTP(S); resumes with `Range: bytes=<offset>-`."""

  def __init__(self, url):
    self.url = url
    self.size = None
    self.advertised_md5 = None
    try:
      with urllib.request.urlopen(
          urllib.request.Request(url, method="HEAD"),
          timeout=CONNECT_TIMEOUT_S) as resp:
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
      raise DownloadError(f"{url}: cannot connect "
                          f"({getattr(e, 'reason', None) or e})") from None

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


def gcs_filesystem(endpoint_url=None):
  """The anonymous gcsfs file system the kit reads gs:// objects with.

  Each request is tried once (the reader retries dropped reads itself, from
  its current offset) and waits at most `CONNECT_TIMEOUT_S` for a connection
  and `HTTP_TIMEOUT_S` per read. It is the core filesystem: gcsfs's
  experimental zonal/HNS subclass probes each bucket over gRPC first (a
  minute of timeouts against an emulator, nothing gained for plain reads).
  fsspec caches instances: the same arguments give the same object.

  Raises:
    DownloadError: gcsfs is not installed.
  """
  try:
    import aiohttp  # pylint: disable=g-import-not-at-top
    from gcsfs import core as gcsfs_core  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise DownloadError("gs:// needs gcsfs (pip install gcsfs); use "
                        "--source https") from None
  timeout = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT_S,
                                  sock_read=HTTP_TIMEOUT_S)
  return _single_try_class(gcsfs_core.GCSFileSystem)(
      token="anon", endpoint_url=endpoint_url, requests_timeout=timeout)


_SINGLE_TRY_CLASSES = {}


def _single_try_class(base):
  """`base` (a GCSFileSystem class) with one attempt per HTTP request.

  gcsfs retries every request 6 times with exponential back-off (~35 s for
  a refused connection), logging a traceback; the reader already retries.
  Falls back to `base` if gcsfs's request method is not the decorated one
  this expects.
  """
  if base not in _SINGLE_TRY_CLASSES:
    _SINGLE_TRY_CLASSES[base] = base
    # pylint: disable=protected-access,g-import-not-at-top
    undecorated = getattr(base._request, "__wrapped__", None)
    try:
      from gcsfs import retry as gcsfs_retry
      retry_request = gcsfs_retry.retry_request
    except (ImportError, AttributeError):
      undecorated = None
    # pylint: enable=protected-access,g-import-not-at-top
    if undecorated is not None:
      _SINGLE_TRY_CLASSES[base] = type(
          "SingleTryGCSFileSystem", (base,),
          {"_request": retry_request(retries=1)(undecorated)})
  return _SINGLE_TRY_CLASSES[base]


class GcsSource:
  """A `gs://bucket/object`, read anonymously with gcsfs in ranged chunks."""

  def __init__(self, url, endpoint_url=None):
    self.url = url
    self._path = url[len("gs://"):]
    try:
      self._fs = gcs_filesystem(endpoint_url)
    except DownloadError as e:
      raise DownloadError(f"{url}: {e}") from None
    try:
      info = self._fs.info(self._path)
    except FileNotFoundError:
      raise DownloadError(f"{url}: object not found") from None
    except Exception as e:  # pylint: disable=broad-except
      raise DownloadError(f"{url}: cannot read object metadata "
                          f"({_one_line(e)})") from None
    self.size = int(info["size"])
    self.advertised_md5 = _goog_md5(info.get("md5Hash"))

  def chunks(self, offset):
    while offset < self.size:
      end = min(self.size, offset + GCS_CHUNK_BYTES)
      try:
        chunk = self._fs.cat_file(self._path, start=offset, end=end)
      except (FileNotFoundError, PermissionError) as e:
        raise DownloadError(f"{self.url}: {_one_line(e)}") from None
      except Exception as e:  # pylint: disable=broad-except
        raise _TransientError(f"{type(e).__name__}: {_one_line(e)}") from None
      if not chunk:
        raise _TransientError(f"empty response at byte {offset}")
      offset += len(chunk)
      yield chunk


def _one_line(error):
  """The first line of an exception's message (gcsfs adds response bodies)."""
  text = str(error).strip()
  return text.splitlines()[0] if text else type(error).__name__


class ResumedSource:
  """The bytes of a partial local download, then the rest from `remote`."""

  def __init__(self, part_path, remote):
    self.url = remote.url
    self.size = remote.size
    self.advertised_md5 = remote.advertised_md5
    self.part_size = os.path.getsize(part_path)
    self._local = LocalSource(part_path)
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
      base_url = experiments.GS_PREFIX
    elif source == "https":
      base_url = experiments.HTTPS_PREFIX
    else:
      raise errors.UsageError(f"source must be 'gs' or 'https', got {source!r}")
  return base_url.rstrip("/") + f"/{experiment}.tar.gz"


def open_source(url, gcs_endpoint=None):
  """Opens `url` (gs://, http(s)://, file:// or a local path) for streaming."""
  scheme = urllib.parse.urlparse(url).scheme
  if scheme == "gs":
    return GcsSource(url, gcs_endpoint or os.environ.get(
        "STORAGE_EMULATOR_HOST") or None)
  if scheme in ("http", "https"):
    return HttpSource(url)
  if scheme == "file":
    return LocalSource(urllib.request.url2pathname(
        urllib.parse.urlparse(url).path))
  return LocalSource(url)


def quiet_library_loggers():
  """Keeps the gs:// libraries' loggers to critical messages only.

  For entry points: the kit turns their failures into one `error:` line, so
  their logged tracebacks (and gcsfs's start-up notice) are noise.
  """
  import logging  # pylint: disable=g-import-not-at-top
  for name in LIBRARY_LOGGERS:
    logging.getLogger(name).setLevel(logging.CRITICAL)
