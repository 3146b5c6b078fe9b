"""Reporting estimates: a short summary with their uncertainty, and files.

The standard errors come from the in/out run counts alone: memorization's
is that of a difference of two Bernoulli means,
sqrt(p_in (1 - p_in) / n_in + p_out (1 - p_out) / n_out), and no in/out
difference for a training example (memorization, or its influence on any
test example) can have a standard error above 0.5 sqrt(1/n_in + 1/n_out).
A pairs threshold within about two of those of zero selects noise: with 32
MNIST runs, thousands of spurious pairs.
"""

import dataclasses
from typing import List, Optional

import numpy as np

from heldout_tf.core import files
from heldout_tf.estimates import targets
from heldout_tf.estimates.counting import EstimateError

# Thresholds closer to zero than this many standard errors are warned about.
THRESHOLD_STANDARD_ERRORS = 2.0


@dataclasses.dataclass(frozen=True)
class MemorizationSE:
  """Memorization's typical standard error: the one number every summary
  states (`heldout estimate`'s, the report's).

  Most examples are right (or wrong) in every run, so their estimated
  standard error is exactly 0 (p_in and p_out are 0 or 1), and a median
  over all examples would be 0 however few the runs. The typical error is
  the median over the examples the runs disagree on; the rest are counted.
  """
  median: float  # Median SE over the `varying` examples (NaN: none).
  varying: int   # Examples with a nonzero SE: the runs disagree on them.
  defined: int   # Examples with an SE at all (not NaN).

  def describe(self) -> str:
    """One phrase, told so that a typical 0 is not read as a bug ('' when
    no example has a standard error)."""
    if not self.defined:
      return ""
    if not self.varying:
      return (f"memorization 0 for all {self.defined} examples (every run "
              "got each of them right, or every run wrong)")
    return (f"memorization {self.median:.3f} (median over the "
            f"{self.varying} examples the runs disagree on; exactly 0 for "
            f"the other {self.defined - self.varying}, right or wrong in "
            "every run)")


@dataclasses.dataclass(frozen=True)
class Uncertainty:
  """Typical standard errors of a result's estimates."""
  memorization_se: Optional[MemorizationSE]  # None: not computed.
  bound: float          # Median of 0.5 sqrt(1/n_in + 1/n_out): worst case.
  warnings: tuple       # One line per threshold too close to zero.


def _nanmedian(values) -> float:
  values = np.asarray(values, np.float64)
  values = values[~np.isnan(values)]
  return float(np.median(values)) if len(values) else float("nan")


def memorization_se(result: dict) -> Optional[MemorizationSE]:
  """The typical standard error of `result`'s memorization estimates
  (`memorization_se`, float [n_train]); None when it has none."""
  if "memorization_se" not in result:
    return None
  se = np.asarray(result["memorization_se"], np.float64)
  se = se[~np.isnan(se)]
  varies = se[se > 0]
  return MemorizationSE(
      median=float(np.median(varies)) if len(varies) else float("nan"),
      varying=int(len(varies)), defined=int(len(se)))


def uncertainty(result: dict) -> Uncertainty:
  """Standard errors implied by `result`'s run counts, and threshold warnings.

  Warns when `infl_threshold` or `mem_threshold` (if pairs were computed)
  is within `THRESHOLD_STANDARD_ERRORS` worst-case standard errors of zero.
  """
  n_in = np.asarray(result["n_in"], np.float64)
  n_out = np.asarray(result["n_out"], np.float64)
  with np.errstate(divide="ignore", invalid="ignore"):
    bound = np.where((n_in > 0) & (n_out > 0),
                     0.5 * np.sqrt(1.0 / n_in + 1.0 / n_out), np.nan)
  typical = _nanmedian(bound)
  warnings = []
  if "infl_threshold" in result and not np.isnan(typical):
    limit = THRESHOLD_STANDARD_ERRORS * typical
    for name in ("infl_threshold", "mem_threshold"):
      value = float(result[name])
      if abs(value) < limit:
        advice = "use more runs" + (
            f" or a threshold of at least {limit:.2f}" if limit < 1 else "")
        warnings.append(
            f"warning: {name} {value:g} is within {THRESHOLD_STANDARD_ERRORS:g}"
            f" standard errors of zero (worst-case SE {typical:.3f} with "
            f"these runs): many pairs may be noise; {advice}")
  return Uncertainty(memorization_se(result), typical, tuple(warnings))


def _uncertainty_lines(result: dict) -> List[str]:
  u = uncertainty(result)
  if np.isnan(u.bound):
    return []
  mem = u.memorization_se.describe() if u.memorization_se else ""
  return [f"standard errors from the in/out run counts: "
          f"{mem + ', ' if mem else ''}worst case 0.5*sqrt(1/n_in + "
          f"1/n_out) {u.bound:.3f} (median over examples), which also "
          "bounds each influence estimate"] + list(u.warnings)


