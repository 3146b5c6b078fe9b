"""How well scores find known noisy examples, and removal-ablation bookkeeping.

Detection: each score ranks the training examples (higher = more
suspicious); with the indices of the examples made noisy, `metrics` gives
ROC AUC, average precision and precision / recall among the top k, k = the
number of noisy examples (with that k precision and recall are equal).
Examples whose score is NaN rank below every defined one (ties broken by
index), so an undefined score never counts as a detection.

Removal ablation: `removal_sets` picks, per score and fraction, the top
examples to drop (and a seeded random baseline); `removal_rows` turns the
test accuracies of the models retrained without them into table rows.
"""

import dataclasses
from typing import Dict, List, Mapping, Sequence

import numpy as np

from heldout_tf.core import errors
from heldout_tf.core import seeds

DETECTION_COLUMNS = ("method", "auc", "ap", "precision_at_k", "recall_at_k")
REMOVAL_COLUMNS = ("method", "fraction", "accuracy_mean", "accuracy_sd",
                   "num_removed", "noisy_removed")
RANDOM = "random"
NO_REMOVAL = "none"
# The removal ablation's default fractions (`--removal_fractions`).
DEFAULT_REMOVAL_FRACTIONS = "0.01,0.02,0.05,0.1,0.2"


class DetectionError(errors.HeldoutError, ValueError):
  """Scores or noisy indices are malformed (names which)."""


def noisy_mask(n: int, noisy_idx) -> np.ndarray:
  """bool `[n]`, True at `noisy_idx`."""
  noisy_idx = np.asarray(noisy_idx, np.int64)
  if noisy_idx.size and (noisy_idx.min() < 0 or noisy_idx.max() >= n):
    raise DetectionError(f"noisy_idx must be in [0, {n}), got "
                         f"[{noisy_idx.min()}, {noisy_idx.max()}]")
  mask = np.zeros(n, bool)
  mask[noisy_idx] = True
  return mask


def ranking(score, tiebreak=None) -> np.ndarray:
  """Example indices, most suspicious first; NaN last.

  Ties are broken by `tiebreak` (higher first, NaN last) if given, then by
  index.
  """
  score = np.asarray(score, np.float64)
  keys = [np.arange(len(score))]
  if tiebreak is not None:
    tiebreak = np.asarray(tiebreak, np.float64)
    keys.append(-np.where(np.isnan(tiebreak), -np.inf, tiebreak))
  keys += [-np.where(np.isnan(score), -np.inf, score), np.isnan(score)]
  return np.lexsort(keys)  # The last key is the primary one.


def _finite_for_sklearn(score):
  """NaN -> just below the smallest defined value (ranked last)."""
  score = np.asarray(score, np.float64)
  nan = np.isnan(score)
  if nan.all():
    return np.zeros_like(score)
  low = np.min(score[~nan])
  return np.where(nan, low - 1.0 - abs(low), score)


def precision_at(score, noisy_idx, ks) -> np.ndarray:
  """Fraction of noisy examples among the top k, for each k in `ks`."""
  noisy = noisy_mask(len(score), noisy_idx)
  hits = np.cumsum(noisy[ranking(score)])
  ks = np.asarray(ks, np.int64)
  return hits[ks - 1] / ks


def metrics(score, noisy_idx) -> Dict[str, float]:
  """`auc`, `ap`, `precision_at_k`, `recall_at_k` (k = number of noisy).

  NaN metrics when there are no noisy examples or no clean ones.
  """
  score = np.asarray(score, np.float64)
  noisy = noisy_mask(len(score), noisy_idx)
  k = int(noisy.sum())
  if k == 0 or k == len(score):
    return dict(auc=np.nan, ap=np.nan, precision_at_k=np.nan,
                recall_at_k=np.nan)
  from sklearn import metrics as sk_metrics  # pylint: disable=g-import-not-at-top
  finite = _finite_for_sklearn(score)
  hits = int(noisy[ranking(score)[:k]].sum())
  return dict(auc=float(sk_metrics.roc_auc_score(noisy, finite)),
              ap=float(sk_metrics.average_precision_score(noisy, finite)),
              precision_at_k=hits / k, recall_at_k=hits / k)


