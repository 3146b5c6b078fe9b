"""Tests of heldout_tf.collection: the store, blocks, shards and rules."""

import json
import os
import time

import numpy as np
import pytest

from heldout_tf.core import errors
from heldout_tf.collection import layout
from heldout_tf.collection import runs as runs_lib
from heldout_tf import collection

EXPERIMENT = "toy-mlp"


def _store(root, ratio=0.7):
  return collection.Store(str(root), EXPERIMENT, ratio)


def _write(store, run, n_train=10, n_test=4, save_checkpoint=None):
  rng = np.random.default_rng(run)
  subset = np.sort(rng.choice(n_train, 7, replace=False))
  store.write_run(run, subset=subset,
                  correct_train=rng.random(n_train) < 0.5,
                  correct_test=rng.random(n_test) < 0.5,
                  save_checkpoint=save_checkpoint)
  return subset


# ---------------------------------------------------------------- blocks --


@pytest.mark.parametrize("num_runs", [1, 5, 7, 10, 64])
@pytest.mark.parametrize("count", [1, 2, 3, 8])
@pytest.mark.parametrize("group_size", [1, 2, 3, 32])
def test_shards_are_whole_blocks_disjoint_and_complete(num_runs, count,
                                                       group_size):
  shards = [collection.shard_runs(num_runs, f"{i}/{count}", group_size)
            for i in range(count)]
  assert sorted(r for s in shards for r in s) == list(range(num_runs))
  owner = {}
  for i, shard in enumerate(shards):
    for run in shard:
      assert owner.setdefault(run // group_size, i) == i, "block split"


def test_groups_are_canonical_blocks_whatever_the_wanted_runs():
  assert collection.groups([5, 0, 1, 3, 9], 4) == [[0, 1, 3], [5], [9]]
  assert collection.groups(range(6), 2) == [[0, 1], [2, 3], [4, 5]]
  assert collection.block_runs(2, 4) == [8, 9, 10, 11]
  with pytest.raises(errors.UsageError, match="group size"):
    collection.groups([1], 0)


@pytest.mark.parametrize("text", ["2/2", "1", "a/b", "0/0", "-1/2", ""])
def test_bad_shard_is_a_usage_error_naming_the_flag(text):
  with pytest.raises(errors.UsageError, match="--shard"):
    collection.shard_runs(10, text, 2)


# ---------------------------------------------------------------- config --


def test_first_config_is_written_later_ones_must_match(tmp_path):
  store = _store(tmp_path)
  assert store.recorded_config() is None
  recorded = store.record_config({"epochs": 10, "hidden": (512, 256)})
  assert recorded == {"epochs": 10, "hidden": [512, 256]}
  with open(os.path.join(store.path, layout.CONFIG_FILENAME)) as f:
    assert json.load(f) == recorded
  assert store.record_config({"hidden": [512, 256], "epochs": 10}) == recorded
  # Something trained under it (a partial run): the config is the
  # collection's, and other settings are refused naming the keys.
  os.makedirs(os.path.join(store.run_dir(0), "partial"))
  with open(os.path.join(store.run_dir(0), "partial", "ckpt-1.index"),
            "w") as f:
    f.write("x")
  with pytest.raises(errors.ConfigError) as info:
    store.record_config({"epochs": 3, "hidden": [512, 256], "seed": 1})
  message = str(info.value)
  assert "epochs: on disk 10, now 3" in message
  assert "seed: on disk None, now 1" in message
  assert "hidden" not in message


def test_a_config_nothing_was_trained_under_is_replaced(tmp_path):
  store = _store(tmp_path)
  store.record_config({"epochs": 10, "lr": 1e30})
  os.makedirs(store.run_dir(0))  # An empty run directory is no work.
  said = []
  assert store.record_config({"epochs": 10, "lr": 0.1}, said.append) == {
      "epochs": 10, "lr": 0.1}
  with open(store.config_path) as f:
    assert json.load(f) == {"epochs": 10, "lr": 0.1}
  assert said == [f"{store.config_path}: replaced (nothing was trained "
                  "under it; lr: on disk 1e+30, now 0.1)"]


def test_require_config_says_train_first(tmp_path):
  with pytest.raises(collection.MissingConfigError, match="train first"):
    _store(tmp_path).require_config()


def test_corrupt_config_is_a_config_error(tmp_path):
  store = _store(tmp_path)
  os.makedirs(store.path)
  with open(store.config_path, "w") as f:
    f.write("{not json")
  with pytest.raises(errors.ConfigError, match="config.json: not JSON"):
    store.record_config({"a": 1})


def test_out_that_is_a_file_is_a_path_error(tmp_path):
  out = tmp_path / "file"
  out.write_text("not a directory")
  store = _store(out)
  with pytest.raises(errors.PathError, match="cannot write .*file"):
    store.record_config({"a": 1})
  with pytest.raises(errors.PathError, match="Not a directory"):
    store.require_config()


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="root writes into read-only directories")
def test_read_only_out_is_a_path_error(tmp_path):
  out = tmp_path / "ro"
  out.mkdir()
  out.chmod(0o500)
  try:
    with pytest.raises(errors.PathError, match="cannot write"):
      _store(out).record_config({"a": 1})
  finally:
    out.chmod(0o700)


