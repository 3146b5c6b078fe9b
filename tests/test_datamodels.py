"""Datamodels: the batched ridge and l1 solvers (heldout_tf.estimates.
regression) against closed forms and scikit-learn, a planted linear ground
truth recovered, lambda chosen without the evaluation runs, the streamed
collection fit, its file, Ray, and `heldout datamodels`."""

import os

import numpy as np
import pytest
import scipy.stats

from heldout_tf import cli
from heldout_tf import estimates
from heldout_tf import synthetic
from heldout_tf.cli import datamodels as datamodels_cli
from heldout_tf.estimates import datamodels
from heldout_tf.estimates import regression

EXPERIMENT = "planted"


def planted_arrays(seed, num_runs=360, n_train=150, n_test=30, noise=0.5,
                   support=6, scale=0.5):
  """Masks [runs, n_train], margins [runs, n_test] = mask theta^T + noise."""
  rng = np.random.default_rng(seed)
  theta = synthetic.planted_theta(n_train, n_test, rng, support, scale)
  mask = rng.random((num_runs, n_train)) < 0.5
  margins = (mask @ theta.T + 0.3 + noise *
             rng.standard_normal((num_runs, n_test))).astype(np.float32)
  return mask, margins, theta


def mean_lds(predicted, observed):
  return np.mean([scipy.stats.spearmanr(predicted[:, j], observed[:, j])[0]
                  for j in range(observed.shape[1])])


# ----------------------------------------------------------------- solvers --


def test_lasso_at_a_fixed_lambda_equals_scikit_learn():
  from sklearn.linear_model import Lasso  # pylint: disable=g-import-not-at-top
  mask, margins, _ = planted_arrays(0, num_runs=120, n_train=60, n_test=5)
  design = regression.Design(mask)
  lam = np.array([0.01, 0.03, 0.05, 0.1, 0.3])
  fit = regression.lasso(design, margins, lam, tolerance=1e-7,
                         max_iterations=20_000)
  for j, value in enumerate(lam):
    model = Lasso(alpha=value, tol=1e-9, max_iter=100_000).fit(
        design.z.astype(np.float64), margins[:, j].astype(np.float64))
    np.testing.assert_allclose(fit.weights[:, j],
                               model.coef_ * design.scale, atol=2e-4)
    # The intercept makes predictions on 0/1 masks equal too.
    np.testing.assert_allclose(fit.predict(mask)[:, j],
                               model.predict(design.z.astype(np.float64)),
                               atol=2e-3)


def test_ridge_through_the_dual_equals_the_primal_closed_form():
  mask, margins, _ = planted_arrays(1, num_runs=80, n_train=50, n_test=4)
  design = regression.Design(mask)
  lam = np.array([0.01, 0.1, 1.0, 10.0])
  fit = regression.ridge(design, margins, lam=lam)
  z = design.z.astype(np.float64)
  yc = margins - margins.mean(0)
  for j, value in enumerate(lam):
    w = np.linalg.solve(z.T @ z + len(z) * value * np.eye(z.shape[1]),
                        z.T @ yc[:, j])
    np.testing.assert_allclose(fit.weights[:, j], w * design.scale,
                               rtol=2e-3, atol=1e-5)


def test_a_constant_training_example_gets_weight_zero():
  mask, margins, _ = planted_arrays(2, num_runs=60, n_train=30, n_test=3)
  mask[:, 4] = True
  mask[:, 9] = False
  design = regression.Design(mask)
  for fit in (regression.lasso(design, margins, 0.01),
              regression.ridge(design, margins, lam=0.1)):
    assert (fit.weights[[4, 9]] == 0).all()
    assert np.isfinite(fit.weights).all()


@pytest.mark.parametrize("method", ["l1", "ridge"])
def test_a_planted_linear_truth_is_recovered(method):
  mask, margins, theta = planted_arrays(3)
  fit_rows, select_rows = datamodels.split_rows(300, 0.1)
  problem = regression.Problem(mask[:300][fit_rows], mask[:300][select_rows])
  fit = datamodels.fit_block(problem, margins[:300][fit_rows],
                             margins[:300][select_rows],
                             datamodels.Settings.for_method(method))
  weights = fit.weights.T
  corr = np.corrcoef(weights.ravel(), theta.ravel())[0, 1]
  assert corr > (0.95 if method == "l1" else 0.8), corr
  # The largest weights of each test example are its planted support.
  top = np.argsort(-np.abs(weights), axis=1)[:, :6]
  assert np.mean([theta[j, top[j]] != 0 for j in range(len(theta))]) > 0.95
  if method == "l1":  # Sparse: the support and a few small others (lambda
    found = weights != 0  # is chosen for prediction, not for selection).
    assert found[theta != 0].mean() > 0.95
    assert found[theta == 0].mean() < 0.3
    assert (np.abs(weights[(theta == 0) & found]).mean() <
            0.2 * np.abs(weights[theta != 0]).mean())
  # Predictions on runs the fit never saw track the truth.
  lds = mean_lds(fit.predict(mask[300:]), margins[300:])
  truth = mean_lds(mask[300:] @ theta.T, margins[300:])
  assert lds > truth - (0.05 if method == "l1" else 0.2), (lds, truth)


