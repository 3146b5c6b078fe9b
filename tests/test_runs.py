"""heldout_tf.collection.runs: atomic writes and the one aux_arrays.npz reader."""

import io
import os
import tracemalloc
import zipfile

import numpy as np
import pytest

from heldout_tf.core import errors
from heldout_tf.core import files
from heldout_tf.collection import layout
from heldout_tf.collection import runs
from heldout_tf import synthetic


def test_written_files_follow_the_umask(tmp_path):
  old = os.umask(0o022)
  try:
    path = str(tmp_path / "a.npz")
    files.save_npz(path, x=np.arange(3))
  finally:
    os.umask(old)
  assert os.stat(path).st_mode & 0o777 == 0o644


def test_failed_write_leaves_nothing(tmp_path):
  path = str(tmp_path / "a.npz")
  files.save_npz(path, x=np.arange(3))

  def fail(f):
    f.write(b"partial")
    raise KeyboardInterrupt

  with pytest.raises(KeyboardInterrupt):
    files.atomic_write(path, fail)
  assert os.listdir(tmp_path) == ["a.npz"]
  with np.load(path) as f:
    np.testing.assert_array_equal(f["x"], np.arange(3))


# ------------------------------------------------------- the aux reader --


def aux_arrays(n_train=6, n_test=4):
  """A valid run's arrays: examples 0..3 trained on, 4.. removed."""
  train, removed = np.arange(4), np.arange(4, n_train)
  return {"correctness_train": np.array([1, 1, 0, 1], bool),
          "correctness_removed": np.array([0, 1], bool)[:len(removed)],
          "correctness_test": np.arange(n_test) % 2 == 0,
          "index_train": train, "index_removed": removed,
          "index_test": np.arange(n_test)[::-1].copy(),
          "subsample_idx": train[::-1].copy()}


def npy_bytes(array) -> bytes:
  f = io.BytesIO()
  np.save(f, array, allow_pickle=False)
  return f.getvalue()


def write_zip(path, members, compression=zipfile.ZIP_STORED):
  """Writes `{name: bytes}` as a zip file (npz when names end in .npy)."""
  with zipfile.ZipFile(path, "w", compression) as zf:
    for name, data in members.items():
      zf.writestr(name, data)
  return str(path)


def aux_zip(path, compression=zipfile.ZIP_STORED, **changes):
  """An aux_arrays.npz of `aux_arrays()` with members replaced (raw bytes)."""
  members = {f"{k}.npy": npy_bytes(v) for k, v in aux_arrays().items()}
  for key, data in changes.items():
    if data is None:
      del members[f"{key}.npy"]
    else:
      members[f"{key}.npy"] = data
  return write_zip(path, members, compression)


def npy_header_only(descr, length) -> bytes:
  """An npy header claiming `length` entries of `descr`, and no data."""
  header = {"descr": descr, "fortran_order": False, "shape": (length,)}
  f = io.BytesIO()
  np.lib.format.write_array_header_1_0(f, header)
  return f.getvalue()


def test_reads_valid_unusual_dtypes_like_numpy(tmp_path):
  train = np.arange(5)[::-1]
  path = str(tmp_path / runs.AUX_FILENAME)
  arrays = dict(correctness_train=np.array([1, 0, 1, 1, 0], np.uint8),
                correctness_removed=np.zeros(0, bool),
                correctness_test=np.array([True, False]),
                index_train=train.astype(">i8"),
                index_removed=np.zeros(0, np.int32),
                index_test=np.array([1, 0], np.int32),
                subsample_idx=train.astype(np.int32))
  files.save_npz(path, **arrays)
  for source in (path, str(tmp_path)):  # The file or its run directory.
    aux = runs.read_aux(source)
    assert sorted(aux) == sorted(runs.AUX_KEYS)
    for key, want in arrays.items():
      if key.startswith("correctness_"):
        assert aux[key].dtype == bool
        want = want.astype(bool)
      else:
        assert aux[key].dtype == want.dtype, key
      np.testing.assert_array_equal(aux[key], want)
  aux["correctness_train"][0] ^= True  # Callers may edit what they read.
  aux["index_train"][0] = 7


