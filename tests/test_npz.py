"""heldout_tf.core.npz: the one hardened reader of npz and npy files."""

import io
import os
import tracemalloc
import zipfile

import numpy as np
import pytest

from heldout_tf.core import errors
from heldout_tf.core import npz
from heldout_tf import synthetic


def npy_bytes(array) -> bytes:
  f = io.BytesIO()
  np.save(f, array, allow_pickle=True)
  return f.getvalue()


def npy_header_only(descr, shape) -> bytes:
  f = io.BytesIO()
  np.lib.format.write_array_header_1_0(
      f, {"descr": descr, "fortran_order": False, "shape": shape})
  return f.getvalue()


def write_zip(path, members, compression=zipfile.ZIP_STORED) -> str:
  with zipfile.ZipFile(path, "w", compression) as zf:
    for name, data in members.items():
      zf.writestr(name, data)
  return str(path)


def test_reads_like_numpy_any_shape_order_and_dtype(tmp_path):
  arrays = {"scalar": np.float32(2.5), "matrix": np.arange(12.).reshape(3, 4),
            "fortran": np.asfortranarray(np.arange(6, dtype=">i4")
                                         .reshape(2, 3)),
            "cube": np.ones((2, 0, 3), bool), "text": np.array(["a", "bc"]),
            "raw": np.array([b"x", b"yz"])}
  for save in (np.savez, np.savez_compressed):
    path = str(tmp_path / f"{save.__name__}.npz")
    save(path, **arrays)
    with npz.Reader(path) as f:
      assert f.keys == list(arrays)
      for key, want in arrays.items():
        got = f.read(key)
        assert got.dtype == want.dtype and got.shape == want.shape, key
        np.testing.assert_array_equal(got, want)
      assert f.header("matrix") == (np.dtype(np.float64), (3, 4))
  with open(path, "rb") as raw:  # The same from bytes.
    got = npz.read(raw.read(), ["matrix"])["matrix"]
  np.testing.assert_array_equal(got, arrays["matrix"])


def test_shape_dtype_and_size_limits_are_checked_before_reading(tmp_path):
  path = str(tmp_path / "a.npz")
  np.savez(path, x=np.zeros((4, 2), np.float32), i=np.arange(5))
  cases = [(dict(kinds="iu"), "'x' has dtype float32, expected integer"),
           (dict(ndim=1), r"'x' has shape \(4, 2\), expected a vector"),
           (dict(shape=(4, 3)), r"'x' has shape \(4, 2\), expected \(4, 3\)"),
           (dict(shape=(None, 3)), r"expected \(\*, 3\)"),
           (dict(max_elements=7), "'x' claims 8 entries, more than the 7")]
  with npz.Reader(path) as f:
    for limits, message in cases:
      with pytest.raises(npz.NpzError, match=message) as e:
        f.read("x", **limits)
      assert str(e.value).startswith(path)
    assert f.read("x", kinds="f", shape=(None, 2), max_elements=8).shape == (
        4, 2)
    with pytest.raises(npz.NpzError, match=r"missing key\(s\) \['y'\]; has "
                       "'i', 'x'"):
      f.require(["x", "y"])
  with npz.Reader(path, max_total_bytes=40) as f:
    f.read("i")
    with pytest.raises(npz.NpzError, match="declare 72 bytes, more than the "
                       "40 allowed"):
      f.read("x")


def test_a_bomb_is_refused_before_it_inflates(tmp_path):
  # 256 MiB of zeros deflate to ~256 KiB: refused from the header.
  path = write_zip(tmp_path / "bomb.npz",
                   {"x.npy": npy_bytes(np.zeros(64 << 20, np.float32))},
                   zipfile.ZIP_DEFLATED)
  assert os.path.getsize(path) < 1 << 20
  tracemalloc.start()
  try:
    with npz.Reader(path) as f, pytest.raises(npz.NpzError, match="claims"):
      f.read("x", max_elements=1000)
    peak = tracemalloc.get_traced_memory()[1]
  finally:
    tracemalloc.stop()
  assert peak < 4 << 20


