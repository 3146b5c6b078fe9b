r"""Benchmarks the batched l1 datamodel fit against scikit-learn's Lasso.

  python benchmarks/datamodels.py [--n_train 2000] [--n_test 100]
      [--fit_runs 700] [--select_runs 70] [--eval_runs 100]
      [--project_n_train 20000] [--project_runs 2000] [--project_targets 32]
      [--stages slice,project,backends]

1. slice: synthetic masks and margins (a planted sparse linear truth plus
   noise) of --n_train training and --n_test test examples. Our path
   (`regression.lasso_path`, lambda per test example chosen on
   --select_runs) picks lambda; then, at exactly those lambdas, our batched
   fit (`regression.lasso`, all test examples in one set of matrix
   products) and scikit-learn's `Lasso` (one test example at a time, same
   standardised design, same objective) are timed, alternating, and judged
   by their LDS on --eval_runs fresh runs (equal within 0.01 is the aim).
   scikit-learn's `Lasso` along the same lambdas (warm-started, selected
   by the same error, stopped early the same way) is timed against our
   path too.
2. project: --project_targets test examples at --project_runs runs x
   --project_n_train training examples, the default l1 fit timed in its
   parts (set-up, the global choice's path on a sample, the fit at the
   chosen lambda with refit) with its peak memory; projected to MNIST
   scale (2000 runs x 60 000 x 10 000: the choice on 1000 test examples,
   the fit of all, in the blocks the default 4 GB budget gives), cost
   linear in n_train at the iterations measured here (stated with the
   projection).
3. backends: the two products of a FISTA iteration in numpy (OpenBLAS) and
   TensorFlow (oneDNN) at the projection's shape, GFLOP/s.

BLAS threads: whatever the environment gives (OPENBLAS_NUM_THREADS); the
script prints them. scikit-learn's coordinate descent is single-threaded.
"""

import os
import sys
import time
import tracemalloc

from absl import app
from absl import flags
import numpy as np
import scipy.stats

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from heldout_tf import synthetic  # pylint: disable=g-import-not-at-top
from heldout_tf.estimates import datamodels  # pylint: disable=g-import-not-at-top
from heldout_tf.estimates import regression  # pylint: disable=g-import-not-at-top

_N_TRAIN = flags.DEFINE_integer("n_train", 2000, "Slice: training examples.")
_N_TEST = flags.DEFINE_integer("n_test", 100, "Slice: test examples.")
_FIT_RUNS = flags.DEFINE_integer("fit_runs", 700, "Slice: fitting runs.")
_SELECT_RUNS = flags.DEFINE_integer("select_runs", 70,
                                    "Slice: runs choosing lambda.")
_EVAL_RUNS = flags.DEFINE_integer("eval_runs", 100, "Slice: LDS runs.")
_SUPPORT = flags.DEFINE_integer("support", 20,
                                "Planted nonzero effects per test example.")
_NOISE = flags.DEFINE_float("noise", 1.0, "Margin noise (std).")
_ROUNDS = flags.DEFINE_integer("rounds", 2, "Alternating timing rounds.")
_P_N_TRAIN = flags.DEFINE_integer("project_n_train", 20_000,
                                  "Projection: training examples.")
_P_RUNS = flags.DEFINE_integer("project_runs", 2000, "Projection: runs.")
_P_TARGETS = flags.DEFINE_integer("project_targets", 32,
                                  "Projection: test examples in the block.")
_STAGES = flags.DEFINE_list("stages", ["slice", "project", "backends"],
                            "Stages to run.")

MNIST = dict(runs=2000, n_train=60_000, n_test=10_000)
GB = 2**30


def planted(rng, num_runs, n_train, n_test, support, noise):
  theta = synthetic.planted_theta(n_train, n_test, rng, support, 0.3)
  mask = rng.random((num_runs, n_train)) < 0.5
  margins = (mask @ theta.T + noise * rng.standard_normal(
      (num_runs, n_test))).astype(np.float32)
  return mask, margins


def mean_lds(predicted, observed):
  return float(np.mean(np.nan_to_num([
      scipy.stats.spearmanr(predicted[:, j], observed[:, j])[0]
      for j in range(observed.shape[1])])))


def blas_threads() -> str:
  try:
    import threadpoolctl  # pylint: disable=g-import-not-at-top
    info = threadpoolctl.threadpool_info()
    return ", ".join(f"{i['internal_api']} {i['num_threads']}" for i in info)
  except ImportError:
    return "unknown"


