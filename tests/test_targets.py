"""Estimates on margins and probabilities (heldout_tf.estimates.targets),
the run planner, and `heldout estimate --target/--runs/--plan_se`."""

import os
import re

import numpy as np
import pytest

from heldout_tf import cli
from heldout_tf import estimates
from heldout_tf import synthetic
from heldout_tf.cli import estimate
from heldout_tf.collection import margins
from heldout_tf.estimates import planning
from heldout_tf.estimates import targets

EXPERIMENT = "planted"


# ------------------------------------------------ plain float64 reference --


def reference_groups(mask, values):
  """Per column: (mean_in - mean_out, Welch SE), one column at a time."""
  diff, se = [], []
  for i in range(mask.shape[1]):
    inside = values[mask[:, i], i].astype(np.float64)
    outside = values[~mask[:, i], i].astype(np.float64)
    diff.append(inside.mean() - outside.mean())
    se.append(np.sqrt(inside.var(ddof=1) / len(inside) +
                      outside.var(ddof=1) / len(outside)))
  return np.array(diff), np.array(se)


def reference_influence(mask, values_test):
  """[n_test, n_train] float64 and its Welch standard errors."""
  n_train, n_test = mask.shape[1], values_test.shape[1]
  infl, se = np.empty((n_test, n_train)), np.empty((n_test, n_train))
  v = values_test.astype(np.float64)
  for i in range(n_train):
    inside, outside = v[mask[:, i]], v[~mask[:, i]]
    infl[:, i] = inside.mean(0) - outside.mean(0)
    se[:, i] = np.sqrt(inside.var(0, ddof=1) / len(inside) +
                       outside.var(0, ddof=1) / len(outside))
  return infl, se


def random_values(seed, num_runs=60, n_train=90, n_test=40):
  rng = np.random.default_rng(seed)
  mask = rng.random((num_runs, n_train)) < 0.5
  theta = synthetic.planted_theta(n_train, n_test, rng, support=3)
  values_test = (mask @ theta.T + rng.standard_normal((num_runs, n_test))
                 + 7.0).astype(np.float32)  # Offset: centring matters.
  values_train = (2 * mask + rng.standard_normal((num_runs, n_train))
                  ).astype(np.float32)
  return mask, values_train, values_test


def test_memorization_equals_a_float64_reference():
  mask, values_train, _ = random_values(0)
  mem, se = targets.memorization(mask, values_train)
  want_mem, want_se = reference_groups(mask, values_train)
  np.testing.assert_allclose(mem, want_mem, rtol=0, atol=1e-9)
  np.testing.assert_allclose(se, want_se, rtol=1e-9)
  # Column chunks give the same numbers.
  m = targets.moments(mask, values_train, chunk_bytes=8 * 60 * 7)
  np.testing.assert_allclose(m.difference, want_mem, rtol=0, atol=1e-9)


def test_influence_and_pairs_equal_a_float64_reference():
  mask, values_train, values_test = random_values(1)
  want, want_se = reference_influence(mask, values_test)
  got = targets.influence(mask, values_test)
  assert got.dtype == np.float32 and got.shape == want.shape
  np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
  mem, _ = reference_groups(mask, values_train)
  pairs = targets.high_influence_pairs(mask, values_train, values_test,
                                       infl_threshold=0.5,
                                       mem_threshold=1.5,
                                       memory_budget=200_000)
  tt, tr = np.nonzero((want >= 0.5) & (mem >= 1.5)[None, :])
  order = np.lexsort((tt, tr))
  assert len(order) > 10
  np.testing.assert_array_equal(pairs["tr_idx"], tr[order])
  np.testing.assert_array_equal(pairs["tt_idx"], tt[order])
  np.testing.assert_allclose(pairs["infl"], want[tt, tr][order], atol=1e-9)
  np.testing.assert_allclose(pairs["infl_se"], want_se[tt, tr][order],
                             rtol=1e-7)
  np.testing.assert_allclose(pairs["mem"], mem[tr[order]], atol=1e-9)


def test_undefined_examples_are_nan_and_never_paired():
  mask, values_train, values_test = random_values(2)
  mask[:, 4] = True  # Never held out.
  mask[:, 7] = False  # Never trained on.
  mem, se = targets.memorization(mask, values_train)
  assert np.isnan(mem[[4, 7]]).all() and np.isnan(se[[4, 7]]).all()
  assert not np.isnan(mem[[0, 1, 2]]).any()
  infl = targets.influence(mask, values_test)
  assert np.isnan(infl[:, [4, 7]]).all()
  pairs = targets.high_influence_pairs(mask, values_train, values_test,
                                       -10.0, -10.0)
  assert not np.isin(pairs["tr_idx"], [4, 7]).any()


