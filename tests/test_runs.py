"""Run layout helpers: atomic writes."""

import os

import numpy as np
import pytest

from heldout_tf import runs


def test_written_files_follow_the_umask(tmp_path):
  old = os.umask(0o022)
  try:
    path = str(tmp_path / "a.npz")
    runs.save_npz(path, x=np.arange(3))
  finally:
    os.umask(old)
  assert os.stat(path).st_mode & 0o777 == 0o644


def test_failed_write_leaves_nothing(tmp_path):
  path = str(tmp_path / "a.npz")
  runs.save_npz(path, x=np.arange(3))

  def fail(f):
    f.write(b"partial")
    raise KeyboardInterrupt

  with pytest.raises(KeyboardInterrupt):
    runs.atomic_write(path, fail)
  assert os.listdir(tmp_path) == ["a.npz"]
  with np.load(path) as f:
    np.testing.assert_array_equal(f["x"], np.arange(3))
