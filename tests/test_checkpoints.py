"""Strict restore: exact values back, loud errors on any mismatch."""

import errno
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import sonnet as snt
import tensorflow as tf

from heldout_tf.collection import checkpoints
from heldout_tf.core import errors
from heldout_tf import models
from heldout_tf import synthetic


def built(arch="small_inception", num_classes=10, seed=None):
  model = models.build_model(arch, num_classes)
  if seed is None:
    return models.ensure_built(model, arch)
  return synthetic.randomize(model, arch, seed)


def saved_run(tmp_path, model, step=5):
  run = tmp_path / "run"
  checkpoints.save(model, str(run / "checkpoints"), step=step, epoch=3,
                   global_step=17)
  return run


def test_restore_gives_identical_logits_and_statistics(tmp_path):
  source = built(seed=1)
  run = saved_run(tmp_path, source)
  target = built(seed=2)
  images = tf.random.uniform((4, 32, 32, 3), seed=0)
  assert not np.allclose(source(images).numpy(), target(images).numpy())
  info = checkpoints.restore(target, str(run))
  np.testing.assert_array_equal(source(images).numpy(),
                                target(images).numpy())
  src = checkpoints.model_variables(source)
  for key, var in checkpoints.model_variables(target).items():
    np.testing.assert_array_equal(var.numpy(), src[key].numpy(), err_msg=key)
  assert (info.epoch, info.global_step) == (3, 17)
  assert info.path == str(run / "checkpoints" / "ckpt-5")


def test_moving_statistics_are_non_trivial():
  model = built(seed=3)
  means = [v for k, v in checkpoints.model_variables(model).items()
           if "moving_mean/average" in k]
  counters = [v for k, v in checkpoints.model_variables(model).items()
              if "moving_mean/_counter" in k]
  assert means and all(np.abs(v.numpy()).max() > 0 for v in means)
  assert all(int(c.numpy()) == 2 for c in counters)


@pytest.mark.parametrize("which", ["run", "checkpoints", "prefix"])
def test_restore_accepts_run_dir_checkpoints_dir_and_prefix(tmp_path, which):
  model = built("mlp", seed=1)
  run = saved_run(tmp_path, model, step=9)
  path = {"run": run, "checkpoints": run / "checkpoints",
          "prefix": run / "checkpoints" / "ckpt-9"}[which]
  info = checkpoints.restore(built("mlp"), str(path))
  assert info.path.endswith("ckpt-9")


def test_no_checkpoint(tmp_path):
  (tmp_path / "checkpoints").mkdir()
  (tmp_path / "checkpoints" / "checkpoint").write_text("stale state file")
  with pytest.raises(checkpoints.CheckpointNotFoundError,
                     match=r"found no ckpt-<N>.index file.*'checkpoint'"):
    checkpoints.restore(built("mlp"), str(tmp_path))


def test_several_checkpoints(tmp_path):
  model = built("mlp")
  checkpoints.save(model, str(tmp_path / "checkpoints"), step=1)
  checkpoints.save(model, str(tmp_path / "checkpoints"), step=2)
  with pytest.raises(checkpoints.CheckpointNotFoundError,
                     match=r"found 2 checkpoints \(ckpt-1, ckpt-2\)"):
    checkpoints.restore(model, str(tmp_path))


def test_missing_path(tmp_path):
  with pytest.raises(checkpoints.CheckpointNotFoundError,
                     match="neither a directory nor a checkpoint prefix"):
    checkpoints.restore(built("mlp"), str(tmp_path / "nope"))


def test_state_file_is_not_needed(tmp_path):
  model = built("mlp", seed=4)
  run = saved_run(tmp_path, model)
  assert not os.path.exists(run / "checkpoints" / "checkpoint")
  checkpoints.restore(built("mlp"), str(run))


def test_shape_mismatch_cifar100_into_10_classes(tmp_path):
  run = saved_run(tmp_path, built("small_inception", 100))
  with pytest.raises(checkpoints.CheckpointMismatchError) as e:
    checkpoints.restore(built("small_inception", 10), str(run))
  assert [k for k, _, _ in e.value.shape_mismatches] == [
      "model/_pred/b/.ATTRIBUTES/VARIABLE_VALUE",
      "model/_pred/w/.ATTRIBUTES/VARIABLE_VALUE"]
  assert not e.value.missing and not e.value.unexpected
  assert "model/_pred/w/.ATTRIBUTES/VARIABLE_VALUE: [336, 10] vs [336, 100]" \
      in str(e.value)


