"""Linear regression of many targets on one design: ridge and l1 (lasso).

A datamodel regresses each test example's margin on the runs' training
masks. All test examples share the design (the masks), so a block of them
is fitted at once: one matrix product serves every target.

  problem = Problem(mask_fit, mask_select)   # built once, shared by blocks
  fit = lasso_path(problem, y_fit, y_select)   # or ridge(problem, ...)
  fit.weights    # float32 [n_train, targets], per mask entry (0/1 units)
  fit.intercept  # float32 [targets]: prediction = mask @ weights + intercept

Both minimise, per target j, (1 / 2R) ||y_j - b_j - Z w_j||^2 + penalty,
with Z the masks standardised by the fit runs' mean and standard deviation
per training example (as the datamodels paper's solver, `fast_l1`, does)
and R the number of runs. Examples trained on by all fit runs or by none
have no variance: their weight is 0.

- `lasso_path`: penalty lambda_j ||w_j||_1 along a path of `num_lambdas`
  values from lambda_max_j (the smallest lambda giving w_j = 0) down to
  `lambda_min_ratio * lambda_max_j`, warm-started, solved by FISTA
  (accelerated proximal gradient with step R / ||Z||^2 and adaptive
  restart), every target of the block in the same matrix products. Each
  target keeps the lambda with the lowest mean squared error on the
  selection runs; its path stops once that error has not improved for
  `patience` values (as `fast_l1` stops). With `refit`, the weights are
  then fitted again at that lambda on the fit and selection runs together
  (as the paper's `compute_datamodels.py` does).
- `ridge`: penalty (lambda_j / 2) ||w_j||^2 in closed form through the dual,
  w = Z^T (Z Z^T + R lambda I)^-1 y: one eigendecomposition of the R x R
  matrix Z Z^T serves every lambda and target; lambda_j from a grid
  relative to the data's scale, chosen and refitted the same way.
- `lasso`, `ridge(..., lam=)`: one given lambda per target (no selection).

numpy (BLAS): float32 products, float64 where it matters (the R x R
eigenproblems, means, errors).
"""

import dataclasses
from typing import Optional

import numpy as np
import scipy.sparse.linalg

from heldout_tf.estimates.counting import EstimateError

LASSO_DEFAULTS = dict(num_lambdas=16, lambda_min_ratio=0.01, tolerance=1e-3,
                      max_iterations=300, patience=2)
RIDGE_DEFAULTS = dict(num_lambdas=13, lambda_min_ratio=1e-3,
                      lambda_max_ratio=1e3)


class Design:
  """The standardised masks of some runs: `Z = (mask - mean) / std`."""

  def __init__(self, mask):
    mask = np.asarray(mask)
    if mask.ndim != 2 or mask.shape[0] < 2:
      raise EstimateError(f"a fit needs a [runs >= 2, n_train] mask, got "
                          f"{mask.shape}")
    self.mask = mask
    self.num_runs, self.n_train = mask.shape
    self.mean = mask.mean(axis=0, dtype=np.float64)
    std = np.sqrt(np.maximum(self.mean * (1.0 - self.mean), 0.0))
    self.varies = std > 1e-12
    self.std = np.where(self.varies, std, 0.0)
    # 1 / std, and 0 where constant: that weight stays 0.
    self.scale = np.where(self.varies, 1.0 / np.where(self.varies, std, 1.0),
                          0.0)
    self.z = self.standardise(mask)
    self._lipschitz = None
    self._eig = None

  def standardise(self, mask) -> np.ndarray:
    """float32 [runs, n_train]: `mask` standardised as these runs were."""
    x = np.asarray(mask, np.float32)
    return ((x - self.mean.astype(np.float32)) *
            self.scale.astype(np.float32))

  def _gram(self) -> np.ndarray:
    return (self.z @ self.z.T).astype(np.float64)

  @property
  def lipschitz(self) -> float:
    """||Z||_2^2 / R: the lasso gradient's Lipschitz constant."""
    if self._lipschitz is None:
      if self._eig is not None:
        top = self._eig[0][-1]
      else:
        top = scipy.sparse.linalg.eigsh(self._gram(), k=1, which="LA",
                                        return_eigenvectors=False)[0]
      self._lipschitz = float(top) * 1.001 / self.num_runs  # float32 slack.
    return self._lipschitz

  @property
  def eig(self):
    """`(values, vectors)` of Z Z^T (float64, ascending), for ridge."""
    if self._eig is None:
      values, vectors = np.linalg.eigh(self._gram())
      self._eig = (np.maximum(values, 0.0), vectors)
    return self._eig

  def to_masks(self, w, y_mean):
    """`(weights, intercept)` per 0/1 mask entry from standardised `w`."""
    weights = (w * self.scale[:, None].astype(np.float32)).astype(np.float32)
    intercept = y_mean - self.mean.astype(np.float32) @ weights
    return weights, intercept.astype(np.float32)

  def from_masks(self, weights) -> np.ndarray:
    """Standardised weights (float32) of per-mask-entry `weights`."""
    return (weights * self.std[:, None]).astype(np.float32)


