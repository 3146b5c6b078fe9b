"""Tests for heldout_tf.estimates and the heldout_tf.cli.estimate CLI."""

import os
import subprocess
import sys
import types

import numpy as np
import pytest

import heldout_tf
from heldout_tf import cli
from heldout_tf.core import errors
from heldout_tf.core import files
from heldout_tf.cli import estimate
from heldout_tf import estimates
from heldout_tf.collection import layout
from heldout_tf.collection import runs
from heldout_tf.estimates import counting
from heldout_tf.estimates import estimators
import conftest

EXPERIMENT = "toy-experiment"


# ------------------------------------------------ plain float64 reference --


def reference_mem(mask, correct):
  m, c = mask.astype(np.float64), correct.astype(np.float64)
  with np.errstate(divide="ignore", invalid="ignore"):
    return (m * c).sum(0) / m.sum(0) - ((1 - m) * c).sum(0) / (1 - m).sum(0)


def reference_infl(mask, correct_test):
  """[n_test, n_train] float64."""
  m, c = mask.astype(np.float64), correct_test.astype(np.float64)
  with np.errstate(divide="ignore", invalid="ignore"):
    return (c.T @ m) / m.sum(0) - (c.T @ (1 - m)) / (1 - m).sum(0)


def reference_pairs(mask, correct_train, correct_test, infl_t, mem_t):
  mem = reference_mem(mask, correct_train)
  infl = reference_infl(mask, correct_test)
  with np.errstate(invalid="ignore"):
    tt, tr = np.nonzero((infl >= infl_t) & (mem >= mem_t)[None, :])
  order = np.lexsort((tt, tr))
  tr, tt = tr[order], tt[order]
  return dict(tr_idx=tr, tt_idx=tt, infl=infl[tt, tr], mem=mem[tr])


def reference_cscores(mask, correct):
  out = ~mask
  with np.errstate(divide="ignore", invalid="ignore"):
    return (out & correct).sum(0) / out.sum(0)


def random_runs(rng, num_runs=40, n_train=120, n_test=70, ratio=0.6):
  """Random data with per-example structure so that estimates spread out."""
  mask = rng.random((num_runs, n_train)) < ratio
  skill = rng.random(n_train)
  correct_train = np.where(mask, rng.random((num_runs, n_train)) < 0.95,
                           rng.random((num_runs, n_train)) < skill)
  # Test examples depend on a few training examples.
  source = rng.integers(0, n_train, n_test)
  correct_test = np.where(mask[:, source],
                          rng.random((num_runs, n_test)) < 0.9,
                          rng.random((num_runs, n_test)) < 0.4)
  return mask, correct_train, correct_test


def assert_pairs_equal(got, want):
  assert sorted(got) == ["infl", "mem", "tr_idx", "tt_idx"]
  np.testing.assert_array_equal(got["tr_idx"], want["tr_idx"])
  np.testing.assert_array_equal(got["tt_idx"], want["tt_idx"])
  np.testing.assert_allclose(got["infl"], want["infl"], rtol=0, atol=1e-6)
  np.testing.assert_allclose(got["mem"], want["mem"], rtol=0, atol=1e-6)


# --------------------------------------------------------------- estimators --


@pytest.mark.parametrize("seed", [0, 1])
def test_memorization_and_cscores_match_reference(seed):
  mask, correct_train, _ = random_runs(np.random.default_rng(seed))
  mem = estimates.memorization(mask, correct_train)
  np.testing.assert_allclose(mem, reference_mem(mask, correct_train),
                             rtol=0, atol=1e-6)
  assert mem.shape == (mask.shape[1],) and not np.isnan(mem).any()
  np.testing.assert_allclose(estimates.cscores(mask, correct_train),
                             reference_cscores(mask, correct_train),
                             rtol=0, atol=1e-6)


def test_influence_matches_reference():
  mask, _, correct_test = random_runs(np.random.default_rng(2), n_test=300)
  infl = estimates.influence(mask, correct_test)
  assert infl.dtype == np.float32 and infl.shape == (300, mask.shape[1])
  np.testing.assert_allclose(infl, reference_infl(mask, correct_test),
                             rtol=0, atol=1e-6)


@pytest.mark.parametrize("infl_t,mem_t", [(0.15, 0.25), (0.0, 0.0),
                                          (0.1, -1.0), (0.5, 0.5)])
def test_pairs_match_reference(infl_t, mem_t):
  mask, correct_train, correct_test = random_runs(np.random.default_rng(3))
  got = estimates.high_influence_pairs(mask, correct_train, correct_test,
                                       infl_t, mem_t)
  want = reference_pairs(mask, correct_train, correct_test, infl_t, mem_t)
  assert len(want["tr_idx"]) or infl_t == 0.5
  assert_pairs_equal(got, want)


def test_pairs_tiny_budget_uses_many_blocks_and_matches():
  rng = np.random.default_rng(4)
  mask, correct_train, correct_test = random_runs(rng, 60, 400, 2000)
  want = reference_pairs(mask, correct_train, correct_test, 0.1, 0.0)
  budget = 700_000  # ~20 training rows per block.
  rows = estimators.pairs_block_rows(60, 400, 2000, budget, 60)
  assert rows < 100
  got = estimates.high_influence_pairs(mask, correct_train, correct_test,
                                       0.1, 0.0, memory_budget=budget)
  assert len(want["tr_idx"]) > 100
  assert_pairs_equal(got, want)