def test_missing_keys(tmp_path):
  model = built("mlp")
  partial = tf.Module()
  partial.net = tf.Module()
  partial.net._layers = model.layers[:2]  # pylint: disable=protected-access
  tf.train.Checkpoint(model=partial).write(str(tmp_path / "ckpt-1"))
  with pytest.raises(checkpoints.CheckpointMismatchError) as e:
    checkpoints.restore(built("mlp"), str(tmp_path / "ckpt-1"))
  assert e.value.missing == ["model/net/_layers/2/b/.ATTRIBUTES/VARIABLE_VALUE",
                             "model/net/_layers/2/w/.ATTRIBUTES/VARIABLE_VALUE"]
  assert not e.value.unexpected and not e.value.shape_mismatches
  assert "2 model variable(s) missing" in str(e.value)


def test_unexpected_keys(tmp_path):
  model = built("mlp")
  model.extra = tf.Variable(1.0)
  checkpoints.save(model, str(tmp_path), step=1)
  with pytest.raises(checkpoints.CheckpointMismatchError) as e:
    checkpoints.restore(built("mlp"), str(tmp_path))
  assert e.value.unexpected == ["model/extra/.ATTRIBUTES/VARIABLE_VALUE"]
  assert not e.value.missing


def test_other_top_level_objects_are_ignored(tmp_path):
  model = built("mlp", seed=5)
  optimizer = snt.optimizers.Momentum(0.1, 0.9)
  with tf.GradientTape() as tape:
    loss = tf.reduce_sum(model(tf.ones((2, 784))))
  grads = tape.gradient(loss, model.trainable_variables)
  optimizer.apply(grads, model.trainable_variables)
  checkpoints.save(model, str(tmp_path), step=1, optimizer=optimizer)
  assert any(k.startswith("optimizer/") for k, _ in
             tf.train.list_variables(str(tmp_path / "ckpt-1")))
  target = built("mlp")
  checkpoints.restore(target, str(tmp_path))
  np.testing.assert_array_equal(target.layers[0].w.numpy(),
                                model.layers[0].w.numpy())


def scramble(model, seed):
  """Random values in every float variable (no forward pass: fast for
  ResNet-50)."""
  rng = np.random.default_rng(seed)
  for var in checkpoints.model_variables(model).values():
    if var.dtype.is_floating:
      var.assign(rng.standard_normal(var.shape).astype(np.float32))
  return model


def values(model):
  return {k: v.numpy().copy()
          for k, v in checkpoints.model_variables(model).items()}


def assert_values_equal(model, expected):
  got = values(model)
  assert sorted(got) == sorted(expected)
  for key, value in expected.items():
    np.testing.assert_array_equal(got[key], value, err_msg=key)


@pytest.mark.parametrize("arch,num_classes", [("mlp", 10), ("small_inception", 100),
                                              ("resnet50", 10)])
def test_restore_into_a_model_fresh_from_build_model(tmp_path, arch,
                                                     num_classes):
  source = scramble(models.ensure_built(
      models.build_model(arch, num_classes), arch), seed=0)
  prefix = checkpoints.save(source, str(tmp_path), step=1)
  fresh = models.build_model(arch, num_classes)
  # Sonnet creates most variables on the first call.
  assert len(checkpoints.model_variables(fresh)) < len(values(source))
  checkpoints.restore(fresh, prefix)
  assert_values_equal(fresh, values(source))


def test_unbuilt_custom_module_is_refused(tmp_path):
  run = saved_run(tmp_path, built("mlp"))
  custom = snt.nets.MLP([512, 256, 10])  # Not a models.build_model module.
  with pytest.raises(ValueError, match="no variables yet"):
    checkpoints.restore(custom, str(run))