class Problem:
  """The designs a block of targets is fitted with: the fit runs', the
  selection runs' masks standardised like them, and (for `refit`) both
  together. Built once and shared by every block of targets."""

  def __init__(self, mask_fit, mask_select=None):
    self.fit = Design(mask_fit)
    self.mask_select = None if mask_select is None else np.asarray(
        mask_select)
    if self.mask_select is not None and (
        self.mask_select.ndim != 2 or
        self.mask_select.shape[1] != self.fit.n_train or
        not len(self.mask_select)):
      raise EstimateError(f"selection masks must be [runs >= 1, "
                          f"{self.fit.n_train}], have "
                          f"{self.mask_select.shape}")
    self.select = (None if self.mask_select is None else
                   self.fit.standardise(self.mask_select))
    self._both = None

  @property
  def both(self) -> Design:
    """The fit and selection runs together (for refitting)."""
    if self._both is None:
      self._both = Design(np.concatenate([self.fit.mask, self.mask_select]))
    return self._both


@dataclasses.dataclass
class Fit:
  """Linear models of a block of targets on the mask."""
  weights: np.ndarray    # float32 [n_train, targets], per 0/1 mask entry.
  intercept: np.ndarray  # float32 [targets]
  lam: np.ndarray        # float64 [targets]: the regularisation used.
  select_mse: np.ndarray  # float64 [targets]: its error on selection runs.
  iterations: int = 0    # FISTA iterations run (lasso).
  # float64 [lambdas, targets]: each lambda's selection error relative to
  # the null model's (w = 0); NaN after a target's path stopped.
  path_errors: Optional[np.ndarray] = None

  def predict(self, mask) -> np.ndarray:
    """float32 [runs, targets] for 0/1 masks [runs, n_train]."""
    return np.asarray(mask, np.float32) @ self.weights + self.intercept



def _selection_problem(problem, y, y_select):
  """`(fit design, targets, selection targets, targets' mean)`, checked:
  choosing lambda needs selection runs."""
  design = problem.fit
  y = _targets(y, design.num_runs, "targets")
  if problem.select is None:
    raise EstimateError("choosing lambda needs selection runs")
  y_select = _targets(y_select, len(problem.select), "selection targets")
  return design, y, y_select, y.mean(axis=0)


def _targets(y, num_runs, name):
  y = np.asarray(y, np.float32)
  if y.ndim != 2 or y.shape[0] != num_runs:
    raise EstimateError(f"{name} must be [runs={num_runs}, targets], has "
                        f"shape {y.shape}")
  if not np.isfinite(y).all():
    raise EstimateError(f"{name} holds NaN or infinite values")
  return y


def _soft(w, threshold):
  """Soft thresholding, per column threshold [T], in place."""
  magnitude = np.abs(w) - threshold
  np.maximum(magnitude, 0.0, out=magnitude)
  np.copysign(magnitude, w, out=w)
  return w


def _fista(design, yc, w, lam, tolerance, max_iterations):
  """Solves the lasso at `lam` [T] from `w` [n, T] (updated in place).

  Returns the iterations run. A target is done (and no longer computed)
  once its largest weight change in an iteration is at most `tolerance`
  times its target's standard deviation: each target's result does not
  depend on the others in its block.
  """
  z, num_runs = design.z, design.num_runs
  step = 1.0 / design.lipschitz
  scale = tolerance * np.maximum(yc.std(axis=0), 1e-12)
  threshold = (step * lam).astype(np.float32)
  active = np.arange(w.shape[1])  # Columns of `w` still iterating.
  current, momentum = w.copy(), w.copy()
  yc = np.asarray(yc)
  t = np.ones(w.shape[1], np.float32)
  for iteration in range(1, max_iterations + 1):
    residual = z @ momentum
    residual -= yc
    new = z.T @ residual
    new *= -step / num_runs
    new += momentum
    _soft(new, threshold)
    change = new - current
    # Adaptive restart (O'Donoghue & Candes): momentum against progress.
    restart = np.einsum("ij,ij->j", momentum - new, change) > 0
    t_next = (1.0 + np.sqrt(1.0 + 4.0 * t * t)) / 2.0
    beta = np.where(restart, 0.0, (t - 1.0) / t_next).astype(np.float32)
    t = np.where(restart, 1.0, t_next).astype(np.float32)
    np.multiply(change, beta, out=momentum)
    momentum += new
    current = new
    done = np.abs(change).max(axis=0) <= scale
    if done.any():
      w[:, active[done]] = current[:, done]
      keep = ~done
      if not keep.any():
        return iteration
      active, current, momentum = active[keep], current[:, keep], (
          momentum[:, keep])
      yc, scale, threshold, t = yc[:, keep], scale[keep], threshold[keep], (
          t[keep])
  w[:, active] = current
  return max_iterations