def memorization_order(mem, evidence=None):
  """`(most, least)`: training example indices, most / least memorized
  first; the one order of every list and figure of top examples.

  Scores tie often (many examples at 1.00 or 0.00). Ties are broken by
  `evidence`, how many runs held the example out (more runs: a better
  measured score, first), then by example index. NaN scores come last in
  both.

  Args:
    mem: float [n] memorization scores.
    evidence: int [n] runs holding each example out (`n_out`), or None.
  """
  mem = np.asarray(mem, np.float64)
  evidence = (np.zeros(len(mem)) if evidence is None
              else np.asarray(evidence, np.float64))
  index, nan = np.arange(len(mem)), np.isnan(mem)
  value = np.nan_to_num(mem, nan=0.0)
  # np.lexsort sorts by its last key first.
  most = np.lexsort((index, -evidence, -value, nan))
  least = np.lexsort((index, -evidence, value, nan))
  return most, least


def _target(result: dict) -> str:
  return str(result.get("target", "correct"))


def summary(result: dict, top=10) -> str:
  """A few lines: counts, NaNs, standard errors, top memorized, pairs."""
  ratios = ", ".join(f"{r:g}: {n}" for r, n in zip(result["ratios"],
                                                   result["runs_per_ratio"]))
  lines = [f"{int(result['num_runs'])} runs (runs per ratio: {ratios}), "
           f"{int(result['n_train'])} training and "
           f"{int(result['n_test'])} test examples",
           f"never held out: {int(result['num_never_held_out'])}, never "
           f"trained on: {int(result['num_never_trained'])} (their "
           "estimates are NaN)"]
  if _target(result) != "correct":
    return "\n".join(lines + _target_lines(result, _target(result), top))
  if "memorization" in result:
    mem = result["memorization"]
    lines.append(f"memorization: mean {np.nanmean(mem):.4f}, NaN "
                 f"{int(result['num_nan_memorization'])}")
    most, _ = memorization_order(mem, result.get("n_out"))
    tops = ", ".join(f"#{i}: {mem[i]:.3f}" for i in most[:top]
                     if not np.isnan(mem[i]))
    lines.append(f"top memorized: {tops}")
  if "influence" in result:
    lines.append(f"influence: dense {result['influence'].shape} float32")
  if "tr_idx" in result:
    lines.append(
        f"high-influence pairs (infl >= {float(result['infl_threshold']):g},"
        f" mem >= {float(result['mem_threshold']):g}): "
        f"{len(result['tr_idx'])} pairs, "
        f"{len(np.unique(result['tr_idx']))} train / "
        f"{len(np.unique(result['tt_idx']))} test examples")
  if "cscores" in result:
    lines.append(f"C-scores: mean {np.nanmean(result['cscores']):.4f} over "
                 f"{result['cscores_by_ratio'].shape[0]} ratio(s), NaN "
                 f"{int(result['num_nan_cscores'])}")
  lines += _uncertainty_lines(result)
  return "\n".join(lines)


def _target_lines(result: dict, target: str, top: int) -> List[str]:
  """`summary`'s lines for a target other than correctness."""
  key = lambda name: targets.key(name, target)
  lines = [f"target: {target} (differences of means of each run's final "
           f"{target}; standard errors: Welch's sqrt(var_in/n_in + "
           "var_out/n_out))"]
  if key("memorization") in result:
    mem = result[key("memorization")]
    se = np.asarray(result[key("memorization_se")], np.float64)
    lines.append(f"{target} memorization: mean {np.nanmean(mem):.4f}, "
                 f"median standard error {_nanmedian(se):.4f}, NaN "
                 f"{int(result[key('num_nan_memorization')])}")
    most, _ = memorization_order(mem, result.get("n_out"))
    tops = ", ".join(f"#{i}: {mem[i]:.3f}" for i in most[:top]
                     if not np.isnan(mem[i]))
    lines.append(f"top {target} memorization: {tops}")
  if key("influence") in result:
    lines.append(f"{target} influence: dense "
                 f"{result[key('influence')].shape} float32")
  if key("tr_idx") in result:
    pairs_se = np.asarray(result[key("infl_se")], np.float64)
    lines.append(
        f"high-influence pairs on {target} (infl >= "
        f"{float(result[key('infl_threshold')]):g}, mem >= "
        f"{float(result[key('mem_threshold')]):g}): "
        f"{len(result[key('tr_idx')])} pairs, "
        f"{len(np.unique(result[key('tr_idx')]))} train / "
        f"{len(np.unique(result[key('tt_idx')]))} test examples"
        + (f", median standard error {_nanmedian(pairs_se):.4f}"
           if len(pairs_se) else ""))
  return lines


def _save(path, arrays):
  files.save_npz(path, **arrays)  # PathError if unwritable.


def save_estimates(path, result: dict):
  """Atomically writes `result` (from `compute`) as an npz file.

  Raises `errors.PathError` when `path` cannot be written.
  """
  _save(path, {k: np.asarray(v) for k, v in result.items()})


def save_pairs(path, pairs: dict, target: str = "correct"):
  """Writes the published pairs format (`tr_idx`, `tt_idx`, `infl`, `mem`)
  from `pairs` (or a result holding the pairs of `target` under its keys,
  `targets.key`)."""
  _save(path, {k: pairs[targets.key(k, target)]
               for k in ("tr_idx", "tt_idx", "infl", "mem")})


def save_cscores(path, scores, labels):
  """Writes the published C-score format (`labels`, `scores`)."""
  scores, labels = np.asarray(scores), np.asarray(labels)
  if scores.shape != labels.shape or scores.ndim != 1:
    raise EstimateError(f"scores {scores.shape} and labels {labels.shape} "
                        "must be 1-D of the same length")
  _save(path, {"labels": labels, "scores": scores})