def test_mismatch_message_shows_counts_and_first_keys(tmp_path, monkeypatch):
  run = saved_run(tmp_path, built("small_inception"))
  monkeypatch.delenv(checkpoints.VERBOSE_ERRORS_ENV, raising=False)
  with pytest.raises(checkpoints.CheckpointMismatchError) as raised:
    checkpoints.restore(models.build_model("mlp", 10), str(run))
  error = raised.value
  assert isinstance(error, errors.HeldoutError)
  assert len(error.missing) == 6 and len(error.unexpected) > 100
  message = str(error)
  assert "6 model variable(s) missing from the checkpoint:" in message
  assert (f"{len(error.unexpected)} checkpoint value(s) the model does not "
          "have:") in message
  assert f"... and {len(error.unexpected) - 5} more" in message
  assert "HELDOUT_VERBOSE_ERRORS=1" in message
  assert "checkpoints.diff(model, path)" in message
  assert len(message.splitlines()) < 25
  shown = [k for k in error.unexpected if k in message]
  assert shown == error.unexpected[:5]
  # All of them: the attributes, diff(), or the environment variable.
  found = checkpoints.diff(models.build_model("mlp", 10), str(run))
  assert (found.missing, found.unexpected) == (error.missing,
                                               error.unexpected)
  assert not found.ok
  monkeypatch.setenv(checkpoints.VERBOSE_ERRORS_ENV, "1")
  with pytest.raises(checkpoints.CheckpointMismatchError) as raised:
    checkpoints.restore(models.build_model("mlp", 10), str(run))
  assert all(k in str(raised.value) for k in error.unexpected)
  assert "more" not in str(raised.value)


def test_diff_of_a_matching_checkpoint_is_ok(tmp_path):
  run = saved_run(tmp_path, built("mlp"))
  assert checkpoints.diff(models.build_model("mlp", 10), str(run)).ok


def corrupt(data_file, how):
  raw = bytearray(open(data_file, "rb").read())
  if how == "truncated":
    raw = raw[:len(raw) // 2]
  else:  # One flipped bit late in the file: earlier values read fine.
    raw[int(len(raw) * 0.9)] ^= 0x10
  with open(data_file, "wb") as f:
    f.write(bytes(raw))


@pytest.mark.parametrize("how", ["truncated", "bit-flipped"])
def test_corrupt_data_raises_and_leaves_the_model_unchanged(tmp_path, how):
  run = saved_run(tmp_path, built("mlp", seed=1))
  data_file = str(run / "checkpoints" / "ckpt-5.data-00000-of-00001")
  corrupt(data_file, how)
  target = built("mlp", seed=2)
  before = values(target)
  with pytest.raises(checkpoints.CheckpointCorruptError) as raised:
    checkpoints.restore(target, str(run))
  assert isinstance(raised.value, errors.HeldoutError)
  assert str(raised.value).startswith(
      f"{data_file}: corrupt checkpoint data")
  assert "nothing was restored" in str(raised.value)
  assert_values_equal(target, before)


def test_corrupt_index_is_a_clear_error(tmp_path):
  run = saved_run(tmp_path, built("mlp"))
  index = run / "checkpoints" / "ckpt-5.index"
  index.write_bytes(b"not an index")
  with pytest.raises(checkpoints.CheckpointCorruptError,
                     match=f"{index}: not a readable checkpoint index"):
    checkpoints.restore(built("mlp"), str(run))


def dead_pid():
  """The id of a process that has exited."""
  proc = subprocess.Popen([sys.executable, "-c", "pass"])
  proc.wait()
  return proc.pid


def test_interrupted_save_leaves_no_checkpoint(tmp_path, monkeypatch):
  model = built("mlp")
  real_replace = os.replace

  def crash_on_index(src, dst):
    if dst.endswith(".index"):
      raise KeyboardInterrupt
    real_replace(src, dst)

  monkeypatch.setattr(os, "replace", crash_on_index)
  with pytest.raises(KeyboardInterrupt):
    checkpoints.save(model, str(tmp_path), step=1)
  monkeypatch.undo()
  with pytest.raises(checkpoints.CheckpointNotFoundError):
    checkpoints.find_checkpoint(str(tmp_path))
  assert os.listdir(tmp_path) == []  # No temporary or half-moved files.


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"),
                    reason="needs RLIMIT_FSIZE (POSIX)")
def test_a_full_disk_is_a_path_error_and_leaves_nothing(tmp_path):
  # A file size limit makes TensorFlow's own write fail as a full disk
  # would (EFBIG instead of ENOSPC): a real failed write, no root needed.
  resource = pytest.importorskip("resource")
  model = built("mlp")  # ~0.4 MB of weights.
  soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
  previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
  resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, hard))
  try:
    with pytest.raises(errors.PathError) as e:
      checkpoints.save(model, str(tmp_path), step=1)
  finally:
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    signal.signal(signal.SIGXFSZ, previous)
  assert str(e.value) == (f"cannot write checkpoint ckpt-1 in {tmp_path}: "
                          "File too large")
  assert os.listdir(tmp_path) == []