def test_l1_picks_lambda_without_the_evaluation_runs():
  """The lambda chosen on selection runs is as good, on evaluation runs the
  fit never saw, as the best lambda of the path chosen by looking at
  them."""
  mask, margins, _ = planted_arrays(4, num_runs=400, n_train=200, n_test=40,
                                    noise=1.0)
  eval_m, eval_y = mask[300:], margins[300:]
  settings = datamodels.Settings(refit=False)
  the_plan = datamodels.plan(mask[:300], margins[:300], settings)
  fit_rows, select_rows = the_plan.rows
  assert (fit_rows, select_rows) == (slice(0, 270), slice(270, 300))
  chosen = datamodels.fit_block(the_plan.problem, margins[:270],
                                margins[270:300], settings, the_plan.choice)
  design = the_plan.problem.fit
  lam_max = regression.lambda_max(design, margins[:270])
  per_ratio = {ratio: mean_lds(regression.lasso(
      design, margins[:270], lam_max * ratio).predict(eval_m), eval_y)
               for ratio in regression.lasso_ratios(16, 0.01)[1:]}
  assert the_plan.choice.ratio in per_ratio
  got = mean_lds(chosen.predict(eval_m), eval_y)
  assert got > max(per_ratio.values()) - 0.02, (got, per_ratio)
  assert got > min(per_ratio.values()) + 0.05  # The choice matters here.
  np.testing.assert_allclose(chosen.lam, the_plan.choice.ratio * lam_max)
  # The paper's choice, each test example its own lambda, is close.
  per_target = datamodels.Settings(refit=False, selection="per_target")
  own = datamodels.fit_block(the_plan.problem, margins[:270],
                             margins[270:300], per_target)
  assert mean_lds(own.predict(eval_m), eval_y) > max(per_ratio.values()) - 0.05
  assert len(np.unique(np.round(own.lam / lam_max, 6))) > 1


def test_a_target_without_signal_gets_no_weights():
  mask, margins, _ = planted_arrays(5, num_runs=200, n_train=80, n_test=4)
  rng = np.random.default_rng(5)
  margins[:, 0] = rng.standard_normal(200)  # Noise only.
  problem = regression.Problem(mask[:180], mask[180:])
  fit = regression.lasso_path(problem, margins[:180], margins[180:])
  nonzero = np.count_nonzero(fit.weights, axis=0)
  assert nonzero[0] <= 3 and (nonzero[1:] >= 4).all(), nonzero


def test_top_k_and_pairs():
  weights = np.array([[0.5, 0.0], [-0.2, 0.0], [0.1, 0.0], [-0.7, 0.3]],
                     np.float32)
  got = datamodels.top_k(weights, 2)
  np.testing.assert_array_equal(got["top_pos_idx"], [[0, 2], [3, -1]])
  np.testing.assert_allclose(got["top_pos_weight"], [[0.5, 0.1], [0.3, 0]])
  np.testing.assert_array_equal(got["top_neg_idx"], [[3, 1], [-1, -1]])
  np.testing.assert_allclose(got["top_neg_weight"], [[-0.7, -0.2], [0, 0]])
  fit = regression.Fit(weights, np.zeros(2, np.float32), np.ones(2),
                       np.ones(2))
  joined = datamodels.join([datamodels.summarise(slice(0, 2), fit, 2)], 2)
  assert list(zip(joined["tr_idx"], joined["tt_idx"], joined["infl"])) == [
      (0, 0, pytest.approx(0.5)), (1, 0, pytest.approx(-0.2)),
      (2, 0, pytest.approx(0.1)), (3, 0, pytest.approx(-0.7)),
      (3, 1, pytest.approx(0.3))]
  np.testing.assert_array_equal(joined["num_nonzero"], [4, 1])


# --------------------------------------------------------- a collection --


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("planted"))
  rng = np.random.default_rng(6)
  truth = synthetic.planted_collection(
      root, EXPERIMENT, 0.5, n_train=120, n_test=30, num_runs=220, rng=rng,
      theta=synthetic.planted_theta(120, 30, rng, 5, 0.6))
  return root, truth