def test_compressed_npz_reads(tmp_path):
  path = str(tmp_path / "a.npz")
  np.savez_compressed(path, **aux_arrays(), unused=np.zeros(10))
  aux = runs.read_aux(path)
  for key, want in aux_arrays().items():
    np.testing.assert_array_equal(aux[key], want)


def test_extra_members_are_never_inflated(tmp_path):
  # 64 MiB of zeros deflate to 64 KiB; reading them would show in the peak.
  members = {f"{k}.npy": npy_bytes(v) for k, v in aux_arrays().items()}
  members["extra.npy"] = npy_bytes(np.zeros(64 << 20, np.uint8))
  path = write_zip(tmp_path / "a.npz", members, zipfile.ZIP_DEFLATED)
  assert os.path.getsize(path) < 1 << 20
  tracemalloc.start()
  try:
    aux = runs.read_aux(path)
    peak = tracemalloc.get_traced_memory()[1]
  finally:
    tracemalloc.stop()
  assert sorted(aux) == sorted(runs.AUX_KEYS)
  assert peak < 8 << 20


def test_member_claiming_too_many_entries_is_refused(tmp_path):
  # 2**31 bool entries claimed in a 128-byte member: refused, not inflated.
  path = aux_zip(tmp_path / "a.npz",
                 correctness_test=npy_header_only("|b1", 2**31))
  with pytest.raises(runs.AuxArraysError,
                     match=r"'correctness_test' claims 2147483648 entries"):
    runs.read_aux(path)
  # Sizes known from a collection's first run bound each member tighter.
  path = aux_zip(tmp_path / "b.npz")
  with pytest.raises(runs.AuxArraysError,
                     match=r"'correctness_test' claims 4 entries, more "
                     r"than the 3"):
    runs.read_aux(path, n_train=6, n_test=3)


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED,
                                         zipfile.ZIP_DEFLATED])
def test_member_larger_than_its_header_is_refused(tmp_path, compression):
  # The header says 4 entries; the member inflates to 4 MiB more.
  data = npy_bytes(np.ones(4, bool)) + bytes(4 << 20)
  path = aux_zip(tmp_path / "a.npz", compression, correctness_test=data)
  with pytest.raises(runs.AuxArraysError,
                     match=r"'correctness_test' is \d+ bytes uncompressed "
                     r"but its header declares \d+"):
    runs.read_aux(path)


def test_corrupt_stored_data_fails_the_crc(tmp_path):
  path = aux_zip(tmp_path / "a.npz")
  with zipfile.ZipFile(path) as zf:
    info = zf.getinfo("index_test.npy")
  with open(path, "r+b") as f:  # The last data byte of index_test.
    f.seek(info.header_offset + 30 + len(info.filename) + len(info.extra) +
           info.file_size - 1)
    f.write(b"\x07")
  with pytest.raises(runs.AuxArraysError,
                     match="cannot read key 'index_test': bad CRC-32"):
    runs.read_aux(path)


def test_other_compression_methods_are_refused(tmp_path):
  path = aux_zip(tmp_path / "a.npz", zipfile.ZIP_BZIP2)
  with pytest.raises(runs.AuxArraysError, match="compression method 12"):
    runs.read_aux(path)


def test_symlink_to_dev_zero_is_refused_quickly(tmp_path):
  path = tmp_path / runs.AUX_FILENAME
  os.symlink("/dev/zero", path)
  with pytest.raises(runs.AuxArraysError,
                     match="not a regular file.*character device"):
    runs.read_aux(str(path))
  with pytest.raises(runs.AuxArraysError, match="not a regular file"):
    runs.read_aux(str(tmp_path))  # The run directory holding the link.


def test_fifo_is_refused_without_hanging(tmp_path):
  path = str(tmp_path / runs.AUX_FILENAME)
  os.mkfifo(path)
  outcome = synthetic.refusals(path, runs.AuxArraysError,
                               lambda: runs.read_aux(path))
  assert outcome and "not a regular file (a FIFO)" in outcome[0]


def test_directory_is_refused(tmp_path):
  path = tmp_path / "run" / runs.AUX_FILENAME
  path.mkdir(parents=True)
  with pytest.raises(runs.AuxArraysError, match="a directory"):
    runs.read_aux(str(path))