# ---------------------------------------------------------- finished runs --


def test_write_run_writes_the_released_layout(tmp_path):
  store = _store(tmp_path)
  subset = _write(store, 3)
  aux = runs_lib.read_aux(store.run_dir(3))
  np.testing.assert_array_equal(aux["subsample_idx"], subset)
  np.testing.assert_array_equal(aux["index_train"], subset)
  np.testing.assert_array_equal(
      np.sort(np.concatenate([aux["index_train"], aux["index_removed"]])),
      np.arange(10))
  np.testing.assert_array_equal(aux["index_test"], np.arange(4))
  rng = np.random.default_rng(3)
  rng.choice(10, 7, replace=False)
  correct_train = rng.random(10) < 0.5
  np.testing.assert_array_equal(aux["correctness_train"],
                                correct_train[subset])
  np.testing.assert_array_equal(aux["correctness_removed"],
                                np.delete(correct_train, subset))
  assert store.finished_runs() == [3]


def test_checkpoint_is_saved_before_the_aux_arrays(tmp_path):
  store = _store(tmp_path)
  seen = []

  def save(directory):
    seen.append((directory, os.path.exists(
        os.path.join(store.run_dir(0), layout.AUX_FILENAME))))
    os.makedirs(directory)
    for suffix in (".index", ".data-00000-of-00001"):
      open(os.path.join(directory, "ckpt-1" + suffix), "w").close()

  _write(store, 0, save_checkpoint=save)
  assert seen == [(os.path.join(store.run_dir(0), "checkpoints"), False)]
  assert store.is_finished(0, need_checkpoint=True)


def test_a_failed_checkpoint_save_leaves_the_run_unfinished(tmp_path):
  store = _store(tmp_path)

  def save(directory):
    raise KeyboardInterrupt  # A kill while saving.

  with pytest.raises(KeyboardInterrupt):
    _write(store, 0, save_checkpoint=save)
  assert store.unfinished([0], need_checkpoint=False) == [0]
  _write(store, 0)
  _write(store, 0)  # Repeating a write is harmless.
  assert store.unfinished([0, 1], need_checkpoint=False) == [1]
  assert not store.is_finished(0, need_checkpoint=True)  # No checkpoint.


def test_check_complete_refuses_missing_and_extra_runs(tmp_path):
  store = _store(tmp_path)
  for run in (0, 1, 3):
    _write(store, run)
  with pytest.raises(collection.IncompleteRunsError,
                     match=r"1 of the 4 runs .* runs 2\. Train them"):
    store.check_complete(4)
  with pytest.raises(collection.IncompleteRunsError,
                     match=r"beyond --num_runs=2 \(runs 3\.\.3\)"):
    store.check_complete(2)
  _write(store, 2)
  store.check_complete(4)
  assert store.finished_runs() == [0, 1, 2, 3]


def test_runs_of_other_ratios_are_not_counted(tmp_path):
  _write(_store(tmp_path, 0.5), 0)
  store = _store(tmp_path, 0.7)
  assert store.finished_runs() == []
  assert store.path == os.path.join(str(tmp_path), EXPERIMENT, "0.7")