def roc_curve(score, noisy_idx):
  """`(false_positive_rate, true_positive_rate)` arrays (NaN ranked last)."""
  from sklearn import metrics as sk_metrics  # pylint: disable=g-import-not-at-top
  noisy = noisy_mask(len(score), noisy_idx)
  fpr, tpr, _ = sk_metrics.roc_curve(noisy, _finite_for_sklearn(score))
  return fpr, tpr


def detection_table(scores: Mapping[str, np.ndarray],
                    noisy_idx) -> List[dict]:
  """One row (`DETECTION_COLUMNS`) per score."""
  return [dict(method=name, **metrics(value, noisy_idx))
          for name, value in scores.items()]


def format_table(rows: Sequence[dict], columns: Sequence[str]) -> str:
  """A fixed-width text table of `rows` (floats with 3 decimals)."""
  def cell(value):
    if isinstance(value, (float, np.floating)):
      return f"{value:.3f}"
    return str(value)
  cells = [[str(c) for c in columns]] + [[cell(r[c]) for c in columns]
                                         for r in rows]
  widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
  return "\n".join("  ".join(v.ljust(w) if i == 0 else v.rjust(w)
                             for i, (v, w) in enumerate(zip(row, widths)))
                   for row in cells)


# ----------------------------------------------------------------- removal --


def parse_fractions(text) -> List[float]:
  """'0.01,0.02' or a sequence -> sorted distinct floats in (0, 1)."""
  if isinstance(text, str):
    parts = [p.strip() for p in text.split(",") if p.strip()]
  else:
    parts = list(text)
  try:
    values = [float(p) for p in parts]
  except ValueError:
    raise errors.UsageError(f"--removal_fractions must be comma-separated "
                            f"numbers, got {text!r}") from None
  bad = [v for v in values if not 0.0 < v < 1.0]
  if bad or not values:
    raise errors.UsageError(f"--removal_fractions must be in (0, 1), got "
                            f"{text!r}")
  return sorted(set(values))


@dataclasses.dataclass(frozen=True)
class Removal:
  """The examples one ablation drops."""
  method: str
  fraction: float
  removed: np.ndarray  # int64, sorted


def removal_sets(scores: Mapping[str, np.ndarray], fractions: Sequence[float],
                 seed: int = 0) -> List[Removal]:
  """Top `fraction` of examples by each score, plus a random baseline.

  Every method removes the same number of examples for a fraction
  (`round(fraction * n)`); NaN scores are removed last. The random
  baseline is `seeds.random_removal(seed, fraction, ...)` (`seed`: the
  ablation's, `seeds.removal_seed` of the collection's).
  """
  n = len(next(iter(scores.values())))
  out = []
  for fraction in fractions:
    count = int(round(fraction * n))
    for name, score in scores.items():
      out.append(Removal(name, fraction, np.sort(ranking(score)[:count])))
    out.append(Removal(RANDOM, fraction,
                       seeds.random_removal(seed, fraction, n, count)))
  return out


def kept(n: int, removal: Removal) -> np.ndarray:
  """The examples a removal keeps (sorted int64)."""
  return np.setdiff1d(np.arange(n), removal.removed)


def removal_rows(removals: Sequence[Removal],
                 accuracies: Sequence[np.ndarray], noisy_idx) -> List[dict]:
  """Rows of `REMOVAL_COLUMNS`: mean and sd (ddof 1; 0 for one model) of
  the retrained models' test accuracies, and how many of the removed were
  noisy. A removal with nothing removed is reported as method 'none'."""
  rows = []
  noisy = set(np.asarray(noisy_idx, np.int64).tolist())
  for removal, acc in zip(removals, accuracies):
    acc = np.asarray(acc, np.float64)
    rows.append(dict(
        method=removal.method, fraction=float(removal.fraction),
        accuracy_mean=float(acc.mean()),
        accuracy_sd=float(acc.std(ddof=1)) if len(acc) > 1 else 0.0,
        num_removed=len(removal.removed),
        noisy_removed=len(noisy.intersection(removal.removed.tolist()))))
  return rows
