"""Loopback servers for offline download tests: HTTP with faults, a GCS
emulator; and `snapshot` of a directory tree.

  with servers.FaultyServer({"/d/x.tar.gz": data}) as server:
    server.drops = [50_000]  # The first GET stops after 50 000 bytes.
    archive.fetch(..., base_url=server.url + "/d")
"""

import contextlib
import http.server
import os
import socket
import threading

# gcsfs reads this at import: keep its plain (not zonal/HNS) filesystem, which
# would otherwise probe the emulator over gRPC for a minute per bucket.
os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"


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
    hold_at: when set, a GET sends the body up to this offset, then waits
      for `release` (an Event) before sending the rest.
    requests: recorded `(method, path, Range header)`.
  """

  def __init__(self, objects):
    self.objects = dict(objects)
    self.drops = []
    self.corrupt_at = None
    self.honor_range = True
    self.hold_at = None
    self.release = threading.Event()
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
        if server.hold_at is not None and server.hold_at > start:
          self.wfile.write(body[:server.hold_at - start])
          self.wfile.flush()
          server.release.wait(30)
          body = body[server.hold_at - start:]
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
