"""Builders reproduce the released checkpoints' variable keys and shapes."""

import os

import numpy as np
import pytest
import sonnet as snt
import tensorflow as tf

from heldout_tf.collection import checkpoints
from heldout_tf.core import errors
from heldout_tf import models
from heldout_tf.collection import experiments

SPEC_DIR = os.path.join(os.path.dirname(__file__), "data", "checkpoint_keys")


def read_spec(name):
  spec = {}
  with open(os.path.join(SPEC_DIR, name + ".tsv")) as f:
    for line in f:
      key, shape = line.rstrip("\n").split("\t")
      spec[key] = shape
  return spec


@pytest.mark.parametrize("arch,num_classes,spec_name", [
    ("small_inception", 10, "small_inception-cifar10"),
    ("small_inception", 100, "small_inception-cifar100"),
    ("resnet50", 1000, "resnet50-imagenet"),
])
def test_saved_keys_equal_released_spec(tmp_path, arch, num_classes,
                                        spec_name):
  model = models.ensure_built(models.build_model(arch, num_classes), arch)
  prefix = checkpoints.save(model, str(tmp_path), step=1)
  saved = {k: str(list(shape)) for k, shape in tf.train.list_variables(prefix)
           if k != "_CHECKPOINTABLE_OBJECT_GRAPH"}
  spec = read_spec(spec_name)
  assert sorted(set(spec) - set(saved)) == []
  assert sorted(set(saved) - set(spec)) == []
  assert {k: saved[k] for k in spec if saved[k] != spec[k]} == {}
  # The key walk used by strict restore agrees with what TF saves.
  walked = {k: str(list(v.shape))
            for k, v in checkpoints.model_variables(model).items()}
  assert walked == {k: v for k, v in saved.items() if k.startswith("model/")}


@pytest.mark.parametrize("arch,num_classes", [("small_inception", 10),
                                              ("mlp", 10)])
def test_forward_shapes(arch, num_classes):
  model = models.build_model(arch, num_classes)
  images = tf.random.uniform((3,) + models.input_shape(arch))
  assert model(images, is_training=False).shape == (3, num_classes)


def test_one_name_per_model():
  # The name --model takes is the name build_model takes, arch_of gives
  # back, the experiments registry and exports record.
  for name in models.MODEL_NAMES:
    assert models.arch_of(models.build_model(name, 10)) == name
  assert {e.arch for e in experiments.EXPERIMENTS.values()} <= set(
      models.MODEL_NAMES)
  with pytest.raises(errors.UsageError, match="--model 'vgg': unknown"):
    models.build_model("vgg", 10)
  with pytest.raises(errors.UsageError, match="'inception': this model is "
                     "called 'small_inception'"):
    models.build_model("inception", 10)
  with pytest.raises(errors.ConfigError, match="an earlier name of "
                     "'small_inception'"):
    models.recorded_model("inception", None, "c.json")


@pytest.mark.parametrize("arch", ["mlp", "small_inception"])
def test_ensure_built_knows_the_architecture_and_builds_once(arch):
  model = models.build_model(arch, 10)
  assert models.arch_of(model) == arch
  assert not models.is_built(model)
  models.ensure_built(model)
  assert models.is_built(model)
  before = {v.name: v.numpy() for v in model.variables}
  models.ensure_built(model)
  assert {v.name: v.numpy().tobytes() for v in model.variables} == {
      k: v.tobytes() for k, v in before.items()}


def test_ensure_built_needs_an_arch_for_other_modules():
  other = snt.Linear(3)
  assert models.arch_of(other) is None
  with pytest.raises(errors.UsageError, match="cannot build a Linear"):
    models.ensure_built(other)


# ------------------------------------------------- the kit's training models --


@pytest.mark.parametrize("name,kwargs,dim", [
    ("resnet9", {"width": 0.125}, 64), ("small_inception", {}, 336),
    ("mlp", {}, 256)])
def test_features_and_logits(name, kwargs, dim):
  model = models.build_model(name, 10, **kwargs)
  images = tf.random.stateless_uniform((3, 32, 32, 3), seed=[1, 2])
  features, logits = model.features_and_logits(images, is_training=False)
  assert features.shape == (3, dim) and logits.shape == (3, 10)
  np.testing.assert_array_equal(logits.numpy(), model(images).numpy())
  generic = models.features_and_logits(model, images)
  np.testing.assert_array_equal(generic[0].numpy(), features.numpy())


