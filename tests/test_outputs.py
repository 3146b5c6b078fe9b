"""One rule for every file the kit writes: only a regular file is ever
replaced, and temporaries of killed writers do not survive."""

import os
import stat
import subprocess
import sys

import numpy as np
import pytest

from heldout_tf import cli
from heldout_tf import synthetic
from heldout_tf.collection import layout
from heldout_tf.collection import runs as runs_lib
from heldout_tf.core import errors
from heldout_tf.core import files

ROOT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _dead_pid():
  proc = subprocess.Popen([sys.executable, "-c", "pass"])
  proc.wait()
  return proc.pid


def _destinations(tmp_path):
  """A FIFO, a symbolic link to a file, a directory, and (where this
  process may make one) a private character device like /dev/null."""
  made = {}
  fifo = tmp_path / "fifo"
  os.mkfifo(fifo)
  made["a FIFO"] = fifo
  target = tmp_path / "target.txt"
  target.write_text("keep me")
  link = tmp_path / "link"
  link.symlink_to(target)
  made["a symbolic link"] = link
  directory = tmp_path / "dir"
  directory.mkdir()
  made["a directory"] = directory
  device = tmp_path / "null"
  try:
    os.mknod(device, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    made["a character device"] = device
  except PermissionError:
    pass
  return made


def test_only_a_regular_file_is_ever_replaced(tmp_path):
  for kind, path in _destinations(tmp_path).items():
    before = os.lstat(path)
    for write in (lambda: files.atomic_write(str(path), lambda f: f.write(
        b"x")), lambda: files.save_npz(str(path), a=np.zeros(2)),
                  lambda: files.check_writable(str(path))):
      with pytest.raises(errors.PathError) as e:
        write()
      assert str(e.value).startswith(f"cannot write {path}: it is {kind}")
    after = os.lstat(path)
    assert (after.st_ino, after.st_mode) == (before.st_ino, before.st_mode)
  assert (tmp_path / "target.txt").read_text() == "keep me"
  assert not [n for n in os.listdir(tmp_path) if n.startswith(".tmp-")]
  regular = tmp_path / "regular.txt"
  regular.write_text("old")
  files.atomic_write(str(regular), lambda f: f.write(b"new"))
  assert regular.read_text() == "new"


@pytest.mark.parametrize("command", ["estimate", "report"])
def test_commands_refuse_a_non_regular_out_in_one_line(command, tmp_path,
                                                       capsys):
  root = str(tmp_path / "runs")
  for run in synthetic.simulated_runs(
      root, "mnist-mlp", 0.7, np.linspace(0, 1, 30), n_test=10, num_runs=4,
      rng=np.random.default_rng(0)):
    pass
  module = __import__(f"heldout_tf.cli.{command}", fromlist=["main"])
  for kind, out in _destinations(tmp_path).items():
    argv = ["--root", root, "--experiment", "mnist-mlp", "--out", str(out),
            "--noprogress"]
    if command == "report":
      argv.append("--noimages")
    with pytest.raises(SystemExit) as e:
      cli.run(module.main, argv)
    assert e.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: cannot write {out}: it is {kind}, not a "
                   "regular file (remove it or choose another path)"], err


def test_temporaries_of_killed_writers_are_removed_by_the_next_write(
    tmp_path):
  run_dir = tmp_path / "run"
  run_dir.mkdir()
  dead, live = _dead_pid(), os.getppid()
  stale = [run_dir / f".tmp-{dead}-abc{layout.AUX_FILENAME}",
           run_dir / f".tmp-{dead}-xyzsignals.npz"]
  alive = run_dir / f".tmp-{live}-abc{layout.AUX_FILENAME}"
  for path in stale + [alive]:
    path.write_bytes(b"half")
  n = 6
  subset = np.array([0, 2, 4])
  removed = np.array([1, 3, 5])
  runs_lib.write_aux(
      str(run_dir), correctness={"train": np.ones(3, bool),
                                 "removed": np.zeros(3, bool),
                                 "test": np.ones(2, bool)},
      index={"train": subset, "removed": removed, "test": np.arange(2)},
      subsample_idx=subset)
  assert not any(p.exists() for p in stale)
  assert alive.exists()  # A writer still at work keeps its file.
  assert len(runs_lib.read_aux(str(run_dir))["index_train"]) + 3 == n
