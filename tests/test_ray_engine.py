"""The Ray engine reproduces the local engine byte for byte (one machine).

`collection.train(..., engine="ray")` against `engine="local"` (the loop
both MNIST pipelines run), `estimates.on_ray` against `estimates.compute`.
A local Ray instance (2 CPUs, no dashboard, never a cluster) is started once
for the module; every test trains or estimates a tiny collection (digits,
200 training examples, 1 epoch, 6 runs in blocks of 2).
"""

import dataclasses
import os
import shutil
import socket
import sys
import threading
import time
import zipfile

import numpy as np
import pytest
import tensorflow as tf

ray = pytest.importorskip("ray")

# pylint: disable=g-import-not-at-top
from heldout_tf.collection import checkpoints
from heldout_tf import collection
from heldout_tf.core import errors
from heldout_tf import estimates
from heldout_tf.collection import layout
from heldout_tf.core import raycluster
from heldout_tf.collection import runs as runs_lib
from heldout_tf.estimates import on_ray
# pylint: enable=g-import-not-at-top

pytestmark = pytest.mark.slow

EXPERIMENT = "mnist-mlp"
RATIO = 0.7
NUM_RUNS = 6
GROUP_SIZE = 2
TRAIN_SIZE, TEST_SIZE = 200, 100


def tiny_blocks(kill_marker=None, env_dir=None, driver=None):
  """The stacked engine's block trainer on the first 200/100 embedded
  digits, 1 epoch.

  With `kill_marker` (a path), a worker process (not the `driver` pid)
  building it dies (`os._exit(1)`) right after the first run it writes,
  once: the marker file records that it happened. With `env_dir`, each
  process building it writes its TensorFlow thread settings to a file
  there.
  """
  if env_dir is not None:
    with open(os.path.join(env_dir, str(os.getpid())), "w") as f:
      f.write(" ".join(os.environ.get(name, "unset") for name in (
          "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS",
          "OMP_NUM_THREADS")))
  # pylint: disable=g-import-not-at-top
  from heldout_tf.collection import provenance
  from heldout_tf.data import image_data
  from heldout_tf.data import sources
  from heldout_tf.training import blocks
  from heldout_tf.training import recipes
  from heldout_tf.training import settings as settings_lib
  # pylint: enable=g-import-not-at-top
  data = image_data.first_examples(sources.load("digits"), TRAIN_SIZE,
                                   TEST_SIZE)
  settings = settings_lib.TrainSettings(
      recipes.get("mnist-mlp").replace(epochs=1), "mlp", RATIO,
      trainer="stacked")
  if kill_marker is not None and os.getpid() != driver:
    _die_after_first_write(kill_marker)
  return blocks.ModelBlocks(settings, provenance.DataSource("digits"),
                            GROUP_SIZE, data=data)


def _die_after_first_write(marker):
  """Makes this process exit hard after its first `write_run`, if no
  process did so before (the marker file exists then)."""
  write_run = collection.Store.write_run

  def write_then_die(self, run, **kwargs):
    write_run(self, run, **kwargs)
    if not os.path.exists(marker):
      with open(marker, "w") as f:
        f.write(f"killed after writing run {run}\n")
      os._exit(1)  # pylint: disable=protected-access

  collection.Store.write_run = write_then_die


def _spec(root, **kwargs):
  return collection.Spec(
      root=str(root), experiment=EXPERIMENT, ratio=RATIO,
      group_size=GROUP_SIZE, factory=tiny_blocks,
      config={"group_size": GROUP_SIZE, "train_size": TRAIN_SIZE}, **kwargs)


def _train(spec, runs=range(NUM_RUNS), engine="ray", **kwargs):
  return collection.train(spec, runs, engine=engine, progress=False,
                          **kwargs)


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
  with pytest.raises(raycluster.RayUnavailableError, match="ray start --head"):
    _train(_spec(tmp_path), address=address)


def test_a_listener_that_is_not_ray_fails_in_seconds(tmp_path, monkeypatch):
  # A plain TCP server on this machine that accepts and never answers:
  # Ray itself would retry for minutes.
  assert not ray.is_initialized()
  monkeypatch.setattr(raycluster, "HANDSHAKE_SECONDS", 2.0)
  accepted = []
  with socket.socket() as server:
    server.bind(("127.0.0.1", 0))
    server.listen()
    address = f"127.0.0.1:{server.getsockname()[1]}"
    thread = threading.Thread(target=lambda: accepted.append(
        server.accept()), daemon=True)
    thread.start()
    start = time.monotonic()
    with pytest.raises(raycluster.RayUnavailableError,
                       match=f"{address} .*not a Ray head"):
      _train(_spec(tmp_path), address=address)
    assert time.monotonic() - start < 30
    thread.join(5)
    for conn, _ in accepted:
      conn.close()
  assert accepted, "the check never connected"
  assert not ray.is_initialized()


