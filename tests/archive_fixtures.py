"""Small released-layout archives and loopback servers for the archive tests."""

import contextlib
import hashlib
import http.server
import io
import os
import socket
import tarfile
import tempfile
import threading

import numpy as np

from heldout_tf import runs as runs_lib

# gcsfs reads this at import: keep its plain (not zonal/HNS) filesystem, which
# would otherwise probe the emulator over gRPC for a minute per bucket.
os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"

EXPERIMENT = "cifar10-inception"


def _aux_bytes(seed):
  """A valid aux_arrays.npz, as bytes."""
  rng = np.random.default_rng(seed)
  n_train, n_test = 40, 20
  order = rng.permutation(n_train)
  used, removed = order[:28], order[28:]
  with tempfile.TemporaryDirectory() as tmp:
    runs_lib.write_aux(
        tmp,
        correctness={"train": rng.random(28) < 0.9,
                     "removed": rng.random(12) < 0.6,
                     "test": rng.random(n_test) < 0.7},
        index={"train": used, "removed": removed, "test": np.arange(n_test)},
        subsample_idx=used)
    with open(os.path.join(tmp, runs_lib.AUX_FILENAME), "rb") as f:
      return f.read()


def layout_files(ratios=("0.1", "0.7"), run_ids=(0, 1, 2), ckpt_bytes=60_000,
                 seed=0):
  """`{relative path: bytes}` of a released-layout archive's regular files."""
  rng = np.random.default_rng(seed)
  files = {}
  for ratio in ratios:
    for run in run_ids:
      base = f"{EXPERIMENT}/{ratio}/{run}"
      files[f"{base}/{runs_lib.AUX_FILENAME}"] = _aux_bytes(
          int(rng.integers(1 << 30)))
      files[f"{base}/checkpoints/ckpt-10.index"] = rng.bytes(300)
      files[f"{base}/checkpoints/ckpt-10.data-00000-of-00001"] = rng.bytes(
          ckpt_bytes)
  return files


def _add_dirs(tar, names, done):
  for name in names:
    parts = name.split("/")
    for i in range(1, len(parts)):
      d = "/".join(parts[:i])
      if d not in done:
        done.add(d)
        info = tarfile.TarInfo(d)
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
        tar.addfile(info)


def tar_bytes(files, extra_members=(), end_blocks=True):
  """An uncompressed tar of `files` (with their directories) + raw members.

  `extra_members` are `(TarInfo, data or None)` appended as given. Without
  `end_blocks` the tar lacks its end-of-archive zero blocks.
  """
  buf = io.BytesIO()
  tar = tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT)
  done = set()
  for name, data in files.items():
    _add_dirs(tar, [name], done)
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))
  for info, data in extra_members:
    tar.addfile(info, None if data is None else io.BytesIO(data))
  if not end_blocks:
    return buf.getvalue()  # Before close() writes the end-of-archive blocks.
  tar.close()
  return buf.getvalue()


def gzip_bytes(data, level=6):
  import gzip  # pylint: disable=g-import-not-at-top
  return gzip.compress(data, compresslevel=level, mtime=0)


def write_archive(directory, files, extra_members=()):
  """Writes `<directory>/<EXPERIMENT>.tar.gz`; returns (path, bytes, md5)."""
  data = gzip_bytes(tar_bytes(files, extra_members))
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, f"{EXPERIMENT}.tar.gz")
  with open(path, "wb") as f:
    f.write(data)
  return path, data, hashlib.md5(data).hexdigest()


def snapshot(root):
  """`{relative path: bytes or 'dir'}` of everything under `root`."""
  tree = {}
  for dirpath, dirnames, filenames in os.walk(root):
    for d in dirnames:
      tree[os.path.relpath(os.path.join(dirpath, d), root)] = "dir"
    for f in filenames:
      path = os.path.join(dirpath, f)
      with open(path, "rb") as fh:
        tree[os.path.relpath(path, root)] = fh.read()
  return tree


def free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


class FaultyServer:
  """Serves `{url path: bytes}` on 127.0.0.1 with Range and fault injection.

  Attributes (set by tests):
    drops: list of byte counts; each GET consumes one and closes the
      connection after sending that many body bytes.
    corrupt_at: absolute offset of a byte flipped in every response.
    honor_range: when False, Range headers are ignored (HTTP 200, all bytes).
    requests: recorded `(method, path, Range header)`.
  """

  def __init__(self, objects):
    self.objects = dict(objects)
    self.drops = []
    self.corrupt_at = None
    self.honor_range = True
    self.requests = []
    server = self

    class Handler(http.server.BaseHTTPRequestHandler):

      def log_message(self, *args):
        pass

      def _object(self):
        data = server.objects.get(self.path)
        if data is None:
          self.send_error(404)
        return data

      def do_HEAD(self):  # pylint: disable=invalid-name
        server.requests.append(("HEAD", self.path, None))
        data = self._object()
        if data is not None:
          self.send_response(200)
          self.send_header("Content-Length", str(len(data)))
          self.send_header("Accept-Ranges", "bytes")
          self.end_headers()

      def do_GET(self):  # pylint: disable=invalid-name
        rng = self.headers.get("Range")
        server.requests.append(("GET", self.path, rng))
        data = self._object()
        if data is None:
          return
        start = 0
        if rng and server.honor_range:
          start = int(rng.split("=")[1].split("-")[0])
          if start >= len(data):
            self.send_response(416)  # As real servers: nothing in range.
            self.send_header("Content-Range", f"bytes */{len(data)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
          self.send_response(206)
          self.send_header("Content-Range",
                           f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
          self.send_response(200)
        body = bytearray(data[start:])
        if server.corrupt_at is not None and server.corrupt_at >= start:
          body[server.corrupt_at - start] ^= 0xFF
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if server.drops:
          cut = server.drops.pop(0)
          self.wfile.write(body[:cut])
          self.wfile.flush()
          self.connection.shutdown(socket.SHUT_RDWR)
          self.close_connection = True
          return
        self.wfile.write(body)

    self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    self._httpd.daemon_threads = True
    self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
    self._thread = threading.Thread(target=self._httpd.serve_forever,
                                    kwargs=dict(poll_interval=0.02),
                                    daemon=True)

  def __enter__(self):
    self._thread.start()
    return self

  def __exit__(self, *args):
    self._httpd.shutdown()
    self._httpd.server_close()


@contextlib.contextmanager
def gcs_emulator(bucket="bucket"):
  """A loopback gcp-storage-emulator; yields its endpoint URL."""
  from gcp_storage_emulator import server as emulator  # pylint: disable=g-import-not-at-top
  port = free_port()
  server = emulator.create_server("127.0.0.1", port, in_memory=True,
                                  default_bucket=bucket)
  server.start()
  try:
    yield f"http://127.0.0.1:{port}"
  finally:
    server.stop()