def test_pairs_threshold_ties_are_exact():
  # Test 0 is right in runs 0, 1, 2. Train 0 is in runs 0, 1 and train 1 in
  # runs 1, 2: both have infl = 1 - 1/2, exactly on the threshold.
  mask = np.array([[1, 0], [1, 1], [0, 1], [0, 0]], bool)
  correct_test = np.array([[1], [1], [1], [0]], bool)
  correct_train = np.array([[1, 1], [1, 1], [0, 1], [0, 0]], bool)
  want = reference_pairs(mask, correct_train, correct_test, 0.5, 0.0)
  got = estimates.high_influence_pairs(mask, correct_train, correct_test,
                                       0.5, 0.0)
  assert list(got["tr_idx"]) == [0, 1] and list(got["infl"]) == [0.5, 0.5]
  assert_pairs_equal(got, want)
  above = estimates.high_influence_pairs(mask, correct_train, correct_test,
                                         np.nextafter(0.5, 1), 0.0)
  assert len(above["tr_idx"]) == 0


def test_pairs_from_memory_mapped_inputs(tmp_path):
  mask, correct_train, correct_test = random_runs(np.random.default_rng(5))
  mapped = []
  for name, array in (("m", mask), ("ctr", correct_train),
                      ("ct", correct_test)):
    path = str(tmp_path / f"{name}.npy")
    np.save(path, array)
    mapped.append(np.load(path, mmap_mode="r"))
  got = estimates.high_influence_pairs(*mapped, 0.1, 0.1,
                                       memory_budget="1MB")
  assert_pairs_equal(got, reference_pairs(mask, correct_train, correct_test,
                                          0.1, 0.1))


def test_never_and_always_held_out_examples_are_nan():
  mask, correct_train, correct_test = random_runs(np.random.default_rng(6))
  mask[:, 3] = True   # Never held out.
  mask[:, 7] = False  # Never trained on.
  mem = estimates.memorization(mask, correct_train)
  assert np.flatnonzero(np.isnan(mem)).tolist() == [3, 7]
  c = estimates.counts(mask, correct_train)
  assert (c.num_never_held_out, c.num_never_trained) == (1, 1)
  infl = estimates.influence(mask, correct_test)
  assert np.isnan(infl[:, [3, 7]]).all() and not np.isnan(
      np.delete(infl, [3, 7], axis=1)).any()
  scores = estimates.cscores(mask, correct_train)
  assert np.flatnonzero(np.isnan(scores)).tolist() == [3]
  pairs = estimates.high_influence_pairs(mask, correct_train, correct_test,
                                         0.0, -1.0)
  assert not np.isin(pairs["tr_idx"], [3, 7]).any()
  assert_pairs_equal(pairs, reference_pairs(mask, correct_train,
                                            correct_test, 0.0, -1.0))
  result = estimates.compute(estimates.Runs.from_arrays(
      mask, correct_train, correct_test, ratios=0.6), progress=False)
  assert int(result["num_nan_memorization"]) == 2
  assert int(result["num_never_held_out"]) == 1
  assert int(result["num_nan_cscores"]) == 1
  assert "never held out: 1, never trained on: 1" in estimates.summary(result)


def test_one_run_is_all_nan_and_no_pairs():
  mask, correct_train, correct_test = random_runs(np.random.default_rng(7),
                                                  num_runs=1)
  assert np.isnan(estimates.memorization(mask, correct_train)).all()
  assert np.isnan(estimates.influence(mask, correct_test)).all()
  pairs = estimates.high_influence_pairs(mask, correct_train, correct_test,
                                         -10.0, -10.0)
  assert all(len(v) == 0 for v in pairs.values())
  assert pairs["tr_idx"].dtype == np.int64


def test_counts_of_each_ratio_sum_to_the_counts_of_all_runs():
  rng = np.random.default_rng(3)
  mask, correct_train, _ = random_runs(rng, 30, 50, 5)
  ratios = rng.choice([0.2, 0.5, 0.8], 30)
  values, per_ratio = estimates.counts_by_ratio(mask, correct_train, ratios)
  np.testing.assert_array_equal(values, [0.2, 0.5, 0.8])
  total = per_ratio[0] + per_ratio[1] + per_ratio[2]
  every = estimates.counts(mask, correct_train)
  for field in ("n_in", "n_out", "correct_in", "correct_out"):
    np.testing.assert_array_equal(getattr(total, field), getattr(every, field))
  low = estimates.counts(mask[ratios == 0.2], correct_train[ratios == 0.2])
  np.testing.assert_array_equal(per_ratio[0].correct_out, low.correct_out)


def test_multi_ratio_cscores_average_over_ratios():
  rng = np.random.default_rng(8)
  parts = [random_runs(rng, 30, 90, 5, ratio) for ratio in (0.2, 0.8)]
  mask = np.concatenate([p[0] for p in parts])
  correct = np.concatenate([p[1] for p in parts])
  ratios = np.repeat([0.2, 0.8], 30)
  mask[30:, 5] = True  # Example 5 never held out at ratio 0.8.
  mask[:, 6] = True  # Example 6 never held out at all.
  values, by_ratio = estimates.cscores_by_ratio(mask, correct, ratios)
  np.testing.assert_array_equal(values, [0.2, 0.8])
  low = reference_cscores(mask[:30], correct[:30])
  high = reference_cscores(mask[30:], correct[30:])
  np.testing.assert_allclose(by_ratio, [low, high], atol=1e-12)
  scores = estimates.multi_ratio_cscores(mask, correct, ratios)
  want = (low + high) / 2
  want[5] = low[5]
  np.testing.assert_allclose(scores, want, atol=1e-12)
  assert np.isnan(scores[6]) and np.isnan(scores).sum() == 1