def sklearn_fixed(z, y, lam):
  from sklearn.linear_model import Lasso  # pylint: disable=g-import-not-at-top
  coef = np.zeros((z.shape[1], y.shape[1]))
  intercept = np.zeros(y.shape[1])
  for j in range(y.shape[1]):
    model = Lasso(alpha=lam[j]).fit(z, y[:, j])
    coef[:, j], intercept[j] = model.coef_, model.intercept_
  return coef, intercept


def sklearn_path(z, y, z_select, y_select, lam_max, ratios):
  """scikit-learn's Lasso per target along our lambdas (warm-started and
  stopped early as ours), selected by the selection runs' error as ours is
  (no refit)."""
  from sklearn.linear_model import Lasso  # pylint: disable=g-import-not-at-top
  coef = np.zeros((z.shape[1], y.shape[1]))
  patience = regression.LASSO_DEFAULTS["patience"]
  for j in range(y.shape[1]):
    model = Lasso(warm_start=True)
    best = np.mean((y_select[:, j] - y[:, j].mean()) ** 2)  # lambda_max.
    since_best = 0
    for ratio in ratios[1:]:
      model.set_params(alpha=lam_max[j] * ratio).fit(z, y[:, j])
      error = np.mean((model.predict(z_select) - y_select[:, j]) ** 2)
      if error < best:
        best, coef[:, j], since_best = error, model.coef_, 0
      else:
        since_best += 1
        if since_best >= patience:
          break
  return coef


def slice_stage():
  rng = np.random.default_rng(0)
  r, v, e = _FIT_RUNS.value, _SELECT_RUNS.value, _EVAL_RUNS.value
  n, t = _N_TRAIN.value, _N_TEST.value
  print(f"== slice: {r} fit + {v} selection + {e} evaluation runs x {n} "
        f"train x {t} test (planted, support {_SUPPORT.value}, noise "
        f"{_NOISE.value}) ==")
  mask, margins = planted(rng, r + v + e, n, t, _SUPPORT.value, _NOISE.value)
  fit_m, sel_m, eval_m = mask[:r], mask[r:r + v], mask[r + v:]
  y, y_sel, y_eval = margins[:r], margins[r:r + v], margins[r + v:]
  problem = regression.Problem(fit_m, sel_m)
  design = problem.fit
  _ = design.lipschitz  # Shared set-up, not timed.
  start = time.perf_counter()
  path = regression.lasso_path(problem, y, y_sel, refit=False)
  ours_path_s = time.perf_counter() - start
  lam = path.lam
  z = design.z.astype(np.float64)
  times = {"ours": [], "sklearn": []}
  for _ in range(_ROUNDS.value):
    start = time.perf_counter()
    ours = regression.lasso(design, y, lam)
    times["ours"].append(time.perf_counter() - start)
    start = time.perf_counter()
    coef, intercept = sklearn_fixed(z, y.astype(np.float64), lam)
    times["sklearn"].append(time.perf_counter() - start)
  ours_s, sk_s = min(times["ours"]), min(times["sklearn"])
  lds_ours = mean_lds(ours.predict(eval_m), y_eval)
  sk_weights = coef * design.scale[:, None]
  lds_sk = mean_lds(eval_m @ sk_weights, y_eval)
  diff = np.abs(ours.weights - sk_weights).max() / np.abs(sk_weights).max()
  print(f"fixed lambda (ours chosen): ours {ours_s:.2f} s "
        f"({ours.iterations} iterations), scikit-learn Lasso {sk_s:.2f} s: "
        f"{sk_s / ours_s:.1f}x faster (aim >= 10x)")
  print(f"  LDS ours {lds_ours:.4f}, scikit-learn {lds_sk:.4f}: |d| "
        f"{abs(lds_ours - lds_sk):.4f} (aim <= 0.01); max |d weight| "
        f"{diff:.2%} of the largest")
  yc = y - y.mean(0)
  lam_max = np.abs(design.z.T @ yc).max(0).astype(np.float64) / r
  ratios = np.geomspace(1.0, 0.01, regression.LASSO_DEFAULTS["num_lambdas"])
  start = time.perf_counter()
  sk_path = sklearn_path(z, y.astype(np.float64),
                         problem.select.astype(np.float64), y_sel, lam_max,
                         ratios)
  sk_path_s = time.perf_counter() - start
  print(f"path + selection: ours {ours_path_s:.2f} s ({path.iterations} "
        f"iterations), scikit-learn Lasso path {sk_path_s:.2f} s: "
        f"{sk_path_s / ours_path_s:.1f}x faster; LDS ours "
        f"{mean_lds(path.predict(eval_m), y_eval):.4f}, scikit-learn "
        f"{mean_lds(eval_m @ (sk_path * design.scale[:, None]), y_eval):.4f}")