def test_budgets_are_refused_with_what_they_need():
  mask, values_train, values_test = random_values(3)
  with pytest.raises(estimates.EstimateError,
                     match="more than the 1.0 KiB budget; use high_influence"):
    targets.influence(mask, values_test, memory_budget="1KB")
  with pytest.raises(estimates.EstimateError, match="needs at least"):
    targets.high_influence_pairs(mask, values_train, values_test, 0, 0,
                                 memory_budget="10KB")


def test_compute_on_margins_names_the_target_in_every_key():
  mask, values_train, values_test = random_values(4)
  runs = estimates.Runs.from_arrays(mask, values_train > 0, values_test > 0,
                                    ratios=0.5, target="margin",
                                    values_train=values_train,
                                    values_test=values_test)
  result = estimates.compute(runs, "mem,infl,pairs", 0.5, 1.5,
                             progress=False)
  assert str(result["target"]) == "margin"
  for name in ("memorization", "memorization_se", "num_nan_memorization",
               "influence", "tr_idx", "tt_idx", "infl", "infl_se", "mem",
               "infl_threshold", "mem_threshold", "test_variance"):
    assert f"{name}_margin" in result and name not in result, name
  np.testing.assert_allclose(result["test_variance_margin"],
                             values_test.astype(np.float64).var(0, ddof=1),
                             rtol=1e-9)
  summary = estimates.summary(result)
  assert "target: margin" in summary and "Welch" in summary
  assert "high-influence pairs on margin (infl >= 0.5, mem >= 1.5)" in summary
  with pytest.raises(estimates.EstimateError,
                     match="cscores are held-out accuracy"):
    estimates.compute(runs, "mem,cscores")
  assert estimates.parse_what("auto", "margin") == ("mem", "pairs")
  assert estimates.parse_what("auto") == ("mem", "pairs", "cscores")
  with pytest.raises(estimates.EstimateError, match="unknown target"):
    estimates.parse_what("mem", "loss")


def test_the_planner_scales_the_standard_error_with_the_runs():
  assert planning.runs_needed(0.04, 100, 0.02) == 400
  mask, values_train, values_test = random_values(5, num_runs=400)
  runs = estimates.Runs.from_arrays(mask, values_train > 0, values_test > 0,
                                    target="margin",
                                    values_train=values_train,
                                    values_test=values_test)
  result = estimates.compute(runs, "mem", progress=False)
  mem, influence = planning.plan(result, 0.05)
  se = result["memorization_se_margin"]
  assert mem.median == int(np.median(np.ceil(400 * (se / 0.05) ** 2)))
  assert mem.current_se == pytest.approx(np.median(se))
  # The plan holds: a quarter of the runs gives about twice the error.
  few = estimates.compute(estimates.Runs.from_arrays(
      mask[:100], values_train[:100] > 0, values_test[:100] > 0,
      target="margin", values_train=values_train[:100],
      values_test=values_test[:100]), "mem", progress=False)
  ratio = (np.median(few["memorization_se_margin"]) /
           np.median(result["memorization_se_margin"]))
  assert 1.7 < ratio < 2.3, ratio
  assert influence.estimate == "influence" and influence.median > 0
  line = planning.summary_lines(result, 0.05)[0]
  assert line.startswith(f"run planner: memorization standard error 0.05 "
                         f"needs {mem.median} runs for the median example")
  with pytest.raises(estimates.EstimateError, match="must be > 0"):
    planning.runs_needed(0.1, 10, 0)


def test_the_planner_for_correctness_uses_the_papers_standard_errors():
  rng = np.random.default_rng(6)
  mask = rng.random((64, 30)) < 0.5
  correct = rng.random((64, 30)) < 0.7
  result = estimates.compute(estimates.Runs.from_arrays(
      mask, correct, correct[:, :10]), "mem", progress=False)
  mem, influence = planning.plan(result, 0.1)
  se = result["memorization_se"]
  assert mem.median == int(np.median(np.ceil(64 * (se[se > 0] / 0.1) ** 2)))
  bound = 0.5 * np.sqrt(1 / result["n_in"] + 1 / result["n_out"])
  assert influence.median == int(np.median(np.ceil(64 * (bound / 0.1) ** 2)))


# ---------------------------------------------- a collection with margins --


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("planted"))
  return root, synthetic.planted_collection(
      root, EXPERIMENT, 0.5, n_train=60, n_test=25, num_runs=40,
      rng=np.random.default_rng(7))