def test_influence_refuses_when_too_large():
  mask = np.zeros((3, 50_000), bool)
  correct_test = np.zeros((3, 10_000), bool)
  with pytest.raises(estimates.EstimateError,
                     match=r"\[10000, 50000\].*needs 1\.9 GiB.*1\.0 GiB"):
    estimates.influence(mask, correct_test, memory_budget="1GB")


def test_pairs_budget_too_small_is_clear():
  mask, correct_train, correct_test = random_runs(np.random.default_rng(9))
  with pytest.raises(estimates.EstimateError, match="too small.*at least"):
    estimates.high_influence_pairs(mask, correct_train, correct_test,
                                   memory_budget=1000)


def test_shape_mismatch_is_clear():
  mask, correct_train, correct_test = random_runs(np.random.default_rng(9))
  with pytest.raises(estimates.EstimateError, match="correct_test"):
    estimates.high_influence_pairs(mask, correct_train, correct_test[1:])


def test_memory_budget_uses_the_one_size_parser():
  assert not hasattr(estimates, "parse_memory")
  mask, correct_train, correct_test = random_runs(np.random.default_rng(9))
  with pytest.raises(errors.UsageError, match="memory budget.*lots"):
    estimates.high_influence_pairs(mask, correct_train, correct_test,
                                   memory_budget="lots")
  with pytest.raises(errors.UsageError, match="memory budget"):
    estimates.influence(mask, correct_test, memory_budget="0")


def test_parse_what():
  assert estimates.parse_what("mem, pairs") == ("mem", "pairs")
  with pytest.raises(estimates.EstimateError, match="memo"):
    estimates.parse_what("memo")


# ------------------------------------------------------------------ loading --


def write_release(root, mask, correct_train, correct_test, ratios, seed=0):
  """Writes each run's aux_arrays.npz, with indices in shuffled order."""
  rng = np.random.default_rng(seed)
  n_test = correct_test.shape[1]
  run_ids = {}
  for row, ratio in enumerate(ratios):
    run = run_ids.setdefault(ratio, 0)
    run_ids[ratio] += 1
    train = rng.permutation(np.flatnonzero(mask[row]))
    removed = rng.permutation(np.flatnonzero(~mask[row]))
    test = rng.permutation(n_test)
    runs.write_aux(
        runs.run_dir(root, EXPERIMENT, ratio, run),
        correctness=dict(train=correct_train[row, train],
                         removed=correct_train[row, removed],
                         test=correct_test[row, test]),
        index=dict(train=train, removed=removed, test=test),
        subsample_idx=rng.permutation(train))


@pytest.fixture
def release(tmp_path):
  rng = np.random.default_rng(10)
  parts = [random_runs(rng, 6, 50, 20, ratio) for ratio in (0.3, 0.7)]
  arrays = [np.concatenate([p[k] for p in parts]) for k in range(3)]
  ratios = [0.3] * 6 + [0.7] * 6
  write_release(str(tmp_path), *arrays, ratios)
  return str(tmp_path), arrays


def test_load_runs_canonical_order(release):
  root, (mask, correct_train, correct_test) = release
  loaded = estimates.load_runs(root, EXPERIMENT, progress=False)
  np.testing.assert_array_equal(loaded.mask, mask)
  np.testing.assert_array_equal(loaded.correct_train, correct_train)
  np.testing.assert_array_equal(loaded.correct_test, correct_test)
  np.testing.assert_array_equal(loaded.ratios, [0.3] * 6 + [0.7] * 6)
  np.testing.assert_array_equal(loaded.run_ids, list(range(6)) * 2)
  assert (loaded.num_runs, loaded.n_train, loaded.n_test) == (12, 50, 20)
  assert loaded.paths[7].endswith(os.path.join("0.7", "1", "aux_arrays.npz"))
  only = estimates.load_runs(root, EXPERIMENT, ratios=[0.7], progress=False)
  np.testing.assert_array_equal(only.mask, mask[6:])


def test_load_runs_memory_mapped(release, tmp_path):
  root, (mask, correct_train, correct_test) = release
  mapped_dir = str(tmp_path / "mapped")
  loaded = estimates.load_runs(root, EXPERIMENT, progress=False,
                               mmap_dir=mapped_dir)
  assert isinstance(loaded.mask, np.memmap)
  np.testing.assert_array_equal(loaded.mask, mask)
  np.testing.assert_array_equal(loaded.correct_train, correct_train)
  np.testing.assert_array_equal(loaded.correct_test, correct_test)
  np.testing.assert_array_equal(
      np.load(os.path.join(mapped_dir, "correct_test.npy")), correct_test)
  result = estimates.compute(loaded, "mem,pairs,cscores", 0.1, 0.0,
                             progress=False)
  assert_pairs_equal({k: result[k] for k in ("tr_idx", "tt_idx", "infl",
                                             "mem")},
                     reference_pairs(mask, correct_train, correct_test, 0.1,
                                     0.0))


