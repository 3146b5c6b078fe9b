"""Builders reproduce the released checkpoints' variable keys and shapes."""

import os

import pytest
import sonnet as snt
import tensorflow as tf

from heldout_tf import checkpoints
from heldout_tf import errors
from heldout_tf import models

SPEC_DIR = os.path.join(os.path.dirname(__file__), "data", "checkpoint_keys")


def read_spec(name):
  spec = {}
  with open(os.path.join(SPEC_DIR, name + ".tsv")) as f:
    for line in f:
      key, shape = line.rstrip("\n").split("\t")
      spec[key] = shape
  return spec


@pytest.mark.parametrize("arch,num_classes,spec_name", [
    ("inception", 10, "inception-cifar10"),
    ("inception", 100, "inception-cifar100"),
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


@pytest.mark.parametrize("arch,num_classes", [("inception", 10),
                                              ("mlp", 10)])
def test_forward_shapes(arch, num_classes):
  model = models.build_model(arch, num_classes)
  images = tf.random.uniform((3,) + models.input_shape(arch))
  assert model(images, is_training=False).shape == (3, num_classes)


def test_unknown_arch():
  with pytest.raises(ValueError, match="Unknown architecture 'vgg'"):
    models.build_model("vgg", 10)


@pytest.mark.parametrize("arch", ["mlp", "inception"])
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
