"""Strict restore: exact values back, loud errors on any mismatch."""

import os

import numpy as np
import pytest
import sonnet as snt
import tensorflow as tf

from heldout_tf import checkpoints
from heldout_tf import models
import release_fixtures


def built(arch="inception", num_classes=10, seed=None):
  model = models.build_model(arch, num_classes)
  if seed is None:
    return models.ensure_built(model, arch)
  return release_fixtures.randomize(model, arch, seed)


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
  run = saved_run(tmp_path, built("inception", 100))
  with pytest.raises(checkpoints.CheckpointMismatchError) as e:
    checkpoints.restore(built("inception", 10), str(run))
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


def test_unbuilt_model_is_refused(tmp_path):
  run = saved_run(tmp_path, built("mlp"))
  with pytest.raises(ValueError, match="no variables yet"):
    checkpoints.restore(models.build_model("mlp", 10), str(run))


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


def test_save_removes_leftovers_of_killed_saves(tmp_path):
  stale = tmp_path / ".tmp-ckpt-1-99999.index"
  stale.write_bytes(b"left by a killed process")
  checkpoints.save(built("mlp"), str(tmp_path), step=1)
  assert not stale.exists()
  assert sorted(os.listdir(tmp_path)) == [
      "ckpt-1.data-00000-of-00001", "ckpt-1.index"]

