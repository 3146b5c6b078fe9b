"""Reading the archive once: a reader thread (MD5, kept copy) and inflater.

A `Reader` thread fetches compressed chunks from a source, feeds them to an
MD5 and, when asked, to a kept copy of the archive, and queues them; the
calling thread reads the gunzipped bytes through an `Inflater` (a file
object for `tarfile`). A dropped connection is retried from the current
offset, keeping the MD5 and decompressor state.
"""

import hashlib
import queue
import threading
import zlib

from absl import logging

from heldout_tf.archive.exceptions import ArchiveError
from heldout_tf.archive.exceptions import DownloadError
from heldout_tf.archive.exceptions import _TransientError

QUEUE_CHUNKS = 8
# Decompressed bytes handed to tarfile per read.
TAR_BUFSIZE = 1 << 20


class Reader(threading.Thread):
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


class Inflater:
  """A read-only file over the gunzipped chunks of a `Reader`."""

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
