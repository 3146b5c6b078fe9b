"""Two `heldout train` processes on one --root: every run is trained once,
to the bytes one writer writes, and both exit 0."""

import os
import re
import subprocess
import sys
import time

import pytest

from heldout_tf import collection
from heldout_tf.core import files

ROOT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARGV = ["--dataset", "digits", "--train_size", "300", "--test_size", "50",
        "--model", "mlp", "--trainer", "group", "--group_size", "1",
        "--precision", "float32", "--epochs", "2", "--num_runs", "6",
        "--noprogress"]
NUM_RUNS = 6


def _train(root, *extra):
  env = dict(os.environ, PYTHONPATH=ROOT_DIR, TF_NUM_INTRAOP_THREADS="1",
             TF_NUM_INTEROP_THREADS="1")
  return subprocess.Popen(
      [sys.executable, "-m", "heldout_tf.cli.train", *ARGV, "--root",
       str(root), *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      text=True, env=env, cwd=ROOT_DIR)


def _files(root):
  """{relative path: bytes} of every file of the collection's runs."""
  out = {}
  base = os.path.join(str(root), "digits-mlp", "0.7")
  for directory, _, names in os.walk(base):
    for name in names:
      path = os.path.join(directory, name)
      with open(path, "rb") as f:
        out[os.path.relpath(path, base)] = f.read()
  return out


@pytest.mark.slow
@pytest.mark.parametrize("second", [[], ["--shard", "1/2"]])
def test_two_writers_train_every_run_once_to_one_writers_bytes(tmp_path,
                                                               second):
  reference = _train(tmp_path / "one")
  assert reference.wait(timeout=600) == 0, reference.stderr.read()
  root = tmp_path / "two"
  store = collection.Store(str(root), "digits-mlp", 0.7)
  # A third writer holds run 0's block while both start: both skip it,
  # share the others, then wait for it.
  os.makedirs(store.run_dir(0))
  lock = files.try_lock(store.run_dir(0))
  procs = [_train(root), _train(root, *second)]
  try:
    deadline = time.monotonic() + 600
    while store.finished_runs() != list(range(1, NUM_RUNS)):
      assert time.monotonic() < deadline, store.finished_runs()
      # The first wants run 0: it waits (the second, sharded, may be done).
      assert procs[0].poll() is None, procs[0].stderr.read()
      time.sleep(0.2)
  finally:
    files.unlock(lock)
  outs = [p.communicate(timeout=600) for p in procs]
  for proc, (out, err) in zip(procs, outs):
    assert proc.returncode == 0, err
    assert "cannot write" not in err and "Traceback" not in err
  # The first one (all runs) skipped the held block and said so once.
  said = [line for line in outs[0][0].splitlines()
          if "another process is training" in line]
  assert said == [f"{store.path}: another process is training runs 0; "
                  "training the other blocks first, then waiting for the "
                  "ones it holds."]
  trained = [int(m.group(1)) if m else 0 for m in (
      re.search(r"trained (\d+) runs", out) for out, _ in outs)]
  assert sum(trained) == NUM_RUNS, [out for out, _ in outs]
  assert store.finished_runs() == list(range(NUM_RUNS))
  assert _files(root) == _files(tmp_path / "one")
