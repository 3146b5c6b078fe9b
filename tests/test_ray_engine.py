"""The Ray engine reproduces the local engine byte for byte (one machine).

A local Ray instance (2 CPUs, no dashboard, never a cluster) is started once
for the module; every test trains or estimates a tiny collection (digits,
200 training examples, 1 epoch, 6 runs in blocks of 2).
"""

import dataclasses
import os
import shutil
import socket
import sys
import zipfile

import numpy as np
import pytest
import tensorflow as tf

ray = pytest.importorskip("ray")

from heldout_tf import checkpoints  # pylint: disable=g-import-not-at-top
from heldout_tf import estimates  # pylint: disable=g-import-not-at-top
from heldout_tf import layout  # pylint: disable=g-import-not-at-top
from heldout_tf import ray_engine  # pylint: disable=g-import-not-at-top
from heldout_tf import runs as runs_lib  # pylint: disable=g-import-not-at-top
from heldout_tf import runstore  # pylint: disable=g-import-not-at-top

pytestmark = pytest.mark.slow

EXPERIMENT = "mnist-mlp"
RATIO = 0.7
NUM_RUNS = 6
GROUP_SIZE = 2
TRAIN_SIZE, TEST_SIZE = 200, 100


def tiny_inputs(kill_marker=None, env_dir=None) -> ray_engine.BlockInputs:
  """The first 200/100 embedded digits and a 1-epoch trainer.

  With `kill_marker` (a path), the worker process building these inputs
  dies (`os._exit(1)`) right after the first run it writes, once: the
  marker file records that it happened. With `env_dir`, each process
  building them writes its TensorFlow thread settings to a file there.
  """
  if env_dir is not None:
    with open(os.path.join(env_dir, str(os.getpid())), "w") as f:
      f.write(" ".join(os.environ.get(name, "unset") for name in (
          "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS",
          "OMP_NUM_THREADS")))
  from heldout_tf import training  # pylint: disable=g-import-not-at-top
  from mnist_example import data as data_lib  # pylint: disable=g-import-not-at-top
  data = data_lib.load("digits")
  config = training.TrainConfig(epochs=1, num_classes=data_lib.NUM_CLASSES)
  images = data.train_images[:TRAIN_SIZE]
  labels = data.train_labels[:TRAIN_SIZE]
  if kill_marker is not None:
    _die_after_first_write(kill_marker)
  return ray_engine.BlockInputs(
      trainer=training.EnsembleTrainer(images, labels, config),
      train_images=images, train_labels=labels,
      test_images=data.test_images[:TEST_SIZE],
      test_labels=data.test_labels[:TEST_SIZE])


def _die_after_first_write(marker):
  """Makes this process exit hard after its first `write_run`, if no
  process did so before (the marker file exists then)."""
  write_run = runstore.RunStore.write_run

  def write_then_die(self, run, **kwargs):
    write_run(self, run, **kwargs)
    if not os.path.exists(marker):
      with open(marker, "w") as f:
        f.write(f"killed after writing run {run}\n")
      os._exit(1)  # pylint: disable=protected-access

  runstore.RunStore.write_run = write_then_die


def _spec(root, **kwargs):
  return ray_engine.TrainSpec(
      root=str(root), experiment=EXPERIMENT, ratio=RATIO,
      group_size=GROUP_SIZE, inputs=tiny_inputs,
      config={"group_size": GROUP_SIZE, "train_size": TRAIN_SIZE}, **kwargs)


def _npz_members(path):
  """{member name: its .npy bytes (header, dtype, shape and data)}."""
  with zipfile.ZipFile(path) as zf:
    return {name: zf.read(name) for name in zf.namelist()}


def _collection(root):
  """{run: (aux_arrays.npz members, checkpoint values)} under `root`."""
  out = {}
  for found in layout.list_runs(str(root), EXPERIMENT, [RATIO]):
    aux = _npz_members(os.path.join(found.path, layout.AUX_FILENAME))
    prefix = checkpoints.find_checkpoint(found.path)
    reader = tf.train.load_checkpoint(prefix)
    values = {name: reader.get_tensor(name)
              for name in reader.get_variable_to_shape_map()}
    out[found.run] = (aux, values)
  return out