def test_a_listener_speaking_another_protocol_is_refused(monkeypatch):
  answers = []

  def http_server(server):
    conn, _ = server.accept()
    conn.recv(1024)
    conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
    answers.append(conn)

  with socket.socket() as server:
    server.bind(("127.0.0.1", 0))
    server.listen()
    thread = threading.Thread(target=http_server, args=(server,),
                              daemon=True)
    thread.start()
    address = f"127.0.0.1:{server.getsockname()[1]}"
    with pytest.raises(raycluster.RayUnavailableError, match="gRPC"):
      raycluster.check_head(address, timeout=5)
    thread.join(5)
  assert answers
  answers[0].close()


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
  report = _train(_spec(root), engine="local")
  assert report["trained"] == NUM_RUNS
  return _collection(root)


def test_ray_training_equals_local_training(ray_instance, local_collection,
                                            tmp_path):
  del ray_instance
  root, env_dir = tmp_path / "out", tmp_path / "env"
  env_dir.mkdir()
  spec = _spec(root, factory_args=(None, str(env_dir)))
  report = _train(spec)
  assert report["trained"] == NUM_RUNS and report["skipped"] == 0
  assert report["tasks"] == NUM_RUNS // GROUP_SIZE
  _assert_same_collection(_collection(root), local_collection)
  # Each worker's TensorFlow used the task's one CPU.
  workers = [w for w in os.listdir(env_dir) if w != str(os.getpid())]
  assert workers and {(env_dir / w).read_text() for w in workers} == {
      "1 1 1"}
  # Re-running finds every run finished: nothing is submitted.
  again = _train(spec)
  assert again["trained"] == 0 and again["skipped"] == NUM_RUNS
  assert again["tasks"] == 0


def test_killed_worker_is_retried_without_duplicate_or_partial_run(
    ray_instance, local_collection, tmp_path):
  del ray_instance
  root, marker = tmp_path / "out", str(tmp_path / "killed")
  spec = _spec(root, factory_args=(marker, None, os.getpid()))
  report = _train(spec)
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
    _train(_spec(root))
  monkeypatch.undo()
  store = collection.Store(str(root), EXPERIMENT, RATIO)
  done = [r for r in range(NUM_RUNS) if store.is_finished(r, True)]
  assert len(done) >= GROUP_SIZE
  stamps = {r: os.stat(os.path.join(store.run_dir(r),
                                    layout.AUX_FILENAME)).st_mtime_ns
            for r in done}
  report = _train(_spec(root))
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
  _train(_spec(tmp_path), [0, 1], engine="local")
  spec = _spec(tmp_path)
  spec = dataclasses.replace(spec, config=dict(spec.config,
                                               train_size=TRAIN_SIZE + 1))
  with pytest.raises(errors.ConfigError, match="train_size"):
    _train(spec)


def test_a_ray_worker_takes_the_blocks_lock_like_a_local_writer(
    ray_instance, local_collection, tmp_path):
  del ray_instance
  from heldout_tf.core import files  # pylint: disable=g-import-not-at-top
  root = tmp_path / "out"
  store = collection.Store(str(root), EXPERIMENT, RATIO)
  os.makedirs(store.run_dir(0))  # Block 0 (runs 0, 1): another writer's.
  lock = files.try_lock(store.run_dir(0))
  said, report = [], {}
  thread = threading.Thread(target=lambda: report.update(_train(
      _spec(root), say=said.append)))
  thread.start()
  try:
    deadline = time.monotonic() + 300
    # Ray runs tasks in no set order: the busy block's answer can reach the
    # driver after the other blocks are on disk.
    while (store.finished_runs() != list(range(GROUP_SIZE, NUM_RUNS))
           or not said):
      assert time.monotonic() < deadline, (store.finished_runs(), said)
      assert thread.is_alive()
      time.sleep(0.1)
    assert said == [f"{store.path}: another process is training runs 0..1; "
                    "training the other blocks first, then waiting for the "
                    "ones it holds."]
    # The other writer trains its block meanwhile (same settings).
    tiny_blocks().train_block(store, list(range(GROUP_SIZE)))
  finally:
    files.unlock(lock)
    thread.join(300)
  assert (report["trained"], report["by_others"]) == (
      NUM_RUNS - GROUP_SIZE, GROUP_SIZE)
  _assert_same_collection(_collection(root), local_collection)
  assert not _leftovers(str(root))


