"""The one-model-at-a-time trainer: pure runs, resume, precision, layout."""

import dataclasses
import os

import numpy as np
import pytest
import tensorflow as tf

from heldout_tf.core import errors
from heldout_tf.core import hardware
from heldout_tf.core import seeds
from heldout_tf.collection import checkpoints
from heldout_tf.collection import evaluation
from heldout_tf.collection import margins as margins_lib
from heldout_tf.collection import reevaluation
from heldout_tf.data import image_data
from heldout_tf.data import pipelines
from heldout_tf.data import sources
from heldout_tf.training import group as group_lib
from heldout_tf.training import records
from heldout_tf.training import settings as settings_lib
from heldout_tf.training import steps
from heldout_tf.training import trainer as trainer_lib
from heldout_tf import models
from heldout_tf.training import recipes
from heldout_tf.collection import runs as runs_lib
from heldout_tf import collection
from heldout_tf.collection import provenance
from heldout_tf import synthetic


def _tiny_cifar(n_train=64, n_test=32, seed=0):
  arrays = synthetic.random_cifar_arrays(n_train, n_test, seed=seed)
  return image_data.ImageData(
      "tiny", "tiny", arrays["train"]["image"], arrays["train"]["label"],
      arrays["test"]["image"], arrays["test"]["label"], 10)


def _settings(precision="float32", epochs=2, model="resnet9", **changes):
  recipe = recipes.get("resnet9").replace(epochs=epochs, batch_size=16,
                                           **changes)
  options = {"width": 0.125} if model == "resnet9" else {}
  return settings_lib.TrainSettings(recipe, model, 0.7, seed=1,
                                    precision=precision,
                                    model_options=options)


def _values(model):
  return [v.numpy() for v in model.variables]


class _Killed(Exception):
  pass


@pytest.mark.parametrize("precision", ["float32", "bfloat16", "float16"])
def test_resume_after_a_kill_gives_the_same_bits(tmp_path, precision):
  data, settings = _tiny_cifar(32, 8), _settings(precision)
  trainer = trainer_lib.RunTrainer(settings, data)
  whole = _values(trainer.train(3).model)

  def kill(epoch):
    if epoch == 0:
      raise _Killed()

  partial = str(tmp_path / "partial")
  with pytest.raises(_Killed):
    trainer.train(3, partial, on_epoch_end=kill)
  assert sorted(os.listdir(partial)) == ["ckpt-1.data-00000-of-00001",
                                         "ckpt-1.index"]
  # A new process would build a new trainer.
  resumed = trainer_lib.RunTrainer(settings, data).train(3, partial)
  assert resumed.resumed_from == 1
  after = _values(resumed.model)
  assert len(after) == len(whole)
  for a, b in zip(whole, after):
    np.testing.assert_array_equal(a, b)


def test_a_run_is_a_pure_function_of_settings_and_run_id():
  data, settings = _tiny_cifar(), _settings(epochs=1)
  trainer = trainer_lib.RunTrainer(settings, data)
  first = _values(trainer.train(3).model)
  other = _values(trainer.train(4).model)
  again = _values(trainer_lib.RunTrainer(settings, data).train(3).model)
  for a, b in zip(first, again):
    np.testing.assert_array_equal(a, b)
  assert any(not np.array_equal(a, b) for a, b in zip(first, other))
  result = trainer.train(5)
  np.testing.assert_array_equal(
      result.subset, seeds.subset_indices(settings.seed, 5, 64,
                                          settings.ratio))


def test_augmentation_is_seeded_and_does_what_it_says():
  recipe = recipes.get("resnet9")
  images = tf.random.stateless_uniform((8, 12, 12, 1), seed=[0, 1]) + 0.5
  seed = tf.constant([5, 6], tf.int64)
  out = steps.augment(images, seed, recipe).numpy()
  np.testing.assert_array_equal(
      out, steps.augment(images, seed, recipe).numpy())
  assert not np.array_equal(out, steps.augment(
      images, tf.constant([5, 7], tf.int64), recipe).numpy())
  cut = recipes.Recipe("cut", "resnet9", 1, 1, 0.1, cutout=4)
  holes = (steps.augment(images, seed, cut).numpy() == 0)
  for hole in holes[..., 0]:  # A square of side <= 4 (clipped at borders).
    rows, cols = np.flatnonzero(hole.any(1)), np.flatnonzero(hole.any(0))
    assert 1 <= len(rows) <= 4 and 1 <= len(cols) <= 4
    assert hole.sum() == len(rows) * len(cols)
  shift = recipes.Recipe("shift", "resnet9", 1, 1, 0.1, translate=2)
  moved = steps.augment(images, seed, shift).numpy()
  x = images.numpy()
  for a, b in zip(x, moved):  # Some shift by -2..2 in each direction.
    assert any(np.array_equal(
        np.pad(a, [(2, 2), (2, 2), (0, 0)])[2 + dy:14 + dy, 2 + dx:14 + dx],
        b) for dy in range(-2, 3) for dx in range(-2, 3))