@pytest.mark.parametrize("values,message", [
    (np.array([-1, 1, 1, -1]), "value -1"),
    (np.array([0, 2, 1, 0], np.uint8), "value 2"),
    (np.array(["yes", "no", "yes", "no"]), "is <U3"),
    (np.array([1.0, 0.0, 1.0, 0.0]), "is float64"),
    (np.array([0.5, 1.0, 1.0, 0.0], np.float32), "is float32"),
])
def test_correctness_must_be_bool_or_0_1_integers(tmp_path, values, message):
  path = aux_zip(tmp_path / "a.npz", correctness_test=npy_bytes(values))
  with pytest.raises(runs.AuxArraysError,
                     match=f"'correctness_test' must be bool.*{message}") as e:
    runs.read_aux(path)
  assert path in str(e.value)


def test_zero_one_integer_correctness_is_accepted(tmp_path):
  path = aux_zip(tmp_path / "a.npz",
                 correctness_test=npy_bytes(np.array([1, 0, 0, 1], np.int64)))
  np.testing.assert_array_equal(runs.read_aux(path)["correctness_test"],
                                [True, False, False, True])


@pytest.mark.parametrize("change,message", [
    (dict(index_test=None), r"missing key\(s\) \['index_test'\]"),
    (dict(index_test=npy_bytes(np.array([0.0, 1.0, 2.0, 3.0]))),
     "'index_test' must be integer, is float64"),
    (dict(index_test=npy_bytes(np.zeros((2, 2), np.int64))),
     r"'index_test' must be 1-D, has shape \(2, 2\)"),
    (dict(index_test=npy_bytes(np.arange(3))),
     "'correctness_test' has shape"),
    (dict(subsample_idx=b"not an npy file"), "'subsample_idx': not an npy"),
    (dict(subsample_idx=npy_bytes(np.arange(4))[:-3]), "'subsample_idx'"),
])
def test_bad_members_name_file_and_key(tmp_path, change, message):
  path = aux_zip(tmp_path / "a.npz", **change)
  with pytest.raises(runs.AuxArraysError, match=message) as e:
    runs.read_aux(path)
  assert path in str(e.value)


def test_pickled_and_non_zip_files_are_refused(tmp_path):
  f = io.BytesIO()
  np.save(f, np.array([{"x": 1}], object), allow_pickle=True)
  path = aux_zip(tmp_path / "a.npz", index_test=f.getvalue())
  with pytest.raises(runs.AuxArraysError,
                     match="cannot read key 'index_test'.*object"):
    runs.read_aux(path)
  (tmp_path / "b.npz").write_bytes(b"PK\x03\x04 truncated")
  with pytest.raises(runs.AuxArraysError, match="b.npz: cannot read"):
    runs.read_aux(str(tmp_path / "b.npz"))
  with pytest.raises(runs.AuxArraysError, match="file not found"):
    runs.read_aux(str(tmp_path / "missing.npz"))


def test_aux_errors_are_kit_errors():
  assert issubclass(runs.AuxArraysError, errors.HeldoutError)
  assert issubclass(runs.AuxArraysError, ValueError)


# ----------------------------------------------------------------- layout --


def test_layout_names_are_re_exported_and_runs_are_listed_by_layout(tmp_path):
  assert not hasattr(runs, "list_runs")  # One lister: layout.list_runs.
  assert runs.run_dir("r", "e", 0.7, 3) == layout.run_dir("r", "e", 0.7, 3)
  assert runs.format_ratio(1) == "1.0"
  assert runs.AUX_FILENAME == layout.AUX_FILENAME
  for name in ("0.7/3", "0.7/x", "0.70_x/1", "1.0/0"):
    (tmp_path / "e" / name).mkdir(parents=True)
  assert [(r.ratio_name, r.run, r.path)
          for r in layout.list_runs(str(tmp_path), "e")] == [
      ("0.7", 3, str(tmp_path / "e" / "0.7" / "3")),
      ("1.0", 0, str(tmp_path / "e" / "1.0" / "0"))]


def test_atomic_write_names_an_unwritable_path(tmp_path):
  from heldout_tf.core import errors  # pylint: disable=g-import-not-at-top
  blocker = tmp_path / "file"
  blocker.write_text("x")
  target = str(blocker / "aux_arrays.npz")
  # Names the path in the way (a file where a directory must be).
  with pytest.raises(errors.PathError, match=f"cannot write {blocker}: "):
    files.atomic_write(target, lambda f: f.write(b"data"))