def lasso(design: Design, y, lam, tolerance=LASSO_DEFAULTS["tolerance"],
          max_iterations=LASSO_DEFAULTS["max_iterations"]) -> Fit:
  """The lasso of targets `y` [R, T] at one `lam` per target (from 0)."""
  y = _targets(y, design.num_runs, "targets")
  y_mean = y.mean(axis=0)
  lam = np.broadcast_to(np.asarray(lam, np.float64), y.shape[1:]).copy()
  w = np.zeros((design.n_train, y.shape[1]), np.float32)
  iterations = _fista(design, y - y_mean, w, lam, tolerance, max_iterations)
  weights, intercept = design.to_masks(w, y_mean)
  return Fit(weights, intercept, lam, np.full(y.shape[1], np.nan),
             iterations)


def _mse(z_select, w, y_select_centred) -> np.ndarray:
  error = z_select @ w - y_select_centred
  return np.mean(np.square(error, dtype=np.float64), axis=0)


def lambda_max(design: Design, y) -> np.ndarray:
  """float64 [T]: per target, the smallest lambda whose lasso is w = 0."""
  y = _targets(y, design.num_runs, "targets")
  return np.abs(design.z.T @ (y - y.mean(axis=0))).max(axis=0).astype(
      np.float64) / design.num_runs


def lasso_ratios(num_lambdas, lambda_min_ratio) -> np.ndarray:
  """The l1 path relative to each target's lambda_max: 1 (w = 0) down to
  `lambda_min_ratio`, geometric."""
  return np.geomspace(1.0, lambda_min_ratio, num_lambdas)


def lasso_path(problem: Problem, y, y_select,
               num_lambdas=LASSO_DEFAULTS["num_lambdas"],
               lambda_min_ratio=LASSO_DEFAULTS["lambda_min_ratio"],
               tolerance=LASSO_DEFAULTS["tolerance"],
               max_iterations=LASSO_DEFAULTS["max_iterations"],
               patience: Optional[int] = LASSO_DEFAULTS["patience"],
               refit=True) -> Fit:
  """The l1 datamodels of targets `y` [R, T] (see the module docstring).

  Args:
    problem: the fit runs' and selection runs' designs.
    y: float [R, T] targets on the fit runs.
    y_select: float [V, T] targets on the selection runs, which choose
      lambda (never the runs the fit will be judged on).
    num_lambdas, lambda_min_ratio: the path, per target, relative to its
      lambda_max.
    tolerance, max_iterations: FISTA's stopping rule at each lambda.
    patience: lambdas without a better selection error before a target's
      path stops (None: every target runs the whole path).
    refit: fit again at the chosen lambda on fit + selection runs.
  """
  design, y, y_select, y_mean = _selection_problem(problem, y, y_select)
  yc = y - y_mean
  y_select_centred = y_select - y_mean
  num_targets = y.shape[1]
  lam_max = lambda_max(design, y)
  ratios = lasso_ratios(num_lambdas, lambda_min_ratio)
  w = np.zeros((design.n_train, num_targets), np.float32)
  best_w = np.zeros_like(w)
  null_mse = _mse(problem.select, w, y_select_centred)  # w = 0: lambda_max.
  errors = np.full((len(ratios), num_targets), np.nan)
  errors[0] = 1.0
  best_mse, best_lam = null_mse.copy(), lam_max.copy()
  since_best = np.zeros(num_targets, np.int64)
  active = np.arange(num_targets)
  iterations = 0
  for step, ratio in enumerate(ratios[1:], 1):
    lam = lam_max[active] * ratio
    iterations += _fista(design, yc[:, active], w, lam, tolerance,
                         max_iterations)
    mse = _mse(problem.select, w, y_select_centred[:, active])
    errors[step, active] = mse / np.maximum(null_mse[active], 1e-30)
    better = mse < best_mse[active]
    best_mse[active[better]] = mse[better]
    best_lam[active[better]] = lam[better]
    best_w[:, active[better]] = w[:, better]
    since_best[active] = np.where(better, 0, since_best[active] + 1)
    if patience is not None:
      keep = since_best[active] < patience
      if not keep.all():
        active, w = active[keep], w[:, keep]
    if not len(active):
      break
  weights, intercept = design.to_masks(best_w, y_mean)
  if not refit:
    return Fit(weights, intercept, best_lam, best_mse, iterations, errors)
  both = problem.both
  y_all = np.concatenate([y, y_select])
  y_mean = y_all.mean(axis=0)
  w = both.from_masks(weights)  # Warm start.
  iterations += _fista(both, y_all - y_mean, w, best_lam, tolerance,
                       max_iterations)
  weights, intercept = both.to_masks(w, y_mean)
  return Fit(weights, intercept, best_lam, best_mse, iterations, errors)


