"""The run planner: how many runs an estimate needs for a standard error.

Every estimate here is a difference of two means over the runs that
trained on an example and those that held it out. At a fixed mix of
subset ratios both groups grow in proportion to the number of runs R, so
the standard error falls as 1 / sqrt(R): an estimate whose standard error
is SE with R runs reaches `se` with

  R' = R * (SE / se) ** 2

runs. The collection's own standard errors give SE, per example:

  memorization  each training example's SE (`memorization_se`:
                Bernoulli for correctness, Welch for other targets), over
                the examples whose SE is not 0 (an example every run gets
                right has no spread: more runs do not change it);
  influence     for correctness, the worst case 0.5 sqrt(1/n_in + 1/n_out)
                (the result holds no test accuracies); for other targets,
                each test example's SE with a typical training example,
                sqrt(test_variance[j] (1/n_in + 1/n_out)) at the median
                n_in and n_out (exact when the training example has no
                influence, the case a threshold must tell apart).

`plan(result, se)` reports the median and the 90th percentile of R' over
examples; `summary_lines` words them for `heldout estimate --plan_se`.
"""

import dataclasses
from typing import List

import numpy as np

from heldout_tf.estimates import targets
from heldout_tf.estimates.counting import EstimateError


@dataclasses.dataclass(frozen=True)
class Plan:
  """Runs one estimate needs for a standard error, over examples."""
  estimate: str      # 'memorization' or 'influence'.
  median: int        # Runs for the median example.
  p90: int           # Runs for 90% of the examples.
  current_se: float  # Median standard error with the collection's runs.
  over: str          # Which examples the numbers are over.


def runs_needed(se, num_runs: int, target_se: float) -> np.ndarray:
  """float64: runs for standard error(s) `se` (with `num_runs`) to fall to
  `target_se` at the same mix of subset ratios: R (SE / se)^2, rounded up."""
  if not target_se > 0:
    raise EstimateError(f"target standard error must be > 0, got "
                        f"{target_se}")
  return np.ceil(num_runs * (np.asarray(se, np.float64) / target_se) ** 2)


def _plan(name, se, num_runs, target_se, over) -> Plan:
  se = np.asarray(se, np.float64)
  se = se[np.isfinite(se)]
  if not len(se):
    return Plan(name, 0, 0, float("nan"), over)
  needed = runs_needed(se, num_runs, target_se)
  return Plan(name, int(np.median(needed)), int(np.percentile(needed, 90)),
              float(np.median(se)), over)


def plan(result: dict, target_se: float) -> List[Plan]:
  """The runs each estimate in `result` (`estimates.compute`'s dict or its
  saved file) needs for standard error `target_se`."""
  target = str(result.get("target", "correct"))
  key = lambda name: targets.key(name, target)
  num_runs = int(result["num_runs"])
  n_in = np.asarray(result["n_in"], np.float64)
  n_out = np.asarray(result["n_out"], np.float64)
  defined = (n_in > 0) & (n_out > 0)
  plans = []
  if key("memorization_se") in result:
    se = np.asarray(result[key("memorization_se")], np.float64)
    varies = se[np.isfinite(se) & (se > 0)]
    plans.append(_plan("memorization", varies, num_runs, target_se,
                       f"the {len(varies)} training examples whose "
                       "estimate varies"))
  if not defined.any():
    return plans
  spread = np.sqrt(1.0 / np.median(n_in[defined]) +
                   1.0 / np.median(n_out[defined]))
  if target == "correct":
    bound = 0.5 * np.sqrt(1.0 / n_in[defined] + 1.0 / n_out[defined])
    plans.append(_plan("influence", bound, num_runs, target_se,
                       "training examples, worst case"))
  elif key("test_variance") in result:
    variance = np.asarray(result[key("test_variance")], np.float64)
    plans.append(_plan("influence", np.sqrt(variance) * spread, num_runs,
                       target_se, "test examples"))
  return plans


def summary_lines(result: dict, target_se: float) -> List[str]:
  """One line per estimate: the runs needed for `target_se`."""
  num_runs = int(result["num_runs"])
  lines = []
  for p in plan(result, target_se):
    if np.isnan(p.current_se):
      lines.append(f"run planner: {p.estimate}: no example to plan for")
      continue
    lines.append(
        f"run planner: {p.estimate} standard error {target_se:g} needs "
        f"{p.median} runs for the median example, {p.p90} for 90% (over "
        f"{p.over}; now {p.current_se:.3g} with {num_runs} runs, at the same "
        "mix of subset ratios)")
  return lines
