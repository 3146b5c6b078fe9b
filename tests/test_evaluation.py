"""Re-evaluation of released-layout runs and cross-checks against aux_arrays."""

import numpy as np
import pytest

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