# ------------------------------------------------------------------ rules --


def test_auto_precision_takes_the_recorded_one_without_detecting(
    monkeypatch):
  from heldout_tf.core import hardware  # pylint: disable=g-import-not-at-top

  def no_detection(*args):
    raise AssertionError("detected although a precision is recorded")

  monkeypatch.setattr(hardware, "cpu_flags", no_detection)
  monkeypatch.setattr(hardware, "gpu_bf16", no_detection)
  chosen = collection.resolve_precision("auto", {"precision": "bfloat16"})
  assert chosen.name == "bfloat16" and "recorded" in chosen.reason
  with pytest.raises(errors.ConfigError,
                     match="--precision float32 .* differs .* bfloat16"):
    collection.resolve_precision("float32", {"precision": "bfloat16"})


def test_auto_precision_of_a_new_collection_follows_the_hardware(
    monkeypatch):
  from heldout_tf.core import hardware  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(hardware, "gpu_bf16", lambda: False)
  monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset(["avx2"]))
  assert collection.resolve_precision("auto", None).name == "float32"
  monkeypatch.setattr(hardware, "cpu_flags",
                      lambda: frozenset(["avx512_bf16"]))
  chosen = collection.resolve_precision("auto", {})
  assert chosen.name == "bfloat16" and "avx512_bf16" in chosen.reason


def test_group_size_zero_is_the_recorded_or_a_chosen_one():
  resolve = collection.resolve_group_size
  assert resolve(0, {"group_size": 4}, num_runs=100,
                 choose=lambda: 9)[0] == 4
  assert resolve(0, None, num_runs=100, choose=lambda: 9) == (
      9, "chosen from the available memory")
  assert resolve(0, None, num_runs=3, choose=lambda: 9)[0] == 3
  assert resolve(5, None, num_runs=3) == (5, "from --group_size")
  with pytest.raises(errors.UsageError, match="--shard 1/2.*--group_size"):
    resolve(0, None, num_runs=10, shard="1/2")
  assert resolve(0, {"group_size": 4}, num_runs=10, shard="1/2")[0] == 4
  with pytest.raises(errors.ConfigError,
                     match="--group_size 3 differs from the group size 4"):
    resolve(3, {"group_size": 4}, num_runs=10)


@pytest.mark.parametrize("field, flag, value", [
    ("ratios", "ratios", (0.0,)), ("ratios", "ratios", (float("nan"),)),
    ("epochs", "epochs", -1), ("batch_size", "batch_size", -1),
    ("learning_rate", "learning_rate", float("inf")), ("seed", "seed", -1),
    ("num_runs", "num_runs", (0,)), ("group_size", "group_size", -1),
    ("group_size", "group_size", 10**6), ("precision", "precision", "half"),
    ("trainer", "trainer", "keras"), ("engine", "engine", "spark"),
    ("ray_address", "ray_address", "h:1"), ("shard", "shard", "2/2"),
])
def test_workflow_options_name_the_bad_flag(field, flag, value):
  # pylint: disable-next=g-import-not-at-top
  from heldout_tf.training import workflow
  with pytest.raises(errors.UsageError, match=f"--{flag}"):
    workflow.Options(dataset="digits", **{field: value}).check()


def test_workflow_options_are_the_flags_round_trip():
  # pylint: disable=g-import-not-at-top
  from heldout_tf.cli import train
  from heldout_tf.training import workflow
  # pylint: enable=g-import-not-at-top
  got = train.parse_args(["--dataset", "digits", "--root", "r", "--epochs",
                          "3", "--num_runs", "7", "--nosave_checkpoints",
                          "--noprogress"])
  assert got == workflow.Options(dataset="digits", root="r", num_runs=(7,),
                                 epochs=3, save_checkpoints=False,
                                 progress=False)
  with pytest.raises(errors.UsageError, match="--ray_address needs"):
    train.parse_args(["--dataset", "digits", "--ray_address", "h:1"])


# ------------------------------------------------- train(): any trainer --