def _ridge_weights(design, yc, lam):
  """Standardised ridge weights [n, T] at `lam` [T], through the dual."""
  values, vectors = design.eig
  projected = vectors.T @ yc.astype(np.float64)
  alpha = vectors @ (projected / (values[:, None] +
                                  design.num_runs * lam[None, :]))
  return design.z.T @ alpha.astype(np.float32)


def ridge_scale(design: Design) -> float:
  """The data's scale for ridge's lambda: mean(eig(Z Z^T)) / R."""
  return float(np.mean(design.eig[0])) / design.num_runs


def ridge_grid(design: Design, num_lambdas, lambda_min_ratio,
               lambda_max_ratio):
  """`(ratios, lambdas)` of ridge's grid: `ratios` from `lambda_min_ratio`
  to `lambda_max_ratio`, times `ridge_scale`."""
  ratios = np.geomspace(lambda_min_ratio, lambda_max_ratio, num_lambdas)
  return ratios, ratios * ridge_scale(design)


def ridge(problem, y, y_select=None,
          num_lambdas=RIDGE_DEFAULTS["num_lambdas"],
          lambda_min_ratio=RIDGE_DEFAULTS["lambda_min_ratio"],
          lambda_max_ratio=RIDGE_DEFAULTS["lambda_max_ratio"],
          refit=True, lam: Optional[np.ndarray] = None) -> Fit:
  """The ridge datamodels of targets `y` [R, T] (see the module docstring).

  `problem` is a `Problem`, or with `lam` given (one lambda per target, no
  selection) a `Design`. lambda's grid: `num_lambdas` values from
  `lambda_min_ratio` to `lambda_max_ratio` times mean(eig(Z Z^T)) / R,
  chosen per target by the selection runs' mean squared error.
  """
  if lam is not None:
    design = problem if isinstance(problem, Design) else problem.fit
    y = _targets(y, design.num_runs, "targets")
    y_mean = y.mean(axis=0)
    lam = np.broadcast_to(np.asarray(lam, np.float64), y.shape[1:]).copy()
    weights, intercept = design.to_masks(
        _ridge_weights(design, y - y_mean, lam), y_mean)
    return Fit(weights, intercept, lam, np.full(y.shape[1], np.nan))
  design, y, y_select, y_mean = _selection_problem(problem, y, y_select)
  values, vectors = design.eig
  _, grid = ridge_grid(design, num_lambdas, lambda_min_ratio,
                       lambda_max_ratio)
  # Predictions on the selection runs for every lambda, in the dual.
  cross = (problem.select.astype(np.float64) @
           design.z.T.astype(np.float64)) @ vectors
  projected = vectors.T @ (y - y_mean).astype(np.float64)
  centred = y_select.astype(np.float64) - y_mean
  mse = np.stack([np.mean((cross @ (projected / (
      values[:, None] + design.num_runs * lam)) - centred) ** 2, axis=0)
                  for lam in grid])
  best = np.argmin(mse, axis=0)
  lam = grid[best]
  fit = ridge(problem.both if refit else design,
              np.concatenate([y, y_select]) if refit else y, lam=lam)
  null = np.mean(centred ** 2, axis=0)
  return dataclasses.replace(fit, select_mse=mse[best, np.arange(len(lam))],
                             path_errors=mse / np.maximum(null, 1e-30))