def test_fit_collection_streams_blocks_and_records_its_runs(planted):
  root, truth = planted
  settings = datamodels.Settings(top_k=8)
  one = datamodels.fit_collection(root, EXPERIMENT, range(180),
                                  settings=settings, progress=False)
  assert datamodels.block_size(180, 120, 30, "4GB") == 30
  small = "850KB"  # A few test examples per block.
  assert datamodels.block_size(180, 120, 30, small) < 10
  blocks = datamodels.fit_collection(root, EXPERIMENT, range(180),
                                     settings=settings,
                                     memory_budget=small, progress=False)
  for key in ("top_pos_weight", "top_neg_weight", "intercept"):
    np.testing.assert_allclose(blocks[key], one[key], atol=1e-5)
  np.testing.assert_array_equal(blocks["lam"], one["lam"])
  np.testing.assert_array_equal(one["fit_run_ids"], np.arange(180))
  np.testing.assert_array_equal(one["select_run_ids"], np.arange(162, 180))
  assert np.all(one["fit_run_ratios"] == 0.5)
  assert str(one["method"]) == "l1" and int(one["top_k"]) == 8
  assert bool(one["refit"]) and int(one["format_version"]) == 1
  # The strongest planted effects are the top weights.
  strong = np.argwhere(truth.theta > 0.8)
  assert np.mean([i in one["top_pos_idx"][j] for j, i in strong]) > 0.9
  without = datamodels.fit_collection(
      root, EXPERIMENT, range(180), progress=False,
      settings=datamodels.Settings(refit=False))
  np.testing.assert_array_equal(without["fit_run_ids"], np.arange(162))


def test_settings_and_run_counts_are_checked(planted):
  root, _ = planted
  with pytest.raises(estimates.EstimateError, match="top_k must be >= 1"):
    datamodels.Settings(top_k=0)
  with pytest.raises(estimates.EstimateError,
                     match=r"select_fraction must be in \(0, 1\)"):
    datamodels.Settings(select_fraction=1.0)
  with pytest.raises(estimates.EstimateError, match="unknown datamodel"):
    datamodels.Settings(method="lars")
  with pytest.raises(estimates.EstimateError,
                     match="5 runs are too few for a datamodel"):
    datamodels.fit_collection(root, EXPERIMENT, range(5), progress=False)
  with pytest.raises(estimates.EstimateError, match="is too small"):
    datamodels.fit_collection(root, EXPERIMENT, range(50),
                              memory_budget="10KB", progress=False)


@pytest.mark.slow
def test_on_ray_equals_one_machine(planted):
  root, _ = planted
  from heldout_tf.estimates import on_ray  # pylint: disable=g-import-not-at-top
  settings = datamodels.Settings(top_k=5)
  want = datamodels.fit_collection(root, EXPERIMENT, range(150),
                                   settings=settings, progress=False)
  got = on_ray.datamodels_on_ray(root, EXPERIMENT, range(150),
                                 settings=settings, num_cpus=2,
                                 test_examples_per_task=7, progress=False)
  assert sorted(got) == sorted(want)
  for key, value in want.items():
    if np.asarray(value).dtype.kind == "f":
      np.testing.assert_allclose(got[key], value, atol=1e-5, err_msg=key)
    else:
      np.testing.assert_array_equal(got[key], value, err_msg=key)


def run_cli(capsys, *argv):
  with pytest.raises(SystemExit) as exit_info:
    cli.run(datamodels_cli.main, list(argv))
  out, err = capsys.readouterr()
  return exit_info.value.code, out, err


def test_cli_writes_the_file(planted, tmp_path, capsys):
  root, _ = planted
  out_file = str(tmp_path / "dm.npz")
  code, out, err = run_cli(capsys, "--root", root, "--experiment", EXPERIMENT,
                           "--fit_runs", "0-99", "--out", out_file,
                           "--method", "ridge", "--top_k", "4",
                           "--noprogress")
  assert code == 0, err
  saved = dict(np.load(out_file))
  assert str(saved["method"]) == "ridge" and int(saved["top_k"]) == 4
  assert saved["top_pos_idx"].shape == (30, 4)
  np.testing.assert_array_equal(saved["fit_run_ids"], np.arange(100))
  assert "ridge datamodels of 30 test examples on 120 training" in out
  assert out.rstrip().endswith(f"wrote {out_file}")


@pytest.mark.parametrize("argv,message", [
    (["--method", "lars"], "error: argument --method: invalid choice"),
    (["--top_k", "0"], "error: --top_k: top_k must be >= 1, got 0"),
    (["--select_fraction", "1.5"], "error: --select_fraction: "),
    (["--fit_runs", "a-b"], "error: --fit_runs: 'a-b' is not a run id"),
    (["--memory_budget", "lots"], "error: --memory_budget"),
    (["--engine", "local", "--ray_address", "h:1"],
     "error: --ray_address needs --engine ray"),
])
def test_cli_bad_flags_are_one_error_line(argv, message, capsys, tmp_path):
  args = {"--root": str(tmp_path), "--experiment": EXPERIMENT,
          "--fit_runs": "0-9", "--out": str(tmp_path / "dm.npz")}
  for flag, value in zip(argv[::2], argv[1::2]):
    args[flag] = value
  code, _, err = run_cli(capsys, *[x for kv in args.items() for x in kv])
  assert code == 2
  assert err.startswith(message) and err.count("\n") == 1, err