def test_float16_overflow_skips_the_step_and_halves_the_scale():
  data, settings = _tiny_cifar(), _settings("float16", epochs=1)
  trainer = trainer_lib.RunTrainer(settings, data)
  before = [v.numpy() for v in trainer.model.trainable_variables]
  trainer.state.loss_scale.assign(3e38)  # The scaled loss overflows.
  trainer.compiled_step(tf.range(16), tf.constant(0.1),
                        tf.constant([1, 2], tf.int64))
  assert trainer.state.loss_scale.numpy() == pytest.approx(1.5e38)
  for a, v in zip(before, trainer.model.trainable_variables):
    np.testing.assert_array_equal(a, v.numpy())
  trainer.state.loss_scale.assign(1024.0)
  trainer.compiled_step(tf.range(16), tf.constant(0.1),
                        tf.constant([1, 2], tf.int64))
  assert trainer.state.good_steps.numpy() == 1  # A finite step counts.
  assert trainer.state.loss_scale.numpy() == 1024.0
  assert any(not np.array_equal(a, v.numpy()) for a, v in zip(
      before, trainer.model.trainable_variables))


def test_precision_choices(monkeypatch):
  assert hardware.resolve_precision("float16").name == "float16"
  assert hardware.resolve_precision("float32").name == "float32"
  auto = hardware.resolve_precision("auto").name
  assert auto in hardware.PRECISIONS
  with pytest.raises(errors.UsageError, match="--precision"):
    hardware.resolve_precision("int8")
  # 'auto' by the table: a bfloat16 GPU or CPU, else a float16 GPU.
  monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset(["avx2"]))
  for gpus, expected in (([], "float32"), ([(7, 5)], "float16"),
                         ([(6, 1), (8, 0)], "bfloat16")):
    monkeypatch.setattr(hardware, "gpu_capabilities", lambda g=gpus: g)
    assert hardware.resolve_precision("auto").name == expected, gpus
  monkeypatch.setattr(hardware, "gpu_capabilities", lambda: [(7, 0)])
  monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset(["amx_bf16"]))
  chosen = hardware.resolve_precision("auto")
  assert chosen.name == "bfloat16" and "amx_bf16" in chosen.reason


def test_mnist_mlp_recipe_learns_the_digits():
  data = sources.load("mnist", data_dir="/nonexistent")
  recipe = recipes.get("mnist-mlp").replace(epochs=2)
  settings = settings_lib.TrainSettings(recipe, "mlp", 0.7)
  trainer = trainer_lib.RunTrainer(settings, data)
  trainer.train(0)
  assert trainer.correctness(split="test").mean() > 0.85


@pytest.mark.slow
def test_trained_small_inception_restores_and_cross_checks(tmp_path, cifar10):
  data_dir, _ = cifar10
  data = sources.load("cifar10", data_dir=data_dir)
  recipe = recipes.get("released").replace(epochs=1, batch_size=16)
  settings = settings_lib.TrainSettings(recipe, "small_inception", 0.7,
                                        precision="bfloat16")
  store = collection.Store(str(tmp_path), "cifar10-inception", 0.7)
  trainer = trainer_lib.RunTrainer(settings, data)
  assert trainer.train_and_write(store, 0)
  assert not trainer.train_and_write(store, 0)  # Finished: skipped.
  run_dir = store.run_dir(0)
  assert sorted(os.listdir(run_dir)) == ["aux_arrays.npz", "checkpoints",
                                         "margins.npz"]
  aux = runs_lib.read_aux(run_dir)
  subset = seeds.subset_indices(settings.seed, 0, 48, settings.ratio)
  np.testing.assert_array_equal(aux["subsample_idx"], subset)
  np.testing.assert_array_equal(aux["index_train"], subset)
  np.testing.assert_array_equal(
      np.sort(np.concatenate([aux["index_train"], aux["index_removed"]])),
      np.arange(48))
  model = models.build_model("small_inception", 10)
  info = checkpoints.restore(model, run_dir)
  assert info.epoch == 1 and info.global_step == 3
  experiment = synthetic.experiment("small_inception", 10)
  evaluated = {}
  for split, n in (("train", 48), ("test", 32)):
    [checked] = reevaluation.evaluate_runs(
        experiment, [run_dir],
        pipelines.in_memory_dataset(data.name, data.images, data.labels),
        split, progress=False, batch_size=recipe.eval_batch_size)
    assert checked.check.ok and checked.check.total == n, str(checked.check)
    evaluated[split] = checked.result
  # The margins the trainer recorded are the restored checkpoint's.
  recomputed = margins_lib.arrays_for(
      runs_lib.read_aux(run_dir), **{
          f"{split}_{key}": getattr(evaluated[split], field)
          for split in ("train", "test")
          for key, field in (("logits", "logits"), ("labels", "labels"),
                             ("index", "index"))})
  for key, value in margins_lib.read(run_dir).items():
    np.testing.assert_array_equal(value, recomputed[key], err_msg=key)


