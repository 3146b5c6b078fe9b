"""A collection's result files, read for a report and checked against its
runs: the estimates (from a file, or computed) and the quality scores.

Only the keys a report shows are read, each with the shape the runs imply
(`inputs.read_arrays`: the hardened npz reader), so a file made for other
data is refused naming the key, and a huge member that is not shown (e.g.
a dense influence matrix) is never inflated.
"""

import dataclasses
import io
from typing import Dict, List, Optional, Tuple

import numpy as np

from heldout_tf import estimates
from heldout_tf.quality import scores as scores_lib
from heldout_tf.report import inputs

# Per-example vectors of an estimates file (float64 on the page).
_ESTIMATE_VECTORS = ("memorization", "memorization_se", "cscores",
                     "cscores_se")
_LABELS = ("labels", "clean_train_labels", "clean_labels")


def _limits(n: int, m: int, vectors=()) -> Dict[str, dict]:
  """What a report reads of an estimates or scores file, for `n` training
  and `m` test examples: `vectors` (numbers `[n]`), counts, pairs, labels,
  noisy indices and scalars."""
  vector = {"kinds": "biuf", "shape": (n,)}
  limits = {key: vector for key in vectors}
  limits.update({key: {"kinds": "iu", "shape": (n,)}
                 for key in ("n_in", "n_out") + _LABELS})
  pair = {"ndim": 1, "max_elements": n * m}
  limits.update(tr_idx=dict(pair, kinds="iu"), tt_idx=dict(pair, kinds="iu"),
                infl=dict(pair, kinds="f"),
                noisy_idx={"kinds": "iu", "ndim": 1, "max_elements": n},
                test_labels={"kinds": "iu", "shape": (m,)})
  limits.update({key: {"kinds": "iuf", "ndim": 0} for key in (
      "num_never_held_out", "num_never_trained", "infl_threshold",
      "mem_threshold")})
  return limits


def _check_indices(arrays: dict, key: str, n: int, path: str):
  value = arrays.get(key)
  if value is not None and value.size and (value.min() < 0 or
                                           value.max() >= n):
    raise inputs.ReportInputError(
        f"{path}: key {key!r} must hold indices in [0, {n})")


def _float_vectors(arrays: dict, keys) -> dict:
  for key in keys:
    if key in arrays:
      arrays[key] = arrays[key].astype(np.float64)
  return arrays


def _npz_bytes(result: dict) -> bytes:
  buffer = io.BytesIO()
  np.savez(buffer, **{k: np.asarray(v) for k, v in result.items()})
  return buffer.getvalue()


def read_estimates(runs, path: Optional[str], infl_threshold: float,
                   mem_threshold: float, progress: bool
                   ) -> Tuple[dict, str, bytes]:
  """`(result, source, file bytes)`: the estimates file's arrays (checked
  against the runs) or, without a file, `estimates.compute` on the runs
  (and its npz bytes)."""
  if path is None:
    result = estimates.compute(runs, ("mem", "pairs", "cscores"),
                               infl_threshold=infl_threshold,
                               mem_threshold=mem_threshold, progress=progress)
    return result, "computed from the runs", _npz_bytes(result)
  n, m = runs.n_train, runs.n_test
  result = _float_vectors(
      inputs.read_arrays(path, _limits(n, m, _ESTIMATE_VECTORS)),
      _ESTIMATE_VECTORS)
  if "memorization" not in result or "cscores" not in result:
    # E.g. pairs only: the per-example estimates come from the runs.
    computed = estimates.compute(runs, ("mem", "cscores"), progress=progress)
    for key in _ESTIMATE_VECTORS:
      result.setdefault(key, computed[key])
  counted = estimates.counts(runs.mask, runs.correct_train)
  for key, value in (("n_in", counted.n_in), ("n_out", counted.n_out)):
    if key not in result:
      result[key] = value
    elif not np.array_equal(result[key], value):
      raise inputs.ReportInputError(
          f"{path}: key {key!r} differs from the runs' counts: the file "
          "was made from other runs (pass the matching --estimates)")
  if "tr_idx" in result:
    if not ("tt_idx" in result and "infl" in result and
            len(result["tr_idx"]) == len(result["tt_idx"]) ==
            len(result["infl"])):
      raise inputs.ReportInputError(
          f"{path}: keys 'tr_idx', 'tt_idx', 'infl' differ in length")
    _check_indices(result, "tr_idx", n, path)
    _check_indices(result, "tt_idx", m, path)
    result["infl"] = result["infl"].astype(np.float64)
  _check_indices(result, "noisy_idx", n, path)
  return result, path, inputs.read_bytes(path)


def read_scores(path: str, n: int, m: int) -> dict:
  """A quality scores file's arrays: every score of `heldout_tf.quality.
  scores.SCORES` it holds and its `_se` (float64 `[n]`), labels, noisy
  indices."""
  names = [s for name in scores_lib.SCORES for s in (name, f"{name}_se")]
  arrays = _float_vectors(inputs.read_arrays(path, _limits(n, m, names)),
                          names)
  _check_indices(arrays, "noisy_idx", n, path)
  return arrays


@dataclasses.dataclass
class Labels:
  """What the estimates and scores files say about the labels."""
  labels: Optional[np.ndarray] = None  # int64 [n_train] trained with.
  clean: Optional[np.ndarray] = None   # int64 [n_train] before noise.
  noisy: Optional[np.ndarray] = None   # int64 known noisy examples.
  test: Optional[np.ndarray] = None    # int64 [n_test].

  def update(self, arrays: dict, clean_key: str):
    """Takes the arrays' `labels`, clean labels (`clean_key`), `noisy_idx`
    and `test_labels` where present."""
    for attr, key in (("labels", "labels"), ("clean", clean_key),
                      ("noisy", "noisy_idx"), ("test", "test_labels")):
      if key in arrays:
        setattr(self, attr, arrays[key].astype(np.int64))


def uncertainty(result: dict) -> Tuple[dict, List[str]]:
  """`(standard errors, warnings)`: the typical standard errors of
  `estimates.uncertainty` (numbers, and 'text': the line the page shows,
  memorization's phrase exactly as `heldout estimate` prints it) and its
  thresholds-too-close warnings, without their 'warning: '."""
  u = estimates.uncertainty(result)
  mem = u.memorization_se
  phrases = [mem.describe() if mem else ""]
  if not np.isnan(u.bound):
    phrases.append(f"worst case 0.5\u221a(1/n_in + 1/n_out) {u.bound:.3f} "
                   "(median over examples), which also bounds each "
                   "influence estimate")
  out = {"worst_case_se": None if np.isnan(u.bound) else u.bound,
         "memorization_se": None if mem is None or np.isnan(mem.median)
                            else mem.median,
         "text": "; ".join(p for p in phrases if p)}
  return out, [w[len("warning: "):] if w.startswith("warning: ") else w
               for w in u.warnings]