def test_load_runs_then_estimates_match_reference(release):
  root, (mask, correct_train, correct_test) = release
  result = estimates.compute(estimates.load_runs(root, EXPERIMENT,
                                                 progress=False),
                             what="mem,infl,pairs,cscores",
                             infl_threshold=0.1, mem_threshold=0.0,
                             progress=False)
  np.testing.assert_allclose(result["memorization"],
                             reference_mem(mask, correct_train), atol=1e-6)
  np.testing.assert_allclose(result["influence"],
                             reference_infl(mask, correct_test), atol=1e-6)
  pairs = {k: result[k] for k in ("tr_idx", "tt_idx", "infl", "mem")}
  assert_pairs_equal(pairs, reference_pairs(mask, correct_train,
                                            correct_test, 0.1, 0.0))
  low = reference_cscores(mask[:6], correct_train[:6])
  high = reference_cscores(mask[6:], correct_train[6:])
  np.testing.assert_allclose(result["cscores_by_ratio"], [low, high])
  np.testing.assert_allclose(result["cscores"],
                             np.nanmean([low, high], axis=0))
  np.testing.assert_array_equal(result["runs_per_ratio"], [6, 6])


def _rewrite(root, ratio, run, **changes):
  path = os.path.join(runs.run_dir(root, EXPERIMENT, ratio, run),
                      runs.AUX_FILENAME)
  with np.load(path) as npz:
    aux = dict(npz)
  aux.update(changes)
  for key in [k for k, v in changes.items() if v is None]:
    del aux[key]
  files.save_npz(path, **aux)
  return path, aux


@pytest.mark.parametrize("change,message", [
    (lambda aux: dict(correctness_test=None), "missing key.*correctness_test"),
    (lambda aux: dict(index_removed=aux["index_removed"][1:],
                      correctness_removed=aux["correctness_removed"][1:]),
     "'index_train' \\+ 'index_removed'"),
    (lambda aux: dict(index_removed=np.concatenate(
        [aux["index_removed"][1:], aux["index_train"][:1]])),
     "'index_train' \\+ 'index_removed'.*repeats"),
    (lambda aux: dict(index_test=np.zeros_like(aux["index_test"])),
     "'index_test'"),
    (lambda aux: dict(subsample_idx=aux["index_removed"][
        :len(aux["index_train"])]), "'subsample_idx'"),
    (lambda aux: dict(subsample_idx=np.repeat(aux["index_train"][:1],
                                              len(aux["index_train"]))),
     "'subsample_idx'.*1 distinct"),
    (lambda aux: dict(correctness_train=aux["correctness_train"][1:]),
     "'correctness_train' has shape"),
    (lambda aux: dict(correctness_test=np.where(aux["correctness_test"], 1,
                                                -1)),
     "'correctness_test' must be bool.*value -1"),
    (lambda aux: dict(correctness_removed=aux["correctness_removed"].astype(
        np.float32)), "'correctness_removed' must be bool.*float32"),
])
def test_load_runs_errors_name_file_and_key(release, change, message):
  root, _ = release
  with np.load(os.path.join(runs.run_dir(root, EXPERIMENT, 0.7, 2),
                            runs.AUX_FILENAME)) as npz:
    aux = dict(npz)
  path, _ = _rewrite(root, 0.7, 2, **change(aux))
  with pytest.raises(runs.AuxArraysError, match=message) as e:
    estimates.load_runs(root, EXPERIMENT, progress=False)
  assert path in str(e.value)


def test_load_runs_rejects_different_sizes(release):
  root, _ = release
  rng = np.random.default_rng(0)
  train = np.arange(30)
  removed = np.arange(30, 60)
  runs.write_aux(runs.run_dir(root, EXPERIMENT, 0.7, 9),
                 correctness=dict(train=train > 0, removed=removed > 0,
                                  test=np.ones(20, bool)),
                 index=dict(train=train, removed=removed,
                            test=rng.permutation(20)),
                 subsample_idx=train)
  with pytest.raises(runs.AuxArraysError, match=r"\(60, 20\).*\(50, 20\)"):
    estimates.load_runs(root, EXPERIMENT, progress=False)


def test_load_runs_no_runs_is_clear(tmp_path):
  with pytest.raises(estimates.EstimateError, match="no runs"):
    estimates.load_runs(str(tmp_path), EXPERIMENT)


def test_load_runs_refuses_pickled_arrays(release):
  root, _ = release
  path, _ = _rewrite(root, 0.3, 1, index_test=np.array([{"x": 1}], object))
  with pytest.raises(runs.AuxArraysError, match="cannot read") as e:
    estimates.load_runs(root, EXPERIMENT, progress=False)
  assert path in str(e.value)


def _matrices_from_aux(root, experiment):
  """mask, correct_train, correct_test built with runs.read_aux."""
  rows = [runs.read_aux(found.path)
          for found in layout.list_runs(root, experiment)]
  n_train = len(rows[0]["index_train"]) + len(rows[0]["index_removed"])
  n_test = len(rows[0]["index_test"])
  mask = np.zeros((len(rows), n_train), bool)
  correct_train = np.zeros((len(rows), n_train), bool)
  correct_test = np.zeros((len(rows), n_test), bool)
  for r, aux in enumerate(rows):
    mask[r, aux["subsample_idx"]] = True
    for split in ("train", "removed"):
      correct_train[r, aux[f"index_{split}"]] = aux[f"correctness_{split}"]
    correct_test[r, aux["index_test"]] = aux["correctness_test"]
  return mask, correct_train, correct_test