def test_runs_trained_side_by_side_equal_runs_trained_alone():
  data, settings = _tiny_cifar(32, 8), _settings(epochs=1)
  alone = trainer_lib.RunTrainer(settings, data)
  expected = {run: _values(alone.train(run).model) for run in (2, 5)}
  group = group_lib.GroupTrainer(settings, data, 2)
  for result in group.train([2, 5]):
    for a, b in zip(expected[result.run], _values(result.model)):
      np.testing.assert_array_equal(a, b)


def test_block_trainer_resumes_a_killed_block_to_the_same_files(
    tmp_path, monkeypatch):
  from heldout_tf.training import blocks as blocks_lib  # pylint: disable=g-import-not-at-top
  data = _tiny_cifar(32, 8)
  settings = dataclasses.replace(_settings(epochs=2), signals=True)
  source = provenance.DataSource("unused")
  whole = collection.Store(str(tmp_path / "whole"), "tiny-resnet9", 0.7)
  blocks = blocks_lib.ModelBlocks(settings, source, 2, data=data)
  assert blocks.train_block(whole, [0, 1]) == [0, 1]

  killed = collection.Store(str(tmp_path / "killed"), "tiny-resnet9", 0.7)
  end_epoch = trainer_lib.RunTrainer.end_epoch

  def die_after_saving(self, plan, epoch):
    end_epoch(self, plan, epoch)
    if plan.run == 1:  # Both members have saved epoch 1 by now.
      raise _Killed()

  monkeypatch.setattr(trainer_lib.RunTrainer, "end_epoch",
                      die_after_saving)
  with pytest.raises(_Killed):
    blocks_lib.ModelBlocks(settings, source, 2, data=data).train_block(
        killed, [0, 1])
  monkeypatch.setattr(trainer_lib.RunTrainer, "end_epoch", end_epoch)
  for run in (0, 1):
    assert sorted(os.listdir(records.partial_dir(killed, run))) == [
        "ckpt-1.data-00000-of-00001", "ckpt-1.index", "signals-1.npz"]
    assert not killed.is_finished(run, need_checkpoint=False)
  resumed = blocks_lib.ModelBlocks(settings, source, 2, data=data)
  assert resumed.train_block(killed, [0, 1]) == [0, 1]
  for run in (0, 1):
    for name in ("aux_arrays.npz", "signals.npz", "checkpoints/ckpt-2.index",
                 "checkpoints/ckpt-2.data-00000-of-00001"):
      a = os.path.join(whole.run_dir(run), name)
      b = os.path.join(killed.run_dir(run), name)
      with open(a, "rb") as fa, open(b, "rb") as fb:
        assert fa.read() == fb.read(), (run, name)
    assert not os.path.exists(records.partial_dir(killed, run))