def test_npy_declaring_a_trillion_entries_is_refused_before_allocating(
    tmp_path):
  path = tmp_path / "huge.npy"
  path.write_bytes(npy_header_only("<f8", (10**12,)) + bytes(64))
  with pytest.raises(npz.NpzError, match="claims 1000000000000 entries"):
    npz.read_npy(str(path), max_elements=60_000)
  # Without a bound, the file's size still refuses it before allocating.
  with pytest.raises(npz.NpzError, match="header declares"):
    npz.read_npy(str(path))
  # And in an npz: the entry's size does not match its header.
  zipped = write_zip(tmp_path / "huge.npz",
                     {"x.npy": npy_header_only("<f8", (10**12,))})
  with npz.Reader(zipped) as f, pytest.raises(npz.NpzError,
                                              match="header declares"):
    f.read("x")


def test_npy_files(tmp_path):
  path = str(tmp_path / "s.npy")
  np.save(path, np.arange(6.).reshape(2, 3))
  np.testing.assert_array_equal(npz.read_npy(path, kinds="f", ndim=2),
                                np.arange(6.).reshape(2, 3))
  with pytest.raises(npz.NpzError, match="expected a vector"):
    npz.read_npy(path, ndim=1)
  np.save(path, np.array([{"a": 1}], object), allow_pickle=True)
  with pytest.raises(npz.NpzError, match="pickled object array"):
    npz.read_npy(path)
  np.savez(str(tmp_path / "z.npz"), a=[1])
  with pytest.raises(npz.NpzError, match="an npz archive"):
    npz.read_npy(str(tmp_path / "z.npz"))
  with open(path, "wb") as f:
    np.save(f, np.arange(100))
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) - 8)
  with pytest.raises(npz.NpzError, match="header declares"):
    npz.read_npy(path)


@pytest.mark.parametrize("where", ["start", "middle", "end"])
@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_truncated_and_bit_flipped_files_are_clear_errors(tmp_path, save,
                                                          where):
  path = str(tmp_path / "a.npz")
  save(path, x=np.random.default_rng(0).normal(size=5000), y=np.arange(3))
  data = bytearray(open(path, "rb").read())
  offset = {"start": 200, "middle": len(data) // 2,
            "end": len(data) - 30}[where]
  for broken in (bytes(data[:offset]),
                 bytes(data[:offset]) + bytes([data[offset] ^ 0x10]) +
                 bytes(data[offset + 1:])):
    with open(path, "wb") as f:
      f.write(broken)
    try:
      with npz.Reader(path) as f:
        for key in f.keys:
          f.read(key)
    except npz.NpzError as e:
      assert str(e).startswith(path)
    # A flip in a place nobody checks (e.g. a timestamp) may read fine.


def test_special_files_are_refused_without_blocking(tmp_path):
  fifo = str(tmp_path / "fifo.npz")
  os.mkfifo(fifo)
  outcome = synthetic.refusals(
      fifo, npz.NpzError, *(lambda fn=fn: fn(fifo) for fn in (
          npz.Reader, npz.read_npy, npz.check_regular)))
  assert outcome == [f"{fifo}: not a regular file (a FIFO)"] * 3
  zero = str(tmp_path / "zero.npy")
  os.symlink("/dev/zero", zero)
  with pytest.raises(npz.NpzError, match="a character device"):
    npz.read_npy(zero)
  with pytest.raises(errors.PathError, match="cannot read .*missing"):
    npz.Reader(str(tmp_path / "missing.npz"), os_error=errors.PathError)
  with pytest.raises(npz.NpzError, match="missing.npz: file not found"):
    npz.Reader(str(tmp_path / "missing.npz"))


def test_object_members_are_never_unpickled(tmp_path):
  path = write_zip(tmp_path / "a.npz",
                   {"o.npy": npy_bytes(np.array([{"a": 1}], object))})
  with npz.Reader(path) as f:
    with pytest.raises(npz.NpzError, match="'o': a pickled object array"):
      f.read("o")
    with pytest.raises(npz.NpzError, match="more than the 10 allowed"):
      f.open_member("o", max_bytes=10)
    with f.open_member("o", max_bytes=10_000) as member:
      assert member.read(6) == b"\x93NUMPY"