def test_resnet9_layers_and_scale():
  model = models.build_model("resnet9", 10)
  models.ensure_built(model)
  assert models.arch_of(model) == "resnet9"
  convs = [m for m in model.submodules if isinstance(m, snt.Conv2D)]
  assert sorted(c.output_channels for c in convs) == [
      64, 128, 128, 128, 256, 512, 512, 512]
  assert model.head.w.shape == (512, 10) and not model.head.with_bias
  features, logits = model.features_and_logits(tf.ones((2, 32, 32, 3)))
  np.testing.assert_allclose(logits.numpy(),
                             0.125 * (features @ model.head.w).numpy(),
                             rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [tf.bfloat16, tf.float16])
def test_precision_scope_keeps_float32_variables(dtype):
  model = models.build_model("resnet9", 10, width=0.125)
  images = tf.random.stateless_uniform((4, 32, 32, 3), seed=[3, 4])
  with models.precision_scope(dtype):  # Built inside the scope.
    low = model(images, is_training=True)
  assert {v.dtype for v in model.variables} <= {tf.float32, tf.int64}
  assert low.dtype == tf.float32
  full = model(images, is_training=True)
  assert not np.array_equal(low.numpy(), full.numpy())  # Really low.
  np.testing.assert_allclose(low.numpy(), full.numpy(), rtol=0.05, atol=0.02)


def _user_module(tmp_path, monkeypatch, body):
  (tmp_path / "my_models.py").write_text(body)
  monkeypatch.syspath_prepend(str(tmp_path))
  import sys
  sys.modules.pop("my_models", None)


def test_user_module_by_import_path(tmp_path, monkeypatch):
  _user_module(tmp_path, monkeypatch, """
import sonnet as snt
import tensorflow as tf

class Tiny(snt.Module):
  def __init__(self, num_classes):
    super().__init__()
    self.head = snt.Linear(num_classes)
  def __call__(self, images, is_training=False):
    return self.head(tf.reduce_mean(images, axis=[1, 2]))

def build(num_classes):
  return Tiny(num_classes)

def wrong_shape(num_classes):
  return Tiny(num_classes + 1)

def not_a_module(num_classes):
  return lambda x: x

NOT_CALLABLE = 3
""")
  model = models.build_model("my_models:build", 5)
  models.check_output(model, "my_models:build", (8, 8, 3), 5)
  with pytest.raises(errors.UsageError, match="exposes no features: give "
                     "the module a method features_and_logits"):
    models.features_and_logits(model, tf.ones((2, 8, 8, 3)))
  with pytest.raises(errors.UsageError, match=r"returns float32\[2, 6\] for "
                     r"2 images; expected logits \[2, 5\]"):
    models.check_output(models.build_model("my_models:wrong_shape", 5),
                        "my_models:wrong_shape", (8, 8, 3), 5)
  with pytest.raises(errors.UsageError, match="returned a function, not an "
                     "snt.Module"):
    models.build_model("my_models:not_a_module", 5)
  with pytest.raises(errors.UsageError, match="has no attribute 'missing'"):
    models.build_model("my_models:missing", 5)
  with pytest.raises(errors.UsageError, match="a non-callable 'NOT_CALLABLE'"):
    models.build_model("my_models:NOT_CALLABLE", 5)
  with pytest.raises(errors.UsageError,
                     match="cannot import module 'no_such_pkg.mod'"):
    models.build_model("no_such_pkg.mod:build", 5)
  with pytest.raises(errors.UsageError, match="--model 'vgg': unknown"):
    models.build_model("vgg", 5)
  with pytest.raises(errors.UsageError, match="expected a built-in name"):
    models.build_model("my_models:", 5)


def test_user_module_that_fails_to_import(tmp_path, monkeypatch):
  _user_module(tmp_path, monkeypatch, "def build(:\n")
  with pytest.raises(errors.UsageError,
                     match="importing 'my_models' failed: SyntaxError"):
    models.build_model("my_models:build", 5)