def _assert_same_collection(a, b):
  assert sorted(a) == sorted(b)
  for run in a:
    aux_a, ckpt_a = a[run]
    aux_b, ckpt_b = b[run]
    assert aux_a == aux_b, f"run {run}: aux_arrays.npz members differ"
    assert sorted(ckpt_a) == sorted(ckpt_b), f"run {run}"
    for name in ckpt_a:
      assert np.asarray(ckpt_a[name]).tobytes() == np.asarray(
          ckpt_b[name]).tobytes(), f"run {run} {name}"


def _leftovers(root):
  """Temporary files anywhere under `root` (a half-written file)."""
  return [os.path.join(d, f) for d, _, files in os.walk(root)
          for f in files if f.startswith(".tmp")]


def test_unreachable_cluster_is_a_clear_error_at_once(tmp_path):
  # First in the module: the module's Ray instance would be used instead.
  assert not ray.is_initialized()
  with socket.socket() as sock:  # A port nothing listens on.
    sock.bind(("127.0.0.1", 0))
    address = f"127.0.0.1:{sock.getsockname()[1]}"
  with pytest.raises(ray_engine.RayUnavailableError, match="ray start --head"):
    ray_engine.train_on_ray(_spec(tmp_path), range(NUM_RUNS),
                            address=address, progress=False)


@pytest.fixture(scope="module")
def ray_instance():
  # Workers cannot import this test module: ship its functions by value.
  ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
  ray.init(num_cpus=2, include_dashboard=False, address="local",
           configure_logging=False,
           runtime_env={"env_vars": {"TF_CPP_MIN_LOG_LEVEL": "3"}})
  yield ray
  ray.shutdown()


@pytest.fixture(scope="module")
def local_collection(tmp_path_factory):
  root = tmp_path_factory.mktemp("local")
  report = ray_engine.train_locally(_spec(root), range(NUM_RUNS),
                                    progress=False)
  assert report["trained"] == NUM_RUNS
  return _collection(root)


def test_ray_training_equals_local_training(ray_instance, local_collection,
                                            tmp_path):
  del ray_instance
  root, env_dir = tmp_path / "out", tmp_path / "env"
  env_dir.mkdir()
  spec = _spec(root, inputs_args=(None, str(env_dir)))
  report = ray_engine.train_on_ray(spec, range(NUM_RUNS), progress=False)
  assert report["trained"] == NUM_RUNS and report["skipped"] == 0
  assert report["tasks"] == NUM_RUNS // GROUP_SIZE
  _assert_same_collection(_collection(root), local_collection)
  # Each worker's TensorFlow used the task's one CPU.
  workers = os.listdir(env_dir)
  assert workers and {(env_dir / w).read_text() for w in workers} == {
      "1 1 1"}
  # Re-running finds every run finished: nothing is submitted.
  again = ray_engine.train_on_ray(spec, range(NUM_RUNS), progress=False)
  assert again["trained"] == 0 and again["skipped"] == NUM_RUNS
  assert again["tasks"] == 0


def test_killed_worker_is_retried_without_duplicate_or_partial_run(
    ray_instance, local_collection, tmp_path):
  del ray_instance
  root, marker = tmp_path / "out", str(tmp_path / "killed")
  spec = _spec(root, inputs_args=(marker,))
  report = ray_engine.train_on_ray(spec, range(NUM_RUNS), progress=False)
  assert os.path.exists(marker), "no worker was killed"
  assert report["trained"] == NUM_RUNS
  _assert_same_collection(_collection(root), local_collection)
  assert not _leftovers(str(root))
  for found in layout.list_runs(str(root), EXPERIMENT, [RATIO]):
    ckpts = [f for f in os.listdir(os.path.join(
        found.path, layout.CHECKPOINTS_DIRNAME)) if f.endswith(".index")]
    assert len(ckpts) == 1, (found.run, ckpts)


