"""The linear datamodeling score (heldout_tf.estimates.lds) against a direct
scipy computation, its refusals, score files, built-in methods, and
`heldout lds`."""

import os
import re
import shutil
import warnings

import numpy as np
import pytest
import scipy.stats

from heldout_tf import cli
from heldout_tf import estimates
from heldout_tf import synthetic
from heldout_tf.cli import datamodels as datamodels_cli
from heldout_tf.cli import lds as lds_cli
from heldout_tf.collection import layout
from heldout_tf.core import files
from heldout_tf.estimates import attributions
from heldout_tf.estimates import datamodels
from heldout_tf.estimates import lds

EXPERIMENT = "planted"
N_TRAIN, N_TEST, NUM_RUNS = 100, 24, 200


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("planted"))
  rng = np.random.default_rng(11)
  truth = synthetic.planted_collection(
      root, EXPERIMENT, 0.5, n_train=N_TRAIN, n_test=N_TEST,
      num_runs=NUM_RUNS, rng=rng,
      theta=synthetic.planted_theta(N_TRAIN, N_TEST, rng, 4, 0.6))
  return root, truth


def eval_runs(root, ids=range(150, 200)):
  return estimates.load_runs(root, EXPERIMENT, run_ids=ids, target="margin",
                             target_splits=("test",), progress=False)


def direct_lds(tau, mask, margins):
  """Per test example: scipy's Spearman of mask @ tau^T and the margins;
  undefined (NaN) counted as 0."""
  predicted = mask.astype(np.float64) @ np.nan_to_num(tau).T
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", scipy.stats.ConstantInputWarning)
    rho = np.array([scipy.stats.spearmanr(predicted[:, j], margins[:, j])[0]
                    for j in range(margins.shape[1])])
  return np.nan_to_num(rho, nan=0.0), np.isnan(rho)


def test_spearman_columns_equals_scipy_with_ties_and_constants():
  rng = np.random.default_rng(0)
  a = rng.integers(0, 5, (30, 6)).astype(float)  # Many ties.
  b = rng.standard_normal((30, 6))
  a[:, 2] = 1.0  # Constant prediction.
  b[:, 4] = -3.0  # Constant margin.
  rho, undefined = lds.spearman_columns(a, b)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", scipy.stats.ConstantInputWarning)
    want = np.array([scipy.stats.spearmanr(a[:, j], b[:, j])[0]
                     for j in range(6)])
  np.testing.assert_array_equal(undefined, np.isnan(want))
  assert undefined.tolist() == [False, False, True, False, True, False]
  np.testing.assert_allclose(rho, np.nan_to_num(want), atol=1e-12)


def test_lds_of_dense_and_pairs_equals_a_direct_computation(planted):
  root, truth = planted
  runs = eval_runs(root)
  rng = np.random.default_rng(1)
  tau = truth.theta + 0.3 * rng.standard_normal(truth.theta.shape)
  tau[[3, 7]] = 0.0  # No attribution: a constant prediction.
  tau[5, 9] = np.nan  # An undefined estimate counts as 0.
  want, undefined = direct_lds(tau, truth.mask[150:], truth.margin_test[150:])
  assert undefined.sum() == 2
  tt, tr = np.nonzero(np.nan_to_num(tau))
  tr_dup = np.concatenate([tr, tr[:5]])  # Repeated pairs add up.
  tt_dup = np.concatenate([tt, tt[:5]])
  infl = np.concatenate([tau[tt, tr], np.zeros(5)])
  sources = [attributions.Dense("dense", tau, ()),
             attributions.Pairs("pairs", tr_dup, tt_dup, infl, ()),
             attributions.Blocks("blocks", lambda cols: tau[cols], N_TEST, (),
                                 block=5)]
  results = lds.score(runs, sources)
  for result in results:
    np.testing.assert_allclose(result.per_example, want, atol=1e-12,
                               err_msg=result.name)
    np.testing.assert_array_equal(result.undefined, undefined)
    assert result.mean == pytest.approx(want.mean())
    assert result.se == pytest.approx(want.std(ddof=1) / np.sqrt(N_TEST))
    assert result.num_undefined == 2
  text = lds.table(results, runs)
  assert text.startswith("LDS on 50 runs (ratio 0.5: runs 150-199), 24 test "
                         "examples")
  assert re.search(r"dense\s+%.3f\s+%.3f\s+2/24\s+0" % (
      want.mean(), want.std(ddof=1) / np.sqrt(N_TEST)), text), text