def project_stage():
  rng = np.random.default_rng(1)
  r, n, t = _P_RUNS.value, _P_N_TRAIN.value, _P_TARGETS.value
  print(f"== project: {t} test examples, {r} runs x {n} train (the default "
        "l1 fit: the global choice's path on a sample, then one lambda per "
        "test example, refit on all runs) ==")
  mask, margins = planted(rng, r, n, t, 50, 1.0)
  settings = datamodels.Settings(selection_targets=t)
  tracemalloc.start()
  start = time.perf_counter()
  rows = datamodels.split_rows(r, settings.select_fraction)
  problem = regression.Problem(mask[rows[0]], mask[rows[1]])
  _ = problem.fit.lipschitz, problem.both.lipschitz  # Shared by all blocks.
  setup = time.perf_counter() - start
  designs = tracemalloc.get_traced_memory()[0]
  tracemalloc.reset_peak()
  start = time.perf_counter()
  choice = datamodels.choose(problem, margins, rows, settings)
  choose_s = time.perf_counter() - start
  choose_peak = tracemalloc.get_traced_memory()[1] - designs
  tracemalloc.reset_peak()
  start = time.perf_counter()
  y = margins
  fit = datamodels.fit_block(problem, y[rows[0]], y[rows[1]], settings,
                             choice)
  fit_s = time.perf_counter() - start
  fit_peak = tracemalloc.get_traced_memory()[1] - designs
  tracemalloc.stop()
  per_target = max(choose_peak, fit_peak) / t
  print(f"set-up (designs, Lipschitz constants) {setup:.1f} s; the "
        f"choice's path on {t} test examples {choose_s:.1f} s (ratio "
        f"{choice.ratio:.3f}); the fit of {t} test examples {fit_s:.1f} s "
        f"({fit.iterations} iterations); memory: designs "
        f"{designs / GB:.2f} GB, working peak of the choice "
        f"{choose_peak / 2**20:.0f} MB, of the fit {fit_peak / 2**20:.0f} MB "
        f"(~{per_target / 2**20:.2f} MB per test example)")
  block = datamodels.block_size(MNIST["runs"], MNIST["n_train"],
                                MNIST["n_test"], "4GB")
  blocks = -(-MNIST["n_test"] // block)
  scale = MNIST["n_train"] / n
  sample = min(datamodels.Settings().selection_targets, MNIST["n_test"])
  hours = (setup * scale + choose_s / t * sample * scale
           + fit_s / t * MNIST["n_test"] * scale) / 3600
  memory = (designs * scale + per_target * scale * block) / GB
  print(f"projected MNIST scale ({MNIST['runs']} runs x {MNIST['n_train']} "
        f"x {MNIST['n_test']}, the choice on {sample} test examples): "
        f"the choice and the fit in {blocks} blocks of {block} test examples"
        " (4 GB budget); "
        f"~{hours:.2f} h (aim <= 2 h), assuming the iterations per test "
        f"example measured here and a cost linear in n_train; peak "
        f"~{memory:.1f} GB (aim <= 8 GB)")


def backends_stage():
  r, n, t = _P_RUNS.value, _P_N_TRAIN.value, 256
  print(f"== backends: the FISTA products Z @ W and Z^T @ R, Z [{r}, {n}], "
        f"W [{n}, {t}] float32 ==")
  rng = np.random.default_rng(2)
  z = rng.standard_normal((r, n), np.float32)
  w = rng.standard_normal((n, t), np.float32)
  flops = 4.0 * r * n * t

  def numpy_step():
    residual = z @ w
    return z.T @ residual

  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  zt, wt = tf.constant(z), tf.constant(w)

  @tf.function
  def tf_step():
    residual = tf.matmul(zt, wt)
    return tf.matmul(zt, residual, transpose_a=True)

  for name, step in (("numpy", numpy_step), ("tensorflow", lambda: tf_step(
  ).numpy())):
    step()
    start = time.perf_counter()
    for _ in range(3):
      step()
    seconds = (time.perf_counter() - start) / 3
    print(f"{name}: {seconds * 1e3:.0f} ms per iteration, "
          f"{flops / seconds / 1e9:.0f} GFLOP/s")


def main(argv):
  del argv
  print(f"BLAS threads: {blas_threads()}; load average "
        f"{os.getloadavg()[0]:.1f}")
  stages = {"slice": slice_stage, "project": project_stage,
            "backends": backends_stage}
  for name in _STAGES.value:
    stages[name]()


if __name__ == "__main__":
  app.run(main)