def test_resume_after_interrupted_driver(ray_instance, local_collection,
                                         tmp_path, monkeypatch):
  root = tmp_path / "out"
  real_wait = ray_instance.wait
  calls = []

  def wait_then_interrupt(*args, **kwargs):
    calls.append(1)
    if len(calls) == 2:  # The first block is done: the user presses Ctrl-C.
      raise KeyboardInterrupt
    return real_wait(*args, **kwargs)

  monkeypatch.setattr(ray_instance, "wait", wait_then_interrupt)
  with pytest.raises(KeyboardInterrupt):
    ray_engine.train_on_ray(_spec(root), range(NUM_RUNS), progress=False)
  monkeypatch.undo()
  store = runstore.RunStore(str(root), EXPERIMENT, RATIO)
  done = [r for r in range(NUM_RUNS) if store.is_finished(r, True)]
  assert len(done) >= GROUP_SIZE
  stamps = {r: os.stat(os.path.join(store.run_dir(r),
                                    layout.AUX_FILENAME)).st_mtime_ns
            for r in done}
  report = ray_engine.train_on_ray(_spec(root), range(NUM_RUNS),
                                   progress=False)
  assert report["skipped"] == len(done)
  assert report["trained"] == NUM_RUNS - len(done)
  for run, stamp in stamps.items():  # Finished runs were not rewritten.
    assert os.stat(os.path.join(store.run_dir(run),
                                layout.AUX_FILENAME)).st_mtime_ns == stamp
  _assert_same_collection(_collection(root), local_collection)
  assert not _leftovers(str(root))


def test_other_config_on_disk_is_refused_before_any_task(ray_instance,
                                                         tmp_path):
  del ray_instance
  ray_engine.train_locally(_spec(tmp_path), [0, 1], progress=False)
  spec = _spec(tmp_path)
  spec.config = dict(spec.config, train_size=TRAIN_SIZE + 1)
  with pytest.raises(ray_engine.errors.ConfigError, match="train_size"):
    ray_engine.train_on_ray(spec, range(NUM_RUNS), progress=False)


def test_missing_ray_is_a_clear_error(monkeypatch, tmp_path):
  monkeypatch.setitem(sys.modules, "ray", None)
  with pytest.raises(ray_engine.RayUnavailableError, match=r"\.\[ray\]"):
    ray_engine.train_on_ray(_spec(tmp_path), range(NUM_RUNS),
                            progress=False)


# --------------------------------------------------------------- estimates --

N_TRAIN, N_TEST = 300, 120
SMALL_BUDGET = 64 << 10  # Forces several row blocks per pairs task.


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
  """40 runs at two ratios whose test examples each follow one training
  example: plenty of memorization and high-influence pairs."""
  root = str(tmp_path_factory.mktemp("estimates"))
  rng = np.random.default_rng(0)
  partner = rng.integers(0, N_TRAIN, N_TEST)
  for ratio, num_runs in ((0.5, 17), (0.7, 23)):
    store = runstore.RunStore(root, EXPERIMENT, ratio)
    for run in range(num_runs):
      subset = np.sort(rng.choice(N_TRAIN, int(ratio * N_TRAIN),
                                  replace=False))
      mask = np.zeros(N_TRAIN, bool)
      mask[subset] = True
      store.write_run(
          run, subset=subset,
          correct_train=mask | (rng.random(N_TRAIN) < 0.6),
          correct_test=(mask[partner] & (rng.random(N_TEST) < 0.9))
          | (rng.random(N_TEST) < 0.3))
  return root


def _saved_members(result, path):
  estimates.save_estimates(str(path), result)
  return _npz_members(str(path))


@pytest.mark.parametrize("what,budget,tiling", [
    (("mem", "pairs", "cscores"), SMALL_BUDGET,
     dict(runs_per_task=7, test_examples_per_task=37)),
    (("mem", "infl", "pairs", "cscores"), "4MB", {}),
])
def test_estimates_on_ray_equal_local_estimates(ray_instance, synthetic_root,
                                                tmp_path, what, budget,
                                                tiling):
  del ray_instance
  labels = np.arange(N_TRAIN) % 10
  local = estimates.compute(
      estimates.load_runs(synthetic_root, EXPERIMENT, progress=False), what,
      memory_budget=budget, labels=labels, progress=False)
  assert len(local["tr_idx"]) > 10  # The comparison covers real pairs.
  on_ray = ray_engine.estimate_on_ray(
      synthetic_root, EXPERIMENT, what=what, memory_budget=budget,
      labels=labels, progress=False, **tiling)
  assert sorted(on_ray) == sorted(local)
  assert (_saved_members(on_ray, tmp_path / "ray.npz") ==
          _saved_members(local, tmp_path / "local.npz"))