def test_run_summary_groups_runs_by_ratio():
  runs = estimates.Runs.from_arrays(
      np.zeros((6, 3), bool), np.zeros((6, 3), bool), np.zeros((6, 2), bool),
      ratios=[0.5, 0.5, 0.5, 0.7, np.nan, np.nan], run_ids=[0, 1, 4, 2, 8, 9])
  assert lds.run_summary(runs) == ("6 runs (ratio 0.5: runs 0-1,4; ratio "
                                   "0.7: runs 2; ratio unknown: runs 8-9)")


def test_refusals(planted):
  root, truth = planted
  runs = eval_runs(root)
  with pytest.raises(lds.LdsError, match=r"^fitted: was fitted on 10 of the "
                     r"50 evaluation runs \(e.g. ratio 0.5 run 150\)"):
    lds.score(runs, [attributions.Dense(
        "fitted", truth.theta, [(0.5, r) for r in range(140, 160)])])
  with pytest.raises(lds.LdsError, match=r"e.g. ratio 0.5 run 199"):
    lds.score(runs, [attributions.Dense("nan", truth.theta,
                                        [(np.nan, 199)])])
  # Another ratio's run 150 is another run.
  lds.score(runs, [attributions.Dense("other", truth.theta, [(0.7, 150)])])
  with pytest.raises(lds.LdsError, match="10 evaluation runs; the LDS needs "
                     "at least 20"):
    lds.score(eval_runs(root, range(190, 200)),
              [attributions.Dense("d", truth.theta, ())])
  with pytest.raises(attributions.ScoresError,
                     match=r"scores have shape \(24, 99\), the collection "
                     r"needs \[n_test, n_train\] = \(24, 100\)"):
    lds.score(runs, [attributions.Dense("d", truth.theta[:, 1:], ())])
  with pytest.raises(attributions.ScoresError,
                     match=r"key 'tr_idx' must hold indices in \[0, 100\)"):
    lds.score(runs, [attributions.Pairs("p", [100], [0], [1.0], ())])
  with pytest.raises(lds.LdsError, match="need their test margins"):
    lds.score(estimates.load_runs(root, EXPERIMENT, progress=False), [])


def test_score_files(planted, tmp_path):
  root, truth = planted
  runs = eval_runs(root)
  path = str(tmp_path / "mine.npz")
  files.save_npz(path, scores=truth.theta.astype(np.float32),
                 fit_run_ids=np.zeros(0, np.int64),
                 fit_run_ratios=np.zeros(0))
  source = attributions.read(path, N_TRAIN, N_TEST)
  assert source.name == "mine.npz (scores, dense)" and source.fit_runs == ()
  want, _ = direct_lds(truth.theta, truth.mask[150:], truth.margin_test[150:])
  np.testing.assert_allclose(lds.score(runs, [source])[0].per_example, want,
                             atol=1e-6)
  files.save_npz(path, scores=truth.theta)
  with pytest.raises(attributions.ScoresError,
                     match="records no runs it was fitted on"):
    attributions.read(path, N_TRAIN, N_TEST)
  files.save_npz(path, tr_idx=np.array([0]), fit_run_ids=np.array([1]),
                 fit_run_ratios=np.array([0.5]))
  with pytest.raises(attributions.ScoresError, match="holds no scores"):
    attributions.read(path, N_TRAIN, N_TEST)
  files.save_npz(path, scores=truth.theta[:, :50],
                 fit_run_ids=np.zeros(0, np.int64),
                 fit_run_ratios=np.zeros(0))
  with pytest.raises(attributions.ScoresError,
                     match=r"mine.npz: key 'scores' has shape \(24, 50\), "
                     r"expected \(24, 100\)"):
    attributions.read(path, N_TRAIN, N_TEST)
  # heldout estimate's files record their runs.
  est = estimates.compute(estimates.load_runs(
      root, EXPERIMENT, run_ids=range(100), target="margin", progress=False),
                          "mem,infl", progress=False)
  estimates.save_estimates(path, est)
  source = attributions.read(path, N_TRAIN, N_TEST)
  assert source.name == ("mine.npz (difference of means of margin, dense)")
  assert source.fit_runs == tuple((0.5, r) for r in range(100))