def test_signals_of_any_model_feed_the_quality_scores(tmp_path):
  from heldout_tf import estimates  # pylint: disable=g-import-not-at-top
  from heldout_tf.quality import scores  # pylint: disable=g-import-not-at-top
  from heldout_tf.collection import signals  # pylint: disable=g-import-not-at-top
  data = _tiny_cifar(32, 8)
  settings = dataclasses.replace(_settings(epochs=2), signals=True)
  store = collection.Store(str(tmp_path), "tiny-resnet9", 0.7)
  trainer = trainer_lib.RunTrainer(settings, data)
  for run in range(3):
    trainer.train_and_write(store, run)
  run_signals = signals.read_run_signals(store.run_dir(0))
  aux = runs_lib.read_aux(store.run_dir(0))
  np.testing.assert_array_equal(run_signals.subset, aux["index_train"])
  np.testing.assert_array_equal(run_signals.heldout, aux["index_removed"])
  assert run_signals.epochs == 2
  assert np.all((0 <= run_signals.correct_epochs)
                & (run_signals.correct_epochs <= 2))
  # The held-out probabilities are the recorded final model's.
  predicted = run_signals.heldout_probs.argmax(1)
  np.testing.assert_array_equal(
      predicted == data.train_labels[run_signals.heldout],
      aux["correctness_removed"])
  totals = signals.load_totals([store.run_dir(r) for r in range(3)], 32, 10,
                               progress=False)
  loaded = estimates.load_runs(str(tmp_path), "tiny-resnet9", progress=False)
  result = scores.compute(loaded.mask, loaded.correct_train, totals,
                          data.train_labels,
                          names=("memorization", "loss", "tracin", "aum"))
  trained = totals.n_in > 0  # Else never trained on: NaN.
  assert trained.sum() >= 22
  for name in ("tracin", "aum"):
    assert result.values[name].shape == (32,)
    np.testing.assert_array_equal(np.isfinite(result.values[name]), trained)


def test_second_split_forgetting_leaves_the_run_as_it_was(tmp_path):
  """SSFT trains on the complement after the run, records forgetting
  epochs, then restores the first phase: same checkpoint bits; the group
  trainer records the same forgetting as one model at a time."""
  from heldout_tf.collection import signals  # pylint: disable=g-import-not-at-top
  data = _tiny_cifar(32, 8)
  plain = dataclasses.replace(_settings(epochs=2), signals=True)
  ssft = dataclasses.replace(plain, ssft_epochs=3, trajectory_runs=1)
  assert ssft.config()["ssft_epochs"] == 3 and "ssft_epochs" not in (
      plain.config())
  without = _values(trainer_lib.RunTrainer(plain, data).train(0).model)
  trainer = trainer_lib.RunTrainer(ssft, data)
  result = trainer.train(0, trajectory_dir=str(tmp_path / "trajectory"))
  for a, b in zip(without, _values(result.model)):
    np.testing.assert_array_equal(a, b)
  run_signals = trainer.run_signals(result)
  forget = run_signals.forget_epoch
  assert run_signals.ssft_epochs == 3 and forget.shape == (22,)
  assert forget.min() >= 0 and forget.max() <= 4
  # Right at the end of the first phase: forgotten no earlier than after
  # second-phase epoch 0 (0 only for examples never right from then on).
  _, logits = trainer.features_and_logits(result.subset)
  right = signals.margins(logits, data.train_labels[result.subset]) > 0
  assert right.any() and (forget[right] >= 1).all()
  # Every epoch's checkpoint kept, and it restores.
  assert sorted(f for f in os.listdir(tmp_path / "trajectory")
                if f.endswith(".index")) == ["ckpt-1.index", "ckpt-2.index"]
  model = models.build_model("resnet9", 10, width=0.125)
  models.check_output(model, "resnet9", data.image_shape, 10)
  restored = checkpoints.restore(model, str(tmp_path / "trajectory" /
                                            "ckpt-2"))
  assert restored.epoch == 2
  for a, b in zip(without, _values(model)):
    np.testing.assert_array_equal(a, b)
  group = group_lib.GroupTrainer(ssft, data, 2)
  together = {r.run: r for r in group.train([0, 1])}
  np.testing.assert_array_equal(
      group.members[0].run_signals(together[0]).forget_epoch, forget)
  with pytest.raises(Exception, match="--ssft_epochs needs --signals"):
    dataclasses.replace(plain, signals=False, ssft_epochs=1)


def test_removal_models_train_on_the_subsets_they_are_given():
  data = _tiny_cifar(32, 8)
  settings = dataclasses.replace(_settings(epochs=1), ratio=1.0)
  keep = [np.arange(4, 32), np.arange(0, 28)]
  group = group_lib.GroupTrainer(settings, data, 2)
  results = group.train([0, 1], subsets=keep)
  for result, kept in zip(results, keep):
    np.testing.assert_array_equal(result.subset, kept)
  alone = trainer_lib.RunTrainer(settings, data).train(1)
  assert len(alone.subset) == 32
