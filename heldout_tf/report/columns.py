"""The per-example scores a report shows, and how they rank the examples.

Every score is a `Column`, float64 `[n_train]`, NaN where the runs do not
define it; `suspicious` says which end flags an example (memorization:
high; C-score: low; every quality score: high). Ranks break ties by index
and put NaN last (`heldout_tf.quality.detection.ranking`), the order the
page sorts by too.
"""

import dataclasses
from typing import List, Optional, Tuple

import numpy as np

from heldout_tf.quality import detection
from heldout_tf.quality import scores as scores_lib

# Quality scores (`heldout_tf.quality.scores.SCORES`): labels shown on the
# page.
SCORE_LABELS = {
    "memorization": "memorization", "cscore": "1 \u2212 C-score",
    "loss": "held-out loss", "tracin": "TracIn self-influence",
    "aum": "\u2212AUM (margin)", "ssft": "second-split forgetting",
    "confident_learning": "confident learning"}


@dataclasses.dataclass
class Column:
  """One per-example score of the training set."""
  key: str                  # Unique id on the page ('memorization', ...).
  label: str                # What the page calls it.
  values: np.ndarray        # float64 [n_train]; NaN: undefined.
  se: Optional[np.ndarray]  # float64 [n_train] standard error, or None.
  suspicious: int           # +1: high values flag an example; -1: low.
  about: str                # One line: what it measures.


def estimate_columns(result: dict) -> List[Column]:
  """Memorization and C-score from an estimates result (`memorization`,
  `cscores` and their `_se`)."""
  return [
      Column("memorization", "memorization", result["memorization"],
             result.get("memorization_se"), +1,
             "mean correctness when trained on minus when held out"),
      Column("cscore", "C-score", result["cscores"],
             result.get("cscores_se"), -1,
             "held-out accuracy (low: atypical or mislabeled)")]


def _same(a, b) -> bool:
  """Equal up to float noise, NaN where the other is NaN."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return a.shape == b.shape and bool(np.allclose(a, b, equal_nan=True))


def quality_columns(scores: dict,
                    base: List[Column]) -> Tuple[List[Column], List[str]]:
  """`(columns, notes)`: the quality scores of a scores file's arrays
  (float64 `[n_train]` each, `<name>_se` beside), in `SCORES` order; a
  score equal to one of `base` (memorization, 1 - C-score) is said once,
  in a note."""
  by_key = {c.key: c for c in base}
  columns, notes = [], []
  for name in scores_lib.SCORES:
    if name not in scores:
      continue
    values = scores[name]
    if name == "memorization" and _same(values, by_key[name].values):
      notes.append("scores.npz's memorization equals the estimate's")
      continue
    if name == "cscore" and _same(values, 1.0 - by_key["cscore"].values):
      notes.append("scores.npz's cscore is 1 \u2212 the C-score shown")
      continue
    key = f"quality_{name}" if name in by_key else name
    columns.append(Column(key, SCORE_LABELS[name], values,
                          scores.get(f"{name}_se"), +1,
                          f"quality score {name!r} (high: suspicious)"))
  return columns, notes


def oriented(column: Column) -> np.ndarray:
  """The column's values with high meaning suspicious."""
  return column.values * column.suspicious


def ranks(column: Column) -> np.ndarray:
  """1-based suspicion rank of each example (ties by index, NaN last)."""
  order = detection.ranking(oriented(column))
  out = np.empty(len(order), np.int64)
  out[order] = np.arange(1, len(order) + 1)
  return out


def mean_rank(columns: List[Column]) -> np.ndarray:
  """float64 [n_train]: mean of the examples' suspicion ranks."""
  return np.mean([ranks(c) for c in columns], axis=0)


def top_k(column: Column, k: int) -> np.ndarray:
  """The `k` most suspicious examples' indices, most suspicious first."""
  return detection.ranking(oriented(column))[:k]


def agreement(columns: List[Column], k: int) -> List[List[float]]:
  """[i][j]: fraction of score i's top k also in score j's top k."""
  tops = [set(top_k(c, k).tolist()) for c in columns]
  return [[len(a & b) / k for b in tops] for a in tops]