def test_built_in_methods_rank_as_the_truth_says(planted):
  root, truth = planted
  runs = eval_runs(root)
  fit = estimates.load_runs(root, EXPERIMENT, run_ids=range(150),
                            target="margin", target_splits=("test",),
                            progress=False)
  sources = attributions.builtins(fit, attributions.FROM_RUNS)
  results = {r.name: r for r in lds.score(runs, sources)}
  names = attributions.BUILTIN_NAMES
  # The difference of means of the margin is the dense influence.
  dom = estimates.targets.influence(fit.mask, fit.values_test)
  want, _ = direct_lds(dom, truth.mask[150:], truth.margin_test[150:])
  np.testing.assert_allclose(results[names["dom_margin"]].per_example, want,
                             atol=1e-9)
  oracle = lds.score(runs, [attributions.Dense("truth", truth.theta, ())])[0]
  l1 = results[names["l1"]]
  assert l1.mean > oracle.mean - 0.05
  assert l1.mean > results[names["dom_margin"]].mean + 0.05
  assert (results[names["dom_margin"]].mean >
          results[names["dom_correct"]].mean)
  assert all(r.num_fit_runs == 150 for r in results.values())
  with pytest.raises(attributions.ScoresError, match="unknown method"):
    attributions.builtins(fit, ["trak"])


def run(capsys, main, *argv):
  with pytest.raises(SystemExit) as exit_info:
    cli.run(main, list(argv))
  out, err = capsys.readouterr()
  return exit_info.value.code, out, err


def test_cli_judges_files_and_built_ins(planted, tmp_path, capsys):
  root, _ = planted
  dm = str(tmp_path / "dm.npz")
  code, _, err = run(capsys, datamodels_cli.main, "--root", root,
                     "--experiment", EXPERIMENT, "--fit_runs", "0-149",
                     "--out", dm, "--noprogress")
  assert code == 0, err
  out_file = str(tmp_path / "lds.npz")
  code, out, err = run(capsys, lds_cli.main, "--root", root, "--experiment",
                       EXPERIMENT, "--eval_runs", "150-199", "--scores", dm,
                       "--fit_runs", "0-149", "--methods",
                       "dom_correct,l1", "--out", out_file, "--noprogress")
  assert code == 0, err
  lines = out.splitlines()
  assert lines[0].startswith("LDS on 50 runs (ratio 0.5: runs 150-199)")
  assert lines[2].startswith("dm.npz (l1 datamodels, ")
  assert lines[3].startswith(attributions.BUILTIN_NAMES["dom_correct"])
  assert lines[4].startswith(attributions.BUILTIN_NAMES["l1"])
  saved = dict(np.load(out_file))
  assert saved["lds"].shape == (3, N_TEST)
  # The file and the built-in l1 are the same fit (top-k keeps them all).
  np.testing.assert_allclose(saved["mean"][0], saved["mean"][2], atol=1e-6)
  np.testing.assert_array_equal(saved["eval_run_ids"], np.arange(150, 200))
  # Judged on runs it was fitted on: refused, naming the file.
  code, _, err = run(capsys, lds_cli.main, "--root", root, "--experiment",
                     EXPERIMENT, "--eval_runs", "100-199", "--scores", dm,
                     "--methods", "none", "--noprogress")
  assert code == 1
  assert err == ("error: dm.npz (l1 datamodels, "
                 f"{len(np.load(dm)['tr_idx'])} pairs): was fitted on 50 of "
                 "the 100 evaluation runs (e.g. ratio 0.5 run 100): evaluate "
                 "on runs it never saw\n")


