"""Small released-layout archives.

`layout_files()` gives `{member path: bytes}` of a few runs (a valid
aux_arrays.npz and random checkpoint bytes each); `write_archive` gzips them
into `<dir>/<experiment>.tar.gz`. `sparse_member` builds the hostile
members a download must refuse.
"""

import gzip
import hashlib
import io
import os
import tarfile
import tempfile

import numpy as np

from heldout_tf.collection import layout
from heldout_tf.collection import runs as runs_lib

EXPERIMENT = "cifar10-inception"


def aux_bytes(rng, n_train=40, n_test=20, ratio=0.7):
  """A valid aux_arrays.npz of a run on `ratio` of `n_train`, as bytes."""
  order = rng.permutation(n_train)
  n_used = int(ratio * n_train)
  used, removed = np.sort(order[:n_used]), np.sort(order[n_used:])
  with tempfile.TemporaryDirectory() as tmp:
    runs_lib.write_aux(
        tmp,
        correctness={"train": rng.random(len(used)) < 0.9,
                     "removed": rng.random(len(removed)) < 0.6,
                     "test": rng.random(n_test) < 0.7},
        index={"train": used, "removed": removed, "test": np.arange(n_test)},
        subsample_idx=used)
    with open(os.path.join(tmp, layout.AUX_FILENAME), "rb") as f:
      return f.read()


def layout_files(ratios=("0.1", "0.7"), run_ids=(0, 1, 2), ckpt_bytes=60_000,
                 seed=0, experiment=EXPERIMENT):
  """`{relative path: bytes}` of a released-layout archive's regular files."""
  rng = np.random.default_rng(seed)
  files = {}
  for ratio in ratios:
    for run in run_ids:
      base = f"{experiment}/{ratio}/{run}"
      files[f"{base}/{layout.AUX_FILENAME}"] = aux_bytes(
          np.random.default_rng(int(rng.integers(1 << 30))))
      files[f"{base}/checkpoints/ckpt-10.index"] = rng.bytes(300)
      files[f"{base}/checkpoints/ckpt-10.data-00000-of-00001"] = rng.bytes(
          ckpt_bytes)
  return files


def _add_dirs(tar, name, done):
  parts = name.split("/")
  for i in range(1, len(parts)):
    directory = "/".join(parts[:i])
    if directory not in done:
      done.add(directory)
      info = tarfile.TarInfo(directory)
      info.type = tarfile.DIRTYPE
      info.mode = 0o755
      tar.addfile(info)


def tar_bytes(files, extra_members=(), end_blocks=True):
  """An uncompressed tar of `files` (with their directories) + raw members.

  `extra_members` are `(TarInfo, data or None)` pairs or already encoded
  members (`bytes`, e.g. from `sparse_member`), appended as given. Without
  `end_blocks` the tar lacks its end-of-archive zero blocks.
  """
  buf = io.BytesIO()
  tar = tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT)
  done = set()
  for name, data in files.items():
    _add_dirs(tar, name, done)
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))
  for member in extra_members:
    if isinstance(member, bytes):
      tar.fileobj.write(member)
      tar.offset += len(member)
    else:
      info, data = member
      tar.addfile(info, None if data is None else io.BytesIO(data))
  if not end_blocks:
    return buf.getvalue()  # Before close() writes the end-of-archive blocks.
  tar.close()
  return buf.getvalue()


def gzip_bytes(data, level=6):
  return gzip.compress(data, compresslevel=level, mtime=0)


def write_archive(directory, files, extra_members=(), experiment=EXPERIMENT):
  """Writes `<directory>/<experiment>.tar.gz`; returns (path, bytes, md5)."""
  data = gzip_bytes(tar_bytes(files, extra_members))
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, f"{experiment}.tar.gz")
  with open(path, "wb") as f:
    f.write(data)
  return path, data, hashlib.md5(data).hexdigest()


def sparse_member(name, declared_size, fmt="gnu", data=b"\0"):
  """A sparse tar member: `data` stored, `declared_size` bytes when extracted.

  `fmt='gnu'` is an old-GNU type 'S' header (as `tar --sparse` writes with
  `--format=gnu`); `'pax'` the PAX 0.1 form (`GNU.sparse.map` records).
  Returns the encoded member (`bytes`) for `tar_bytes`'s `extra_members`.
  """
  info = tarfile.TarInfo(name)
  info.size, info.mode = len(data), 0o644
  padding = b"\0" * (-len(data) % tarfile.BLOCKSIZE)
  if fmt == "pax":
    info.pax_headers = {"GNU.sparse.map": f"0,{len(data)}",
                        "GNU.sparse.size": str(declared_size)}
    return info.tobuf(tarfile.PAX_FORMAT) + data + padding
  if fmt != "gnu":
    raise ValueError(f"fmt must be 'gnu' or 'pax', got {fmt!r}")
  info.type = tarfile.GNUTYPE_SPARSE
  header = bytearray(info.tobuf(tarfile.GNU_FORMAT))
  # One data region (offset 0, len(data) bytes), then the real file size.
  header[386:398] = tarfile.itn(0, 12, tarfile.GNU_FORMAT)
  header[398:410] = tarfile.itn(len(data), 12, tarfile.GNU_FORMAT)
  header[483:495] = tarfile.itn(declared_size, 12, tarfile.GNU_FORMAT)
  header[148:156] = b" " * 8
  header[148:156] = b"%06o\0 " % sum(header)
  return bytes(header) + data + padding