def test_missing_ray_is_a_clear_error(monkeypatch, tmp_path):
  monkeypatch.setitem(sys.modules, "ray", None)
  with pytest.raises(raycluster.RayUnavailableError, match=r"\.\[ray\]"):
    _train(_spec(tmp_path))


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
    store = collection.Store(root, EXPERIMENT, ratio)
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
  got = on_ray.estimate_on_ray(
      synthetic_root, EXPERIMENT, what=what, memory_budget=budget,
      labels=labels, progress=False, **tiling)
  assert sorted(got) == sorted(local)
  assert (_saved_members(got, tmp_path / "ray.npz") ==
          _saved_members(local, tmp_path / "local.npz"))


def test_estimates_on_ray_of_one_ratio(ray_instance, synthetic_root,
                                       tmp_path):
  del ray_instance
  local = estimates.compute(estimates.load_runs(
      synthetic_root, EXPERIMENT, [0.7], progress=False), progress=False)
  got = on_ray.estimate_on_ray(synthetic_root, EXPERIMENT, [0.7],
                                      runs_per_task=5, progress=False)
  assert int(got["num_runs"]) == 23
  assert (_saved_members(got, tmp_path / "ray.npz") ==
          _saved_members(local, tmp_path / "local.npz"))


def test_bad_aux_file_in_a_task_is_a_clear_error(ray_instance,
                                                 synthetic_root, tmp_path):
  del ray_instance
  root = str(tmp_path / "copy")
  shutil.copytree(synthetic_root, root)
  bad = os.path.join(collection.Store(root, EXPERIMENT, 0.7).run_dir(11),
                     layout.AUX_FILENAME)
  with open(bad, "r+b") as f:
    f.truncate(100)
  with pytest.raises(runs_lib.AuxArraysError, match="0.7/11/aux_arrays"):
    on_ray.estimate_on_ray(root, EXPERIMENT, runs_per_task=8,
                               progress=False)


# ------------------------------------------------------ the command lines --


def test_mnist_train_engine_ray_equals_engine_local(ray_instance, tmp_path):
  del ray_instance
  from mnist_example import train  # pylint: disable=g-import-not-at-top
  base = ["--num_runs=5", "--group_size=2", "--epochs=1",
          "--train_size=200", "--test_size=100", "--dataset=digits",
          "--precision=float32", "--stage=train", "--noprogress"]
  local = train.run(*train.parse_args(
      base + ["--root", str(tmp_path / "local")]))
  got = train.run(*train.parse_args(
      base + ["--root", str(tmp_path / "ray"), "--engine", "ray"]))
  assert local["train"][0]["trained"] == got["train"][0]["trained"] == 5
  _assert_same_collection(_collection(tmp_path / "local"),
                          _collection(tmp_path / "ray"))
  assert not _leftovers(tmp_path / "ray")


def test_estimate_engine_ray_writes_the_local_file(ray_instance,
                                                   synthetic_root, tmp_path):
  del ray_instance
  from heldout_tf.cli import estimate  # pylint: disable=g-import-not-at-top
  args = ["--root", synthetic_root, "--experiment", EXPERIMENT]
  estimate.main(args + ["--out", str(tmp_path / "local.npz")])
  estimate.main(args + ["--out", str(tmp_path / "ray.npz"),
                        "--engine", "ray"])
  assert (_npz_members(str(tmp_path / "local.npz")) ==
          _npz_members(str(tmp_path / "ray.npz")))


def test_quality_engine_ray_equals_engine_local(ray_instance, tmp_path):
  del ray_instance
  from heldout_tf.collection import signals  # pylint: disable=g-import-not-at-top
  from mnist_example import quality  # pylint: disable=g-import-not-at-top
  args = ["--num_runs", "4", "--group_size", "2", "--epochs", "1",
          "--ssft_epochs", "1", "--train_size", "200", "--test_size", "100",
          "--dataset", "digits", "--removal_models", "0",
          "--trajectory_runs", "1", "--noprogress"]
  local = quality.run(args + ["--root", str(tmp_path / "local")])
  got = quality.run(args + ["--root", str(tmp_path / "ray"), "--engine",
                            "ray"])
  assert local.training["trained"] == got.training["trained"] == 4
  _assert_same_collection(_collection(tmp_path / "local"),
                          _collection(tmp_path / "ray"))
  for run in range(4):
    paths = [signals.signals_path(layout.run_dir(str(tmp_path / where),
                                                 EXPERIMENT, RATIO, run))
             for where in ("local", "ray")]
    assert _npz_members(paths[0]) == _npz_members(paths[1]), run
  assert os.path.isdir(os.path.join(
      layout.run_dir(str(tmp_path / "ray"), EXPERIMENT, RATIO, 0),
      layout.TRAJECTORY_DIRNAME))