def test_estimates_on_ray_of_one_ratio(ray_instance, synthetic_root,
                                       tmp_path):
  del ray_instance
  local = estimates.compute(estimates.load_runs(
      synthetic_root, EXPERIMENT, [0.7], progress=False), progress=False)
  on_ray = ray_engine.estimate_on_ray(synthetic_root, EXPERIMENT, [0.7],
                                      runs_per_task=5, progress=False)
  assert int(on_ray["num_runs"]) == 23
  assert (_saved_members(on_ray, tmp_path / "ray.npz") ==
          _saved_members(local, tmp_path / "local.npz"))


def test_bad_aux_file_in_a_task_is_a_clear_error(ray_instance,
                                                 synthetic_root, tmp_path):
  del ray_instance
  root = str(tmp_path / "copy")
  shutil.copytree(synthetic_root, root)
  bad = os.path.join(runstore.RunStore(root, EXPERIMENT, 0.7).run_dir(11),
                     layout.AUX_FILENAME)
  with open(bad, "r+b") as f:
    f.truncate(100)
  with pytest.raises(runs_lib.AuxArraysError, match="0.7/11/aux_arrays"):
    ray_engine.estimate_on_ray(root, EXPERIMENT, runs_per_task=8,
                               progress=False)


# ------------------------------------------------------ the command lines --


def test_mnist_train_engine_ray_equals_engine_local(ray_instance, tmp_path):
  del ray_instance
  from mnist_example import train  # pylint: disable=g-import-not-at-top
  base = train.Options(num_runs=5, group_size=2, epochs=1, train_size=200,
                       test_size=100, dataset="digits", precision="float32",
                       stage="train", progress=False)
  local = train.run(dataclasses.replace(base, out=str(tmp_path / "local")))
  on_ray = train.run(dataclasses.replace(base, out=str(tmp_path / "ray"),
                                         engine="ray"))
  assert local["train"]["trained"] == on_ray["train"]["trained"] == 5
  _assert_same_collection(_collection(tmp_path / "local"),
                          _collection(tmp_path / "ray"))
  assert not _leftovers(tmp_path / "ray")


def test_estimate_engine_ray_writes_the_local_file(ray_instance,
                                                   synthetic_root, tmp_path):
  del ray_instance
  from heldout_tf import estimate  # pylint: disable=g-import-not-at-top
  args = ["--root", synthetic_root, "--experiment", EXPERIMENT]
  estimate.main(args + ["--out", str(tmp_path / "local.npz")])
  estimate.main(args + ["--out", str(tmp_path / "ray.npz"),
                        "--engine", "ray"])
  assert (_npz_members(str(tmp_path / "local.npz")) ==
          _npz_members(str(tmp_path / "ray.npz")))


def test_quality_engine_ray_equals_engine_local(ray_instance, tmp_path):
  del ray_instance
  from heldout_tf import signals  # pylint: disable=g-import-not-at-top
  from mnist_example import quality  # pylint: disable=g-import-not-at-top
  args = ["--num_runs", "4", "--group_size", "2", "--epochs", "1",
          "--ssft_epochs", "1", "--train_size", "200", "--test_size", "100",
          "--dataset", "digits", "--removal_models", "0",
          "--trajectory_runs", "1", "--no_progress"]
  local = quality.run(quality.parse_args(
      args + ["--out", str(tmp_path / "local")]))
  on_ray = quality.run(quality.parse_args(
      args + ["--out", str(tmp_path / "ray"), "--engine", "ray"]))
  assert local["train"]["trained"] == on_ray["train"]["trained"] == 4
  _assert_same_collection(_collection(tmp_path / "local"),
                          _collection(tmp_path / "ray"))
  for run in range(4):
    paths = [signals.signals_path(layout.run_dir(str(tmp_path / where),
                                                 EXPERIMENT, RATIO, run))
             for where in ("local", "ray")]
    assert _npz_members(paths[0]) == _npz_members(paths[1]), run
  assert os.path.isdir(os.path.join(
      layout.run_dir(str(tmp_path / "ray"), EXPERIMENT, RATIO, 0),
      quality.TRAJECTORY_DIRNAME))