def test_a_failed_rename_names_the_directory_not_the_temporary(
    tmp_path, monkeypatch):
  real_replace = os.replace

  def no_space(src, dst):
    if dst.endswith(".index"):
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), src)
    real_replace(src, dst)

  monkeypatch.setattr(os, "replace", no_space)
  with pytest.raises(errors.PathError) as e:
    checkpoints.save(built("mlp"), str(tmp_path), step=2)
  monkeypatch.undo()
  assert str(e.value) == (f"cannot write checkpoint ckpt-2 in {tmp_path}: "
                          "No space left on device")
  assert ".tmp" not in str(e.value) and os.listdir(tmp_path) == []


def test_a_fifo_in_a_checkpoint_is_refused_without_blocking(tmp_path):
  run = saved_run(tmp_path, built("mlp"))
  index = run / "checkpoints" / "ckpt-5.index"
  index.unlink()
  os.mkfifo(index)
  outcome = synthetic.refusals(
      str(index), checkpoints.CheckpointCorruptError,
      lambda: checkpoints.restore(built("mlp"), str(run)), seconds=60)
  assert outcome == [f"{index}: not a regular file (a FIFO)"]


def test_save_removes_leftovers_of_killed_saves(tmp_path):
  stale = tmp_path / f".tmp-ckpt-1-{dead_pid()}.index"
  stale.write_bytes(b"left by a killed process")
  checkpoints.save(built("mlp"), str(tmp_path), step=1)
  assert not stale.exists()
  assert sorted(os.listdir(tmp_path)) == [
      "ckpt-1.data-00000-of-00001", "ckpt-1.index"]


def test_save_after_a_killed_save_left_a_temp_directory(tmp_path):
  """TF's `<prefix>_temp/` directory of a SIGKILLed save is removed; the
  files of a save still running in a live process are kept."""
  dead, live = dead_pid(), os.getppid()
  stale_dir = tmp_path / f".tmp-ckpt-3-{dead}_temp"
  stale_dir.mkdir()
  (stale_dir / "part-00000-of-00001.data-00000-of-00001").write_bytes(b"x")
  stale_new = tmp_path / f".tmp-ckpt-2-{dead}-0a1b2c3d_temp"
  stale_new.mkdir()
  running_dir = tmp_path / f".tmp-ckpt-3-{live}-0123abcd_temp"
  running_dir.mkdir()
  running_file = tmp_path / f".tmp-ckpt-3-{live}-0123abcd.index"
  running_file.write_bytes(b"being written")
  checkpoints.save(built("mlp"), str(tmp_path), step=3)
  assert not stale_dir.exists() and not stale_new.exists()
  assert running_dir.is_dir() and running_file.exists()
  assert checkpoints.find_checkpoint(str(tmp_path)).endswith("ckpt-3")


_CONCURRENT_SAVER = textwrap.dedent("""
    import os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    from heldout_tf import models
    from heldout_tf.collection import checkpoints
    model = models.ensure_built(models.build_model("mlp", 10), "mlp")
    open(sys.argv[2], "w").close()  # Ready.
    for _ in range(int(sys.argv[3])):
      checkpoints.save(model, sys.argv[1], step=1)
    """)


def test_two_processes_saving_into_one_directory(tmp_path):
  directory, ready = tmp_path / "checkpoints", tmp_path / "ready"
  child = subprocess.Popen(
      [sys.executable, "-c", _CONCURRENT_SAVER, str(directory), str(ready),
       "40"], stderr=subprocess.PIPE, text=True)
  model = built("mlp", seed=1)
  while not ready.exists() and child.poll() is None:
    time.sleep(0.05)
  while child.poll() is None:
    checkpoints.save(model, str(directory), step=1)
  _, stderr = child.communicate()
  assert child.returncode == 0, stderr
  checkpoints.save(model, str(directory), step=1)
  assert sorted(os.listdir(directory)) == [
      "ckpt-1.data-00000-of-00001", "ckpt-1.index"]
  target = built("mlp")
  checkpoints.restore(target, str(directory))
  assert_values_equal(target, values(model))
