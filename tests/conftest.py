"""Shared offline fixtures: a synthetic cifar10:3.0.2 and released-layout
runs; `imports_tensorflow`, whether some code pulls TensorFlow in."""

import os
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # pylint: disable=g-import-not-at-top

from heldout_tf import models  # pylint: disable=g-import-not-at-top
from heldout_tf import synthetic  # pylint: disable=g-import-not-at-top

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENT = "cifar10-inception"
RATIO = 0.7
NUM_RUNS = 3


@pytest.fixture(scope="session")
def cifar10(tmp_path_factory):
  """`(data_dir, arrays)` of a tiny synthetic tfds cifar10:3.0.2."""
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  arrays = synthetic.write_synthetic_cifar(data_dir)
  return data_dir, arrays


@pytest.fixture(scope="session")
def release_root(tmp_path_factory, cifar10):
  """A root with NUM_RUNS cifar10-inception runs at RATIO, made by our model."""
  _, arrays = cifar10
  root = str(tmp_path_factory.mktemp("release"))
  model = models.build_model("small_inception", 10)
  for run in range(NUM_RUNS):
    synthetic.write_release_run(root, EXPERIMENT, RATIO, run, model,
                                "small_inception", arrays, seed=run,
                                step=1000 + run, epoch=20 + run)
  return root


@pytest.fixture
def imports_tensorflow():
  """`imports_tensorflow(code)`: whether running `code` in a fresh Python
  (this checkout first on its path) imports TensorFlow."""

  def run(code: str) -> bool:
    out = subprocess.run(
        [sys.executable, "-c",
         code + "\nimport sys\nprint('tensorflow' in sys.modules)"],
        capture_output=True, text=True, cwd=REPO, check=True)
    last = out.stdout.strip().splitlines()[-1]
    assert last in ("True", "False"), out.stdout
    return last == "True"

  return run


@pytest.fixture(autouse=True)
def _absl_logger_as_it_was():
  """Commands called in-process set up the `absl` logger for a command's
  process (`core.startup.kit_warning_format`: its own `warning: ...`
  handler, no propagation), and that would last for the rest of the
  session. Each test starts with absl's records propagating (so `caplog`
  sees them) and without that handler (a command adds it again), and the
  logger is put back as it was afterwards."""
  import logging  # pylint: disable=g-import-not-at-top
  logger = logging.getLogger("absl")
  handlers, propagate = list(logger.handlers), logger.propagate
  logger.handlers[:] = []
  logger.propagate = True
  yield
  logger.handlers[:] = handlers
  logger.propagate = propagate