def test_release_fixture_estimates_match_reference(release_root):
  mask, correct_train, correct_test = _matrices_from_aux(
      release_root, conftest.EXPERIMENT)
  loaded = estimates.load_runs(release_root, conftest.EXPERIMENT,
                               progress=False)
  assert loaded.num_runs == conftest.NUM_RUNS
  np.testing.assert_array_equal(loaded.mask, mask)
  np.testing.assert_array_equal(loaded.correct_train, correct_train)
  np.testing.assert_array_equal(loaded.correct_test, correct_test)
  result = estimates.compute(loaded, what="mem,infl,pairs,cscores",
                             infl_threshold=0.0, mem_threshold=-1.0,
                             progress=False)
  want_mem = reference_mem(mask, correct_train)
  np.testing.assert_allclose(result["memorization"], want_mem, atol=1e-6)
  np.testing.assert_allclose(result["influence"],
                             reference_infl(mask, correct_test), atol=1e-6)
  np.testing.assert_allclose(result["cscores"],
                             reference_cscores(mask, correct_train),
                             atol=1e-6)
  pairs = {k: result[k] for k in ("tr_idx", "tt_idx", "infl", "mem")}
  want = reference_pairs(mask, correct_train, correct_test, 0.0, -1.0)
  assert len(want["tr_idx"])
  assert_pairs_equal(pairs, want)
  # Three runs at ratio 0.7 leave many examples never held out.
  never_out = int(np.sum(mask.all(0)))
  assert never_out and int(result["num_never_held_out"]) == never_out
  assert int(result["num_nan_memorization"]) == int(np.isnan(want_mem).sum())