def test_cli_default_outputs_are_where_the_report_looks(planted, tmp_path,
                                                        capsys):
  root, _ = planted
  copy = str(tmp_path / "copy")
  shutil.copytree(root, copy)
  code, out, err = run(capsys, datamodels_cli.main, "--root", copy,
                       "--experiment", EXPERIMENT, "--fit_runs", "0-149",
                       "--noprogress")
  assert code == 0, err
  dm = layout.attribution_path(copy, EXPERIMENT, 0.5,
                               layout.DATAMODELS_FILENAME)
  assert out.endswith(f"wrote {dm}\n") and os.path.isfile(dm)
  code, out, err = run(capsys, lds_cli.main, "--root", copy, "--experiment",
                       EXPERIMENT, "--eval_runs", "150-199", "--scores", dm,
                       "--methods", "none", "--out", "none", "--noprogress")
  assert code == 0, err
  assert "wrote" not in out
  assert not os.path.exists(os.path.join(os.path.dirname(dm),
                                         layout.LDS_FILENAME))
  # The result directory is not taken for a run.
  assert len(estimates.find_runs(copy, EXPERIMENT)) == NUM_RUNS
  # Runs at two ratios: no default, say so.
  synthetic.planted_collection(copy, EXPERIMENT, 0.25, n_train=N_TRAIN,
                               n_test=N_TEST, num_runs=6,
                               rng=np.random.default_rng(0))
  code, _, err = run(capsys, datamodels_cli.main, "--root", copy,
                     "--experiment", EXPERIMENT, "--fit_runs", "0-5")
  assert code == 2 and err == ("error: --out: the runs are at ratios 0.25, "
                               "0.5: give --out FILE.npz, or --ratios R for "
                               "one ratio\n")


def test_cli_without_margins_says_which_file(planted, tmp_path, capsys):
  root, _ = planted
  copy = str(tmp_path / "copy")
  shutil.copytree(root, copy)
  missing = os.path.join(copy, EXPERIMENT, "0.5", "160", "margins.npz")
  os.remove(missing)
  code, _, err = run(capsys, lds_cli.main, "--root", copy, "--experiment",
                     EXPERIMENT, "--eval_runs", "150-199", "--methods",
                     "dom_correct", "--noprogress")
  assert code == 1 and err == f"error: {missing}: file not found\n"


@pytest.mark.parametrize("argv,message", [
    (["--eval_runs", "all"], "error: --eval_runs: 'all' leaves no run"),
    (["--methods", "trak"], "error: --methods: unknown ['trak']"),
    (["--methods", "none"], "error: nothing to judge"),
    (["--fit_runs", "0-160"], "error: --fit_runs and --eval_runs share"),
    (["--scores", "nope.npz"], "error: --scores nope.npz: no such file"),
    (["--min_eval_runs", "1"], "error: --min_eval_runs must be >= 2"),
    (["--eval_runs", "1-0"], "error: --eval_runs: range '1-0' is empty"),
])
def test_cli_bad_flags_are_one_error_line(argv, message, capsys, tmp_path):
  args = {"--root": str(tmp_path), "--experiment": EXPERIMENT,
          "--eval_runs": "150-199"}
  for flag, value in zip(argv[::2], argv[1::2]):
    args[flag] = value
  code, _, err = run(capsys, lds_cli.main,
                     *[x for kv in args.items() for x in kv])
  assert code == 2
  assert err.startswith(message) and err.count("\n") == 1, err