class FakeBlocks:
  """A block trainer with no model at all: a run's arrays are a function of
  its block (as the stacked engine's are), so canonical blocks matter."""

  made = []

  def __init__(self, n_train, group_size):
    FakeBlocks.made.append(self)
    self.n_train, self.group_size = n_train, group_size
    self.trained_blocks = []

  def is_done(self, store, run):
    return store.is_finished(run, need_checkpoint=False)

  def train_block(self, store, runs):
    members = collection.block_of(runs, self.group_size)
    self.trained_blocks.append(members)
    todo = [r for r in runs if not self.is_done(store, r)]
    for run in todo:
      rng = np.random.default_rng([run, members[0], len(members)])
      store.write_run(run, subset=np.sort(rng.choice(self.n_train, 7,
                                                     replace=False)),
                      correct_train=rng.random(self.n_train) < 0.5,
                      correct_test=rng.random(4) < 0.5)
    return todo


def _fake_spec(root, group_size=3):
  return collection.Spec(str(root), EXPERIMENT, 0.7, group_size, FakeBlocks,
                         (10, group_size), config={"group_size": group_size})


def _aux_bytes(root, runs):
  return {r: open(os.path.join(_store(root).run_dir(r), layout.AUX_FILENAME),
                  "rb").read() for r in runs}


def test_train_makes_any_block_trainers_collection_by_canonical_blocks(
    tmp_path):
  FakeBlocks.made.clear()
  whole = collection.train(_fake_spec(tmp_path / "whole"), range(8),
                           progress=False)
  assert (whole["trained"], whole["skipped"], whole["tasks"]) == (8, 0, 3)
  assert len(FakeBlocks.made) == 1  # One block trainer per process.
  assert FakeBlocks.made[0].trained_blocks == [[0, 1, 2], [3, 4, 5],
                                               [6, 7, 8]]
  # Shards, then a partly finished block: the same bytes.
  parts = tmp_path / "parts"
  for shard in ("1/2", "0/2"):
    collection.train(_fake_spec(parts), collection.shard_runs(8, shard, 3),
                     progress=False)
  os.remove(os.path.join(_store(parts).run_dir(4), layout.AUX_FILENAME))
  again = collection.train(_fake_spec(parts), range(8), progress=False)
  assert (again["trained"], again["skipped"], again["tasks"]) == (1, 7, 1)
  assert FakeBlocks.made[-1].trained_blocks == [[3, 4, 5]]
  assert _aux_bytes(parts, range(8)) == _aux_bytes(tmp_path / "whole",
                                                   range(8))
  with open(_store(parts).config_path) as f:
    assert json.load(f) == {"group_size": 3}


def test_train_refuses_other_settings_and_bad_engines_before_any_work(
    tmp_path):
  collection.train(_fake_spec(tmp_path), [0], progress=False)
  with pytest.raises(errors.ConfigError, match="group_size: on disk 3"):
    collection.train(_fake_spec(tmp_path, group_size=2), [1],
                     progress=False)
  with pytest.raises(errors.UsageError, match="--ray_address needs"):
    collection.train(_fake_spec(tmp_path), [1], address="h:1",
                     progress=False)
  with pytest.raises(errors.UsageError, match="--engine"):
    collection.train(_fake_spec(tmp_path), [1], engine="spark",
                     progress=False)
  assert _store(tmp_path).finished_runs() == [0]


def test_a_worker_whose_tensorflow_import_failed_ends_itself(monkeypatch):
  # A task cancelled mid-import leaves TensorFlow half-registered; a later
  # task in that worker would fail forever ("already registered"). The
  # worker ends instead, so Ray retries on a fresh one.
  from heldout_tf.core import startup  # pylint: disable=g-import-not-at-top
  from heldout_tf.collection import engine  # pylint: disable=g-import-not-at-top
  exits = []

  def half_registered():
    raise ValueError("Name tf.RaggedTensorSpec has already been registered")

  def fake_exit(code):
    exits.append(code)
    raise SystemExit(code)

  monkeypatch.setattr(startup, "quiet_tensorflow", half_registered)
  monkeypatch.setattr(engine.os, "_exit", fake_exit)
  with pytest.raises(SystemExit):
    engine._import_tensorflow_or_exit()  # pylint: disable=protected-access
  assert exits == [1]
  monkeypatch.setattr(startup, "quiet_tensorflow", lambda: None)
  engine._import_tensorflow_or_exit()  # pylint: disable=protected-access
  assert exits == [1]