def test_cli_on_release_fixture(release_root, tmp_path):
  mask, correct_train, _ = _matrices_from_aux(release_root,
                                              conftest.EXPERIMENT)
  out = str(tmp_path / "estimates.npz")
  proc = subprocess.run(
      [sys.executable, "-m", "heldout_tf.cli.estimate", "--root", release_root,
       "--experiment", conftest.EXPERIMENT, "--out", out,
       "--what", "mem,infl,pairs,cscores"],
      capture_output=True, text=True, check=False,
      cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  assert proc.returncode == 0, proc.stderr
  want_mem = reference_mem(mask, correct_train)
  num_nan = int(np.isnan(want_mem).sum())
  assert f"{conftest.NUM_RUNS} runs" in proc.stdout
  assert f"NaN {num_nan}" in proc.stdout and "top memorized" in proc.stdout
  with np.load(out, allow_pickle=False) as npz:
    np.testing.assert_allclose(npz["memorization"], want_mem, atol=1e-6)
    assert npz["influence"].shape == (int(npz["n_test"]), mask.shape[1])
    for key in ("tr_idx", "tt_idx", "infl", "mem", "cscores",
                "num_never_held_out"):
      assert key in npz.files


# ---------------------------------------------------------------- outputs --


def test_save_estimates_and_published_formats(tmp_path):
  mask, correct_train, correct_test = random_runs(np.random.default_rng(11))
  labels = np.arange(mask.shape[1]) % 10
  result = estimates.compute(
      estimates.Runs.from_arrays(mask, correct_train, correct_test, 0.6),
      labels=labels, progress=False)
  path = str(tmp_path / "est.npz")
  estimates.save_estimates(path, result)
  with np.load(path, allow_pickle=False) as npz:
    assert set(npz.files) == set(result)
    np.testing.assert_array_equal(npz["memorization"], result["memorization"])
    np.testing.assert_array_equal(npz["tr_idx"], result["tr_idx"])
  estimates.save_pairs(str(tmp_path / "pairs.npz"), result)
  with np.load(str(tmp_path / "pairs.npz"), allow_pickle=False) as npz:
    assert sorted(npz.files) == ["infl", "mem", "tr_idx", "tt_idx"]
  estimates.save_cscores(str(tmp_path / "cs.npz"), result["cscores"],
                         labels)
  with np.load(str(tmp_path / "cs.npz"), allow_pickle=False) as npz:
    assert sorted(npz.files) == ["labels", "scores"]
    np.testing.assert_array_equal(npz["labels"], labels)


def test_cli_writes_estimates(release, tmp_path):
  root, (mask, correct_train, correct_test) = release
  out = str(tmp_path / "out" / "estimates.npz")
  proc = subprocess.run(
      [sys.executable, "-m", "heldout_tf.cli.estimate", "--root", root,
       "--experiment", EXPERIMENT, "--out", out, "--what", "mem,pairs",
       "--ratios", "0.3,0.7", "--infl_threshold", "0.1",
       "--mem_threshold", "0", "--memory_budget", "64MB",
       "--mmap_dir", str(tmp_path / "mapped")],
      capture_output=True, text=True, check=False,
      cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  assert proc.returncode == 0, proc.stderr
  assert "12 runs" in proc.stdout and "pairs" in proc.stdout
  with np.load(out, allow_pickle=False) as npz:
    np.testing.assert_allclose(npz["memorization"],
                               reference_mem(mask, correct_train), atol=1e-6)
    want = reference_pairs(mask, correct_train, correct_test, 0.1, 0.0)
    np.testing.assert_array_equal(npz["tt_idx"], want["tt_idx"])
    assert "cscores" not in npz.files
  assert os.path.exists(tmp_path / "mapped" / "mask.npy")


def test_cli_bad_budget_and_bad_data(release, tmp_path):
  root, _ = release
  base = [sys.executable, "-m", "heldout_tf.cli.estimate", "--root", root,
          "--experiment", EXPERIMENT, "--out", str(tmp_path / "e.npz")]
  cwd = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  proc = subprocess.run(base + ["--memory_budget", "lots"], cwd=cwd,
                        capture_output=True, text=True, check=False)
  assert proc.returncode != 0 and "lots" in proc.stderr
  proc = subprocess.run(base[:6] + ["missing"] + base[7:], cwd=cwd,
                        capture_output=True, text=True, check=False)
  assert proc.returncode != 0 and "no runs" in proc.stderr
  assert not os.path.exists(tmp_path / "e.npz")


def test_labels_are_checked_first_and_kept(monkeypatch):
  mask, correct_train, correct_test = random_runs(np.random.default_rng(12))
  runs = estimates.Runs.from_arrays(mask, correct_train, correct_test, 0.6)
  labels = np.arange(mask.shape[1]) % 10
  result = estimates.compute(runs, "mem", labels=labels, progress=False)
  np.testing.assert_array_equal(result["labels"], labels)

  def no_work(*args, **kwargs):
    raise AssertionError("estimated before checking the labels")

  monkeypatch.setattr(counting, "counts", no_work)
  with pytest.raises(estimates.EstimateError, match="labels must have shape"):
    estimates.compute(runs, "mem,pairs", labels=labels[1:], progress=False)


# ------------------------------------------- standard errors (issue 14) --


def reference_bernoulli_var(correct, rows):
  """p (1 - p) / n over `rows` (bool [runs, n]), float64; NaN where n = 0."""
  n = rows.sum(0).astype(np.float64)
  with np.errstate(divide="ignore", invalid="ignore"):
    p = (correct & rows).sum(0) / n
    return p * (1 - p) / n


def test_standard_errors_match_the_bernoulli_formula():
  rng = np.random.default_rng(13)
  parts = [random_runs(rng, 20, 60, 5, ratio) for ratio in (0.3, 0.7)]
  mask, correct, correct_test = [np.concatenate([p[k] for p in parts])
                                 for k in range(3)]
  mask[20:, 4] = True  # Example 4 never held out at ratio 0.7.
  ratios = np.repeat([0.3, 0.7], 20)
  result = estimates.compute(
      estimates.Runs.from_arrays(mask, correct, correct_test, ratios),
      "mem,cscores", progress=False)
  want_mem = np.sqrt(reference_bernoulli_var(correct, mask) +
                     reference_bernoulli_var(correct, ~mask))
  np.testing.assert_allclose(result["memorization_se"], want_mem, rtol=1e-12)
  low = reference_bernoulli_var(correct[:20], ~mask[:20])
  high = reference_bernoulli_var(correct[20:], ~mask[20:])
  want_cs = np.sqrt(low + high) / 2
  want_cs[4] = np.sqrt(low[4])  # Only ratio 0.3 held it out.
  np.testing.assert_allclose(result["cscores_se"], want_cs, rtol=1e-12)
  assert not np.isnan(result["cscores_se"]).any()


def test_summary_states_standard_errors_and_warns_on_few_runs():
  rng = np.random.default_rng(14)
  few = estimates.compute(estimates.Runs.from_arrays(
      *random_runs(rng, 32, 60, 40, 0.7), 0.7), progress=False)
  text = estimates.summary(few)
  # 32 runs at 0.7: n_in ~ 22, n_out ~ 10, so 0.5 sqrt(1/22 + 1/10) ~ 0.19.
  bound = float(np.median(0.5 * np.sqrt(1 / few["n_in"] + 1 / few["n_out"])))
  assert 0.15 < bound < 0.25
  se = few["memorization_se"][~np.isnan(few["memorization_se"])]
  assert 0 < (se == 0).sum() < len(se)  # Both kinds of examples.
  assert (f"standard errors from the in/out run counts: memorization "
          f"{np.median(se[se > 0]):.3f} (median over the {(se > 0).sum()} "
          f"examples the runs disagree on; exactly 0 for the other "
          f"{(se == 0).sum()}, right or wrong in every run), worst case "
          f"0.5*sqrt(1/n_in + 1/n_out) {bound:.3f} (median over examples)"
          ) in text
  assert "warning: infl_threshold 0.15 is within 2 standard errors" in text
  assert "warning: mem_threshold 0.25 is within 2 standard errors" in text
  many = estimates.compute(estimates.Runs.from_arrays(
      *random_runs(rng, 2000, 60, 40, 0.7), 0.7), progress=False)
  text = estimates.summary(many)
  assert "standard errors from the in/out run counts" in text
  assert "warning" not in text
  no_pairs = estimates.compute(estimates.Runs.from_arrays(
      *random_runs(rng, 32, 60, 40, 0.7), 0.7), "mem", progress=False)
  assert "warning" not in estimates.summary(no_pairs)


def test_standard_errors_are_saved(tmp_path):
  result = estimates.compute(estimates.Runs.from_arrays(
      *random_runs(np.random.default_rng(15)), 0.6), progress=False)
  path = str(tmp_path / "e.npz")
  estimates.save_estimates(path, result)
  with np.load(path, allow_pickle=False) as npz:
    np.testing.assert_array_equal(npz["memorization_se"],
                                  result["memorization_se"])
    np.testing.assert_array_equal(npz["cscores_se"], result["cscores_se"])
    assert npz["memorization_se"].shape == (120,)


# ------------------------------------------------ sharded (map + reduce) --


def assert_results_identical(got, want):
  assert sorted(got) == sorted(want)
  for key in want:
    assert np.asarray(got[key]).dtype == np.asarray(want[key]).dtype, key
    np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def test_sharded_counts_and_pair_blocks_give_identical_results(release):
  root, _ = release
  want = estimates.compute(estimates.load_runs(root, EXPERIMENT,
                                               progress=False),
                           "mem,pairs,cscores", 0.1, 0.0, progress=False)
  found = estimates.find_runs(root, EXPERIMENT)
  shards = [found[0:5], found[5:7], found[7:]]  # Shards straddle ratios.
  loaded = [estimates.load_runs_from(
      [r.path for r in shard], ratios=[r.ratio for r in shard],
      progress=False) for shard in shards]
  total = sum((estimates.counts_for(shard) for shard in loaded),
              estimates.CountsByRatio())
  # Pairs: any tiling of (selected train rows) x (test columns), merged.
  everything = estimates.load_runs_from([r.path for r in found],
                                        progress=False)
  c = total.total
  rows = estimators.selected_rows(c, 0.0)
  ct = everything.correct_test.astype(np.float32)
  test_correct = ct.sum(0, dtype=np.float64)
  blocks = []
  for train_block in np.array_split(rows, 3):
    for cols in np.array_split(np.arange(everything.n_test), 2):
      blocks.append(estimates.pairs_in_block(
          everything.mask[:, train_block].astype(np.float32), ct[:, cols],
          c.n_in[train_block], c.n_out[train_block], test_correct[cols], 0.1,
          train_block, cols))
  pairs = estimates.merge_pairs(blocks[::-1], c.memorization)
  used = dict(run_ids=[r.run for r in found],
              run_ratios=[r.ratio for r in found])
  got = estimates.compute_from_counts(
      total, "mem,pairs,cscores", n_test=everything.n_test,
      experiment=EXPERIMENT, pairs=pairs, infl_threshold=0.1,
      mem_threshold=0.0, **used)
  assert_results_identical(got, want)
  got = estimates.compute_from_counts(
      total, "mem,pairs,cscores", n_test=everything.n_test,
      experiment=EXPERIMENT, runs=everything, infl_threshold=0.1,
      mem_threshold=0.0, progress=False, **used)
  assert_results_identical(got, want)
  # The runs used are recorded (scores fitted on them are not judged on
  # them: heldout lds).
  np.testing.assert_array_equal(want["run_ids"], used["run_ids"])
  np.testing.assert_array_equal(want["run_ratios"], used["run_ratios"])
  assert str(want["target"]) == "correct"
  with pytest.raises(estimates.EstimateError, match="pairs need the runs"):
    estimates.compute_from_counts(total, "pairs", n_test=20)


# ------------------------------------------- layout names (defect 7) --


def copy_run(root, src, dest):
  """Copies run directory `src` to `dest` (both relative to the experiment)."""
  base = os.path.join(root, EXPERIMENT)
  os.makedirs(os.path.join(base, dest))
  with open(os.path.join(base, src, runs.AUX_FILENAME), "rb") as f:
    data = f.read()
  with open(os.path.join(base, dest, runs.AUX_FILENAME), "wb") as f:
    f.write(data)


def test_non_canonical_names_are_skipped_with_a_warning(release, caplog):
  root, (mask, _, _) = release
  for dest in ("nan/0", "inf/0", "-0.5/0", "0_7/0", "1e-1/0", "0.7/1a",
               "0.7/-1"):
    copy_run(root, "0.7/0", dest)
  with open(os.path.join(root, EXPERIMENT, "0.5"), "w") as f:
    f.write("a ratio entry that is a file")
  loaded = estimates.load_runs(root, EXPERIMENT, progress=False)
  np.testing.assert_array_equal(loaded.mask, mask)
  np.testing.assert_array_equal(loaded.ratios, [0.3] * 6 + [0.7] * 6)
  for name in ("nan", "inf", "-0.5", "0_7", "1e-1", "1a", "-1", "0.5"):
    assert any(f"skipping {os.path.join(root, EXPERIMENT)}" in r.message and
               f"{os.sep}{name}" in r.message for r in caplog.records), name


@pytest.mark.parametrize("src,dest,names", [
    ("0.7/0", "0.70/0", ("'0.70'", "'0.7'")),
    ("0.7/3", "0.7/03", ("'03'", "'3'")),
    ("0.7/3", "0.7/\u0663", ("'\u0663'", "'3'")),
])
def test_ambiguous_names_are_an_error_naming_both(release, src, dest, names):
  root, _ = release
  copy_run(root, src, dest)
  with pytest.raises(layout.LayoutError) as e:
    estimates.load_runs(root, EXPERIMENT, progress=False)
  for name in names:
    assert name in str(e.value)


# -------------------------------------------------- the CLI (defect 11) --


def test_cli_defines_no_flags_and_imports_no_tensorflow():
  proc = subprocess.run(
      [sys.executable, "-c",
       "import sys; from absl import flags; "
       "from heldout_tf import estimates; from heldout_tf.cli import estimate; "
       "print(sorted(m for m in sys.modules if m.startswith('tensorflow')), "
       "'root' in flags.FLAGS)"],
      capture_output=True, text=True, check=True,
      cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  assert proc.stdout.split() == ["[]", "False"]


def run_cli(capsys, *argv):
  """`(exit code, stdout, stderr)` of the estimate CLI, in process."""
  with pytest.raises(SystemExit) as e:
    cli.run(estimate.main, list(argv))
  out, err = capsys.readouterr()
  return e.value.code, out, err


@pytest.mark.parametrize("out,message", [
    ("{tmp}/afile/e.npz", "cannot write {tmp}/afile/e.npz: {tmp}/afile is "
     "not a directory"),
    ("{tmp}/afile/deeper/e.npz", "{tmp}/afile is not a directory"),
    ("/sys/heldout-estimates.npz", "cannot write /sys/heldout-estimates.npz"),
    ("{tmp}", "cannot write {tmp}: it is a directory, not a regular file"),
])
def test_cli_unwritable_out_is_an_error_line(release, tmp_path, capsys, out,
                                             message):
  root, _ = release
  (tmp_path / "afile").write_text("not a directory")
  out = out.format(tmp=tmp_path)
  code, stdout, stderr = run_cli(capsys, "--root", root, "--experiment",
                                 EXPERIMENT, "--out", out)
  # One rule for every output: an unwritable path is bad input.
  assert code == 1 and stdout == ""
  assert stderr.startswith("error: ") and message.format(tmp=tmp_path) in \
      stderr, stderr


def test_cli_read_only_out_is_an_error_line(release, tmp_path, capsys,
                                            monkeypatch):
  root, _ = release
  out = str(tmp_path / "e.npz")

  def read_only(*args, **kwargs):
    raise PermissionError(13, "Permission denied")

  # Root ignores directory permissions: fail the final write itself, where
  # files.atomic_write creates its temporary file.
  monkeypatch.setattr(files.tempfile, "mkstemp", read_only)
  monkeypatch.setattr(files, "check_writable", lambda out: None)
  code, _, stderr = run_cli(capsys, "--root", root, "--experiment",
                            EXPERIMENT, "--out", out)
  assert code == 1
  assert stderr.endswith(f"\nerror: cannot write {out}: Permission denied\n")
  assert "Traceback" not in stderr


def test_cli_flag_errors_name_the_flag(release, tmp_path, capsys):
  root, _ = release
  base = ["--root", root, "--experiment", EXPERIMENT, "--out",
          str(tmp_path / "e.npz")]
  for extra, message in ((["--ratios", "0.7,nan"], "--ratios: ratio must"),
                         (["--what", "mem,memo"], "--what: unknown"),
                         (["--memory_budget", "lots"], "--memory_budget"),
                         (["--infl_threshold", "nan"], "--infl_threshold")):
    code, _, stderr = run_cli(capsys, *base, *extra)
    assert code == 2 and stderr.startswith(f"error: {message}"), stderr
  assert not os.path.exists(tmp_path / "e.npz")


def test_cli_compare_flags(release, tmp_path, capsys, monkeypatch):
  args = estimate.parse_args(["--root", "r", "--experiment", "e", "--out",
                              "x/est.npz", "--compare", "pub.npz",
                              "--data_dir", "tfds"])
  assert (args.compare, args.data_dir, args.compare_plot) == (
      "pub.npz", "tfds", "x/est_compare.png")
  assert estimate.parse_args(["--root", "r", "--experiment", "e", "--out",
                              "o.npz"]).compare is None
  # The CLI checks the file with heldout_tf.estimates.published and hands the result
  # to heldout_tf.estimates.comparison.compare, both imported lazily.
  calls = []

  def compare(result, path, experiment, data_dir, plot_path):
    calls.append((int(result["num_runs"]), path, experiment, data_dir,
                  plot_path))
    return "compare report"

  def load(path):
    calls.append(("load", path))

  def check_compatible(path, experiment):
    if path == "bad.npz":
      raise errors.HeldoutError("bad.npz: not a published file")

  fakes = {"published": types.SimpleNamespace(
      load=load, check_compatible=check_compatible),
           "comparison": types.SimpleNamespace(compare=compare)}
  for name, fake in fakes.items():
    monkeypatch.setitem(sys.modules, f"heldout_tf.estimates.{name}", fake)
    monkeypatch.setattr(estimates, name, fake, raising=False)
  root, _ = release
  out = str(tmp_path / "est.npz")
  code, stdout, _ = run_cli(capsys, "--root", root, "--experiment",
                            EXPERIMENT, "--out", out, "--compare", "pub.npz",
                            "--compare_plot", str(tmp_path / "p.png"))
  assert code == 0 and stdout.rstrip().endswith("compare report")
  assert calls == [("load", "pub.npz"),
                   (12, "pub.npz", EXPERIMENT, None, str(tmp_path / "p.png"))]
  # A bad published file is refused before the runs are read.
  code, stdout, stderr = run_cli(capsys, "--root", root, "--experiment",
                                 EXPERIMENT, "--out", str(tmp_path / "o.npz"),
                                 "--compare", "bad.npz")
  assert code == 1 and stdout == ""
  assert stderr == "error: bad.npz: not a published file\n"
  assert not os.path.exists(tmp_path / "o.npz")


def test_cli_compare_checks_inputs_and_outputs_before_the_work(
    release, tmp_path, capsys):
  root, _ = release
  out = str(tmp_path / "est.npz")
  # The plot may not replace the estimates file.
  code, stdout, stderr = run_cli(capsys, "--root", root, "--experiment",
                                 EXPERIMENT, "--out", out, "--compare",
                                 "pub.npz", "--compare_plot", out)
  assert code == 2 and stdout == ""
  assert stderr.startswith(f"error: --compare_plot {out} is the --out file")
  # A file of another dataset is refused before the runs are read.
  mnist = tmp_path / "mnist-cscores.npy"
  np.save(mnist, np.zeros(60_000))
  code, stdout, stderr = run_cli(capsys, "--root", root, "--experiment",
                                 "cifar10-inception", "--out", out,
                                 "--compare", str(mnist))
  assert code == 1 and stdout == ""
  assert "is a mnist file but --experiment cifar10-inception" in stderr
  assert not os.path.exists(out)