def test_load_runs_reads_the_margins_of_the_asked_runs(planted):
  root, truth = planted
  runs = estimates.load_runs(root, EXPERIMENT, run_ids=range(5, 40),
                             target="margin", progress=False)
  np.testing.assert_array_equal(runs.run_ids, np.arange(5, 40))
  np.testing.assert_array_equal(runs.mask, truth.mask[5:])
  np.testing.assert_array_equal(runs.values_test, truth.margin_test[5:])
  np.testing.assert_array_equal(runs.target_values("train"),
                                truth.margin_train[5:])
  probabilities = estimates.load_runs(root, EXPERIMENT, target="probability",
                                      progress=False)
  np.testing.assert_allclose(
      probabilities.values_test,
      1 / (1 + np.exp(-truth.margin_test.astype(np.float64))), rtol=1e-6)
  plain = estimates.load_runs(root, EXPERIMENT, progress=False)
  assert plain.values_test is None and plain.target == "correct"
  with pytest.raises(estimates.EstimateError, match="hold no margin values"):
    estimates.Runs.target_values(
        estimates.Runs(**dict(vars(plain), target="margin")), "test")
  with pytest.raises(estimates.EstimateError,
                     match=r"2 of the 3 runs asked for are not under .*: "
                     "runs 40, 41"):
    estimates.load_runs(root, EXPERIMENT, run_ids=[39, 40, 41])


def test_a_collection_without_margins_works_for_correctness_only(planted,
                                                                 tmp_path):
  root, _ = planted
  copy = str(tmp_path / "copy")
  import shutil  # pylint: disable=g-import-not-at-top
  shutil.copytree(root, copy)
  path = margins.margins_path(os.path.join(copy, EXPERIMENT, "0.5", "3"))
  os.remove(path)
  estimates.compute(estimates.load_runs(copy, EXPERIMENT, progress=False),
                    progress=False)
  with pytest.raises(margins.MarginsError,
                     match=f"^{re.escape(path)}: file not found"):
    estimates.load_runs(copy, EXPERIMENT, target="margin", progress=False)


def run_cli(capsys, *argv):
  with pytest.raises(SystemExit) as exit_info:
    cli.run(estimate.main, list(argv))
  out, err = capsys.readouterr()
  return exit_info.value.code, out, err


def test_cli_target_runs_and_plan(planted, tmp_path, capsys):
  root, truth = planted
  out_file = str(tmp_path / "est.npz")
  code, out, err = run_cli(capsys, "--root", root, "--experiment",
                           EXPERIMENT, "--out", out_file, "--target",
                           "margin", "--runs", "0-29", "--plan_se", "0.05",
                           "--infl_threshold", "0.8", "--mem_threshold",
                           "1.0")
  assert code == 0, err
  saved = dict(np.load(out_file))
  np.testing.assert_array_equal(saved["run_ids"], np.arange(30))
  want, _ = reference_groups(truth.mask[:30], truth.margin_train[:30])
  np.testing.assert_allclose(saved["memorization_margin"], want, atol=1e-6)
  assert "cscores" not in saved and "memorization" not in saved
  assert "target: margin" in out
  assert "run planner: memorization standard error 0.05 needs" in out
  assert "run planner: influence standard error 0.05 needs" in out
  # The strongest planted effects are found as pairs.
  strong = np.argwhere(truth.theta >= 1.5)
  found = set(zip(saved["tt_idx_margin"], saved["tr_idx_margin"]))
  assert np.mean([tuple(p) in found for p in strong]) > 0.8


@pytest.mark.parametrize("argv,message", [
    (["--target", "loss"], "error: argument --target: invalid choice"),
    (["--target", "margin", "--what", "mem,cscores"],
     "error: --what: cscores are held-out accuracy"),
    (["--target", "margin", "--engine", "ray"],
     "error: --engine ray estimates --target correct on every run"),
    (["--runs", "0-x"], "error: --runs: '0-x' is not a run id"),
    (["--plan_se", "0"], "error: --plan_se must be > 0, got 0.0"),
    (["--target", "probability", "--compare", "x.npz"],
     "error: --compare needs --target correct"),
])
def test_cli_bad_flags_are_one_error_line(argv, message, capsys, tmp_path):
  code, _, err = run_cli(capsys, "--root", str(tmp_path), "--experiment",
                         EXPERIMENT, "--out", str(tmp_path / "o.npz"), *argv)
  assert code == 2
  assert err.startswith(message) and err.count("\n") == 1, err