# ------------------------------------------------------ experiment names --

BAD_EXPERIMENTS = ["../../x", "..", ".", "/abs/x", "a/b", "a\\b", ""]


@pytest.mark.parametrize("name", BAD_EXPERIMENTS)
def test_an_experiment_is_one_directory_name_under_the_root(tmp_path, name):
  with pytest.raises(errors.UsageError) as info:
    layout.experiment_name(name)
  assert str(info.value).startswith(f"--experiment {name!r} ")
  for make_path in (lambda: collection.Store(str(tmp_path), name, 0.7),
                    lambda: layout.run_dir(str(tmp_path), name, 0.7, 0),
                    lambda: layout.list_runs(str(tmp_path), name)):
    with pytest.raises(errors.UsageError, match="one directory name"):
      make_path()
  assert not os.listdir(tmp_path)
  assert layout.experiment_name("cifar10-resnet9") == "cifar10-resnet9"


@pytest.mark.parametrize("command,required", [
    ("train", ["--dataset", "digits"]), ("quality", []),
    ("report", ["--out", "r.html"]), ("download", []),
    ("estimate", ["--root", "r", "--out", "e.npz"]),
    ("datamodels", ["--root", "r", "--fit_runs", "0-3", "--out", "d.npz"]),
    ("lds", ["--root", "r", "--eval_runs", "0-3", "--scores", "s.npz"]),
    ("export", ["--run_dir", "r", "--format", "saved_model", "--out", "o"])])
@pytest.mark.parametrize("name", ["../../x", "/abs", "a/b"])
def test_every_command_refuses_an_experiment_outside_its_root(
    command, required, name, capsys):
  module = __import__(f"heldout_tf.cli.{command}", fromlist=["main"])
  with pytest.raises(SystemExit) as info:
    module.build_parser().parse_args(["--experiment", name] + required)
  assert info.value.code == 2
  assert capsys.readouterr().err.strip().splitlines() == [
      f"error: argument --experiment: {name!r} holds a path separator: an "
      "experiment is one directory name under --root (e.g. cifar10-resnet9; "
      "no '/', '..' or absolute path)"]


# ---------------------------------------------------------- two writers --


def test_a_block_another_writer_holds_is_skipped_then_waited_for(tmp_path):
  import threading  # pylint: disable=g-import-not-at-top
  from heldout_tf.core import files  # pylint: disable=g-import-not-at-top
  FakeBlocks.made.clear()
  reference = collection.train(_fake_spec(tmp_path / "one"), range(8),
                               progress=False)
  assert reference["trained"] == 8
  root = tmp_path / "two"
  store = _store(root)
  os.makedirs(store.run_dir(3))  # Block 1 (runs 3..5): its lock.
  lock = files.try_lock(store.run_dir(3))
  said, report = [], {}
  thread = threading.Thread(target=lambda: report.update(collection.train(
      _fake_spec(root), range(8), progress=False, say=said.append)))
  thread.start()
  try:
    deadline = time.monotonic() + 60
    while store.finished_runs() != [0, 1, 2, 6, 7]:
      assert time.monotonic() < deadline, store.finished_runs()
      time.sleep(0.05)
    assert said == [f"{store.path}: another process is training runs 3..5; "
                    "training the other blocks first, then waiting for the "
                    "ones it holds."]
    assert thread.is_alive()  # Waiting for block 1.
    # The other writer trains block 1 (a writer of the same settings).
    FakeBlocks(10, 3).train_block(store, [3, 4, 5])
  finally:
    files.unlock(lock)
    thread.join(60)
  assert (report["trained"], report["by_others"], report["skipped"]) == (
      5, 3, 0)
  assert FakeBlocks.made[1].trained_blocks == [[0, 1, 2], [6, 7, 8],
                                               [3, 4, 5]]
  assert _aux_bytes(root, range(8)) == _aux_bytes(tmp_path / "one", range(8))
  # Locks are released: the next call takes the block again.
  os.remove(os.path.join(store.run_dir(4), layout.AUX_FILENAME))
  again = collection.train(_fake_spec(root), range(8), progress=False)
  assert (again["trained"], again["by_others"]) == (1, 0)
