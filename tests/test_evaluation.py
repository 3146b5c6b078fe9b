"""Re-evaluation of released-layout runs and cross-checks against aux_arrays."""

import numpy as np
import pytest
import tensorflow as tf

from conftest import EXPERIMENT, NUM_RUNS, RATIO
from heldout_tf import checkpoints
from heldout_tf import data
from heldout_tf import evaluation
from heldout_tf import models
from heldout_tf import runs


@pytest.fixture(scope="module")
def dataset(cifar10):
  return data.load("cifar10:3.0.2", data_dir=cifar10[0], download=False)


@pytest.fixture(scope="module")
def model():
  return models.ensure_built(models.build_model("inception", 10), "inception")


def run_path(root, run):
  return runs.run_dir(root, EXPERIMENT, RATIO, run)


@pytest.mark.parametrize("split", ["test", "train"])
def test_every_run_matches_its_aux_arrays(release_root, dataset, model,
                                          cifar10, split):
  _, arrays = cifar10
  for run in range(NUM_RUNS):
    checkpoints.restore(model, run_path(release_root, run))
    result = evaluation.evaluate(model, dataset, split, batch_size=20,
                                 progress=False)
    np.testing.assert_array_equal(result.index, np.arange(len(result.index)))
    np.testing.assert_array_equal(result.labels, arrays[split]["label"])
    check = evaluation.cross_check(runs.read_aux(run_path(release_root, run)),
                                   result, split)
    assert (check.matched, check.total) == (len(arrays[split]["label"]),) * 2
    assert str(check) == f"{check.total} out of {check.total} predictions match"


def test_runs_reuse_one_compiled_function(release_root, dataset):
  model = models.ensure_built(models.build_model("inception", 10), "inception")
  accuracies = []
  for run in range(NUM_RUNS):
    checkpoints.restore(model, run_path(release_root, run))
    accuracies.append(evaluation.evaluate(model, dataset, "test",
                                          progress=False).logits)
  assert evaluation.compiled_forward(model).experimental_get_tracing_count() \
      == 1
  assert not np.array_equal(accuracies[0], accuracies[1])  # Weights changed.


@pytest.mark.parametrize("split,key", [("test", "correctness_test"),
                                       ("train", "correctness_train"),
                                       ("train", "correctness_removed")])
def test_flipped_entries_are_reported(release_root, dataset, model, split,
                                      key):
  path = run_path(release_root, 0)
  checkpoints.restore(model, path)
  result = evaluation.evaluate(model, dataset, split, progress=False)
  aux = runs.read_aux(path)
  flip = np.array([0, 3, 5])
  aux[key] = aux[key].copy()
  aux[key][flip] = ~aux[key][flip]
  check = evaluation.cross_check(aux, result, split)
  flipped_index = aux["index_" + key.split("_")[1]][flip]
  assert check.total == len(result.index)
  assert check.matched == check.total - 3
  assert not check.ok
  np.testing.assert_array_equal(check.mismatched_index, np.sort(flipped_index))


def test_cross_check_refuses_other_examples(release_root, dataset, model):
  path = run_path(release_root, 0)
  result = evaluation.evaluate(model, dataset, "test", progress=False)
  aux = runs.read_aux(path)
  aux["index_test"] = aux["index_test"] + 1
  with pytest.raises(ValueError, match=r"covers 32 examples \(indices 1..32\)"):
    evaluation.cross_check(aux, result, "test")


def test_bad_split(dataset):
  with pytest.raises(ValueError, match="split must be 'train' or 'test'"):
    dataset.split("validation")


@pytest.mark.parametrize("in_tf_function", [False, True])
def test_op_errors_are_shown_without_the_trace(in_tf_function):
  text = "map /data/maps[v2]/index.csv lacks a]1.JPEG, b.JPEG"

  def fail(x):
    check = tf.debugging.Assert(tf.size(x) == 0, [tf.constant(text)])
    with tf.control_dependencies([check]):
      return tf.identity(x)

  inputs = tf.constant([1])
  with pytest.raises(tf.errors.InvalidArgumentError) as raised:
    if in_tf_function:
      tf.function(fail)(inputs)
    else:
      list(tf.data.Dataset.from_tensors(inputs).map(fail))
  assert evaluation.op_error_message(raised.value) == text
  with pytest.raises(tf.errors.InvalidArgumentError) as raised:
    tf.function(lambda: tf.io.decode_png(tf.constant(b"not a png")))()
  message = evaluation.op_error_message(raised.value)
  assert "Graph execution error" not in message and "[Op:" not in message
  assert message.strip(), raised.value.message


def test_unreadable_data_is_a_data_error_naming_the_split():
  def make_split(split):
    encoded = tf.data.Dataset.from_tensors(tf.constant(b"not an image"))
    return encoded.map(lambda e: {
        "image": tf.cast(tf.io.decode_png(e, channels=3), tf.float32),
        "label": tf.constant(0, tf.int64),
        "index": tf.constant(0, tf.int64)}), 1

  model = models.ensure_built(models.build_model("mlp", 10), "mlp")
  dataset = data.Dataset("broken", make_split)
  with pytest.raises(evaluation.DataError,
                     match=r"\(reading broken test\)$") as raised:
    evaluation.evaluate(model, dataset, "test", progress=False)
  assert "Traceback" not in str(raised.value)
  assert "[Op:" not in str(raised.value)
