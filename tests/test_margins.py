"""Tests of heldout_tf.collection.margins: each run's margins.npz, written
from logits, read back checked against its run, tampering refused."""

import os
import shutil

import numpy as np
import pytest

from heldout_tf import collection
from heldout_tf.core import errors
from heldout_tf.core import files
from heldout_tf.collection import layout
from heldout_tf.collection import margins
from heldout_tf.collection import runs

N_TRAIN, N_TEST, CLASSES = 50, 20, 4


def _run(root, run, rng, subset_size=30):
  """A run: aux arrays written from random logits; returns (path, logits)."""
  logits = {s: rng.standard_normal((n, CLASSES)).astype(np.float32)
            for s, n in (("train", N_TRAIN), ("test", N_TEST))}
  labels = {s: rng.integers(0, CLASSES, len(v)) for s, v in logits.items()}
  correct = {s: logits[s].argmax(1) == labels[s] for s in logits}
  subset = np.sort(rng.choice(N_TRAIN, subset_size, replace=False))
  removed = np.setdiff1d(np.arange(N_TRAIN), subset)
  path = layout.run_dir(root, "toy", 0.6, run)
  runs.write_aux(path, correctness={"train": correct["train"][subset],
                                    "removed": correct["train"][removed],
                                    "test": correct["test"]},
                 index={"train": subset, "removed": removed,
                        "test": np.arange(N_TEST)}, subsample_idx=subset)
  return path, logits, labels


def _reference(logits, labels):
  """float64 margin and label probability, one example at a time."""
  z = logits.astype(np.float64)
  margin = np.array([z[i, y] - np.delete(z[i], y).max()
                     for i, y in enumerate(labels)])
  p = np.exp(z - z.max(1, keepdims=True))
  p /= p.sum(1, keepdims=True)
  return margin, p[np.arange(len(labels)), labels]


def _write(path, logits, labels, **kwargs):
  return margins.write(path, train_logits=logits["train"],
                       train_labels=labels["train"],
                       test_logits=logits["test"],
                       test_labels=labels["test"], **kwargs)


def test_written_file_is_aligned_to_the_aux_arrays(tmp_path):
  path, logits, labels = _run(str(tmp_path), 0, np.random.default_rng(0))
  written = _write(path, logits, labels)
  assert written == os.path.join(path, "margins.npz") == margins.margins_path(
      path)
  got = margins.read(path)
  assert sorted(got) == sorted(margins.KEYS)
  aux = runs.read_aux(path)
  want = {s: _reference(logits[s], labels[s]) for s in logits}
  for split, source in (("train", "train"), ("removed", "train"),
                        ("test", "test")):
    index = aux[f"index_{split}"]
    np.testing.assert_array_equal(got[f"index_{split}"], index)
    assert got[f"margin_{split}"].dtype == np.float32
    np.testing.assert_allclose(got[f"margin_{split}"],
                               want[source][0][index], rtol=1e-6)
    np.testing.assert_allclose(got[f"probability_{split}"],
                               want[source][1][index], rtol=1e-6)
    np.testing.assert_array_equal(got[f"margin_{split}"] > 0,
                                  aux[f"correctness_{split}"])
  assert int(got["format_version"]) == margins.FORMAT_VERSION


def test_rows_in_any_order_are_placed_by_their_index(tmp_path):
  path, logits, labels = _run(str(tmp_path), 0, np.random.default_rng(1))
  _write(path, logits, labels)
  want = margins.read(path)
  order = np.random.default_rng(2).permutation(N_TRAIN)
  margins.write(path, train_logits=logits["train"][order],
                train_labels=labels["train"][order], train_index=order,
                test_logits=logits["test"], test_labels=labels["test"])
  got = margins.read(path)
  for key in margins.KEYS:
    np.testing.assert_array_equal(got[key], want[key])


def test_ties_are_accepted_either_way(tmp_path):
  rng = np.random.default_rng(3)
  path, logits, labels = _run(str(tmp_path), 0, rng)
  # Example 0 of the test set: the label ties another class at the top.
  # argmax picks the lower class; the aux arrays recorded what it picked.
  logits["test"][0] = [1.0, 3.0, 3.0, 0.0]
  for label in (1, 2):
    labels["test"][0] = label
    aux = runs.read_aux(path)
    aux["correctness_test"][0] = label == 1
    runs.write_aux(path, correctness={s: aux[f"correctness_{s}"]
                                      for s in runs.SPLITS},
                   index={s: aux[f"index_{s}"] for s in runs.SPLITS},
                   subsample_idx=aux["subsample_idx"])
    _write(path, logits, labels)
    assert margins.read(path)["margin_test"][0] == 0.0


def test_logits_that_disagree_with_the_aux_arrays_are_not_written(tmp_path):
  path, logits, labels = _run(str(tmp_path), 0, np.random.default_rng(4))
  was_right = logits["test"][5].argmax() == labels["test"][5]
  logits["test"][5, labels["test"][5]] = -9.0 if was_right else 9.0
  with pytest.raises(margins.MarginsError,
                     match=r"key 'margin_test' disagrees with the run's "
                     r"'correctness_test' at 1 example\(s\) \(e.g. example 5"):
    _write(path, logits, labels)
  assert not os.path.exists(margins.margins_path(path))


@pytest.mark.parametrize("change,message", [
    (dict(train_logits=np.zeros((N_TRAIN, 1), np.float32)),
     "train logits: need float logits"),
    (dict(test_labels=np.full(N_TEST, CLASSES)),
     r"test logits: labels must be integers in \[0, 4\)"),
    (dict(train_index=np.zeros(N_TRAIN, int)),
     "train logits: 50 examples with index"),
])
def test_bad_logits_are_refused(tmp_path, change, message):
  path, logits, labels = _run(str(tmp_path), 0, np.random.default_rng(5))
  kwargs = dict(train_logits=logits["train"], train_labels=labels["train"],
                test_logits=logits["test"], test_labels=labels["test"])
  with pytest.raises(margins.MarginsError, match=message):
    margins.write(path, **dict(kwargs, **change))
  bad = logits["test"].copy()
  bad[3, 1] = np.nan
  with pytest.raises(margins.MarginsError,
                     match="test logits: row 3 holds a NaN"):
    margins.write(path, **dict(kwargs, test_logits=bad))


def _tamper(path, **changes):
  arrays = dict(np.load(path))
  arrays.update(changes)
  files.save_npz(path, **arrays)


@pytest.mark.parametrize("change,message", [
    (lambda a: dict(format_version=np.array(2)),
     "key 'format_version' is 2; this kit reads version 1"),
    (lambda a: dict(margin_test=a["margin_test"].astype(np.float64)),
     "key 'margin_test' has dtype float64, expected float32"),
    (lambda a: dict(margin_train=a["margin_train"][:-1]),
     r"key 'margin_train' has shape \(29,\), expected \(30,\)"),
    (lambda a: dict(index_test=a["index_test"][::-1]),
     "key 'index_test' differs from the run's aux_arrays.npz"),
    (lambda a: dict(probability_removed=a["probability_removed"] + 1),
     r"key 'probability_removed' must lie in \[0, 1\]"),
    (lambda a: dict(margin_test=np.where(np.arange(N_TEST) == 2, np.inf,
                                         a["margin_test"]).astype(
                                             np.float32)),
     r"key 'margin_test' holds a NaN or infinite value \(position 2\)"),
    (lambda a: dict(margin_removed=-a["margin_removed"]),
     "key 'margin_removed' disagrees with the run's 'correctness_removed'"),
    (lambda a: dict(index_train=a["index_train"].astype(np.float64)),
     "key 'index_train' has dtype float64, expected integer"),
])
def test_tampering_is_refused_naming_file_and_key(tmp_path, change, message):
  path, logits, labels = _run(str(tmp_path), 0, np.random.default_rng(6))
  file = _write(path, logits, labels)
  _tamper(file, **change(dict(np.load(file))))
  with pytest.raises(margins.MarginsError) as raised:
    margins.read(path)
  text = str(raised.value)
  assert text.startswith(f"{file}: ") and "\n" not in text, text
  assert __import__("re").search(message, text), text
  assert isinstance(raised.value, errors.HeldoutError)


def test_a_file_copied_from_another_run_is_refused(tmp_path):
  rng = np.random.default_rng(7)
  first, logits, labels = _run(str(tmp_path), 0, rng)
  second, _, _ = _run(str(tmp_path), 1, rng)
  _write(first, logits, labels)
  shutil.copy(margins.margins_path(first), margins.margins_path(second))
  with pytest.raises(margins.MarginsError,
                     match="key 'index_train' differs from the run's "
                     r"aux_arrays.npz: not the margins of this run"):
    margins.read(second)


def test_missing_file_and_pickles_are_refused(tmp_path):
  path, logits, labels = _run(str(tmp_path), 0, np.random.default_rng(8))
  with pytest.raises(margins.MarginsError, match="margins.npz: file not found"):
    margins.read(path)
  file = _write(path, logits, labels)
  arrays = dict(np.load(file))
  arrays["margin_test"] = np.array([object()] * N_TEST)
  with open(file, "wb") as f:
    np.savez(f, **arrays)
  with pytest.raises(margins.MarginsError,
                     match="margin_test.*(pickled|float32)"):
    margins.read(path)


def test_the_store_writes_margins_before_the_aux_arrays(tmp_path):
  rng = np.random.default_rng(9)
  logits = {s: rng.standard_normal((n, CLASSES)).astype(np.float32)
            for s, n in (("train", N_TRAIN), ("test", N_TEST))}
  labels = {s: rng.integers(0, CLASSES, len(v)) for s, v in logits.items()}
  correct = {s: logits[s].argmax(1) == labels[s] for s in logits}
  store = collection.Store(str(tmp_path), "toy", 0.6)
  subset = np.sort(rng.choice(N_TRAIN, 30, replace=False))
  given = dict(train_logits=logits["train"], train_labels=labels["train"],
               test_logits=logits["test"], test_labels=labels["test"])
  store.write_run(0, subset=subset, correct_train=correct["train"],
                  correct_test=correct["test"], logits=given)
  got = margins.read(store.run_dir(0))
  aux = runs.read_aux(store.run_dir(0))
  want = _reference(logits["train"], labels["train"])[0]
  np.testing.assert_allclose(got["margin_removed"],
                             want[aux["index_removed"]], rtol=1e-6)
  # Logits that are not the correctness's: refused before the run is
  # finished (no aux arrays).
  flipped = dict(correct_test=~correct["test"])
  with pytest.raises(margins.MarginsError, match="disagrees with the run's"):
    store.write_run(1, subset=subset, correct_train=correct["train"],
                    logits=given, **flipped)
  assert not store.is_finished(1, need_checkpoint=False)
  store.write_run(2, subset=subset, **{f"correct_{s}": correct[s]
                                       for s in ("train", "test")})
  assert not os.path.exists(margins.margins_path(store.run_dir(2)))
