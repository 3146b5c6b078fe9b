"""Data-quality scores of training examples, from one collection of runs.

Every score is float64 `[n_train]`, higher = more suspicious (mislabeled,
noisy or atypical), NaN where the runs do not define it:

  memorization        held-out memorization, `heldout_tf.estimates`
                      (NaN: never trained on or never held out).
  cscore              1 - C-score (held-out accuracy; NaN: never held out).
  loss                held-out cross-entropy: -log of the mean out-of-sample
                      probability of the label (NaN: never held out).
  tracin              TracIn self-influence over the epoch-end checkpoints,
                      last layer (Captum's TracInCPFast): sum over epochs of
                      lr * ||a||^2 * ||p - y||^2, averaged over the runs that
                      trained on the example (NaN: never trained on).
  aum                 minus the area under the margin (Pleiss et al.): minus
                      the mean margin over epochs and runs that trained on it.
  ssft                second-split forgetting (Maini et al.): 1 - mean over
                      runs of forget_epoch / (second-phase epochs + 1); 1 =
                      wrong right after the first phase, 0 = never forgotten
                      (NaN: no run recorded forgetting for it).
  confident_learning  1 - cleanlab's label quality
                      (`cleanlab.rank.get_label_quality_scores`) on the mean
                      out-of-sample probabilities (NaN: never held out);
                      needs the cleanlab package (the `quality` extra):
                      without it the workflow leaves this score out, saying
                      so in one line (`missing_package`).

Standard errors: `memorization_se` and `cscore_se` from the binomial
variances of the in/out correct counts.
"""

import dataclasses
import importlib
from typing import Dict, Optional

import numpy as np

from heldout_tf.core import errors
from heldout_tf import estimates
from heldout_tf.collection import signals as signals_lib

SCORES = ("memorization", "cscore", "loss", "tracin", "aum", "ssft",
          "confident_learning")
MIN_PROBABILITY = 1e-30  # Held-out loss is at most -log of this (69).


class ScoresError(errors.HeldoutError, ValueError):
  """Inputs to the scores are inconsistent (names what disagrees)."""


MissingExtraError = errors.MissingExtraError  # The `quality` extra.


@dataclasses.dataclass
class Scores:
  """The scores (name -> float64 [n_train]) and their standard errors."""
  values: Dict[str, np.ndarray]
  standard_errors: Dict[str, np.ndarray]

  def num_nan(self) -> Dict[str, int]:
    """Examples where each score is undefined."""
    return {k: int(np.isnan(v).sum()) for k, v in self.values.items()}

  def arrays(self) -> Dict[str, np.ndarray]:
    """Flat dict for `np.savez`: scores, `<score>_se`, `num_nan_<score>`."""
    out = dict(self.values)
    out.update({f"{k}_se": v for k, v in self.standard_errors.items()})
    out.update({f"num_nan_{k}": np.array(v) for k, v in self.num_nan().items()})
    return out


def _mean(total, count):
  with np.errstate(divide="ignore", invalid="ignore"):
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def memorization_and_cscore(mask, correct_train):
  """`(values, standard_errors)` dicts for memorization and 1 - C-score
  (held-out accuracy at the collection's one ratio), from one counting pass
  (`heldout_tf.estimates.counts`).

  Args:
    mask: bool `[runs, n_train]`, run trained on example.
    correct_train: bool `[runs, n_train]`.
  """
  counts = estimates.counts(mask, correct_train)
  values = {"memorization": counts.memorization,
            "cscore": 1.0 - counts.heldout_accuracy}
  ses = {"memorization": counts.memorization_se,
         "cscore": np.sqrt(counts.heldout_accuracy_variance)}
  return values, ses


def mean_heldout_probs(totals: signals_lib.Totals) -> np.ndarray:
  """float64 `[n, classes]`: mean out-of-sample softmax (NaN rows: never
  held out)."""
  return _mean(totals.prob_sum, totals.n_out[:, None])


def heldout_loss(totals: signals_lib.Totals, labels) -> np.ndarray:
  """-log of the mean out-of-sample probability of each label."""
  probs = mean_heldout_probs(totals)
  p = probs[np.arange(len(labels)), labels]
  return -np.log(np.maximum(p, MIN_PROBABILITY))


def tracin(totals: signals_lib.Totals) -> np.ndarray:
  return _mean(totals.tracin_sum, totals.n_in)


def aum(totals: signals_lib.Totals) -> np.ndarray:
  return -_mean(totals.margin_sum, totals.epochs_in)


def ssft(totals: signals_lib.Totals) -> np.ndarray:
  return 1.0 - _mean(totals.forget_fraction_sum, totals.ssft_runs)


# Scores that need an optional package: score -> (module, why, install).
_PACKAGES = {"confident_learning": ("cleanlab", "pip install cleanlab, or "
                                    "pip install -e '.[quality]'")}


def missing_package(name: str) -> str:
  """'' when score `name` can be computed here, else one line saying it is
  skipped and what to install."""
  if name not in _PACKAGES:
    return ""
  module, install = _PACKAGES[name]
  try:
    importlib.import_module(module)
  except ImportError:
    return (f"{name} skipped: it needs the {module} package, which is not "
            f"installed ({install})")
  return ""


def confident_learning(totals: signals_lib.Totals, labels) -> np.ndarray:
  """1 - `cleanlab.rank.get_label_quality_scores` on the examples held out
  at least once (their mean out-of-sample probabilities); NaN elsewhere."""
  try:
    from cleanlab import rank  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise MissingExtraError(
        "confident learning needs the cleanlab package: "
        "pip install -e '.[quality]'") from None
  probs = mean_heldout_probs(totals)
  defined = totals.n_out > 0
  out = np.full(len(labels), np.nan)
  if defined.any():
    p = probs[defined]
    p = p / p.sum(axis=1, keepdims=True)  # Exact rows for cleanlab's checks.
    out[defined] = 1.0 - rank.get_label_quality_scores(
        np.asarray(labels)[defined], p)
  return out


def _check_labels(labels, n_train, num_classes):
  labels = np.asarray(labels)
  if labels.shape != (n_train,) or not np.issubdtype(labels.dtype,
                                                     np.integer):
    raise ScoresError(f"labels must be integers of shape ({n_train},), got "
                      f"{labels.dtype} {labels.shape}")
  if n_train and (labels.min() < 0 or labels.max() >= num_classes):
    raise ScoresError(f"labels must be in [0, {num_classes}), got "
                      f"[{labels.min()}, {labels.max()}]")
  return labels.astype(np.int64)


def compute(mask, correct_train, totals: signals_lib.Totals, labels,
            names=SCORES) -> Scores:
  """Every score in `names` from a collection's runs and signals.

  Args:
    mask: bool `[runs, n_train]` (e.g. `estimates.load_runs(...).mask`).
    correct_train: bool `[runs, n_train]`, final correctness.
    totals: the runs' summed signals (`signals.load_totals`).
    labels: int `[n_train]`, the labels the runs were trained with.
    names: which scores (a subset of `SCORES`).

  Returns:
    `Scores`; standard errors for memorization and cscore.
  """
  unknown = [n for n in names if n not in SCORES]
  if unknown:
    raise ScoresError(f"unknown score(s) {unknown}: choose from "
                      f"{', '.join(SCORES)}")
  mask = np.asarray(mask, bool)
  if mask.ndim != 2 or mask.shape[1] != totals.n_train:
    raise ScoresError(f"the runs' mask has shape {mask.shape} but the "
                      f"signals have {totals.n_train} training examples")
  labels = _check_labels(labels, totals.n_train, totals.num_classes)
  values, ses = memorization_and_cscore(mask, correct_train)
  computed = {"loss": lambda: heldout_loss(totals, labels),
              "tracin": lambda: tracin(totals), "aum": lambda: aum(totals),
              "ssft": lambda: ssft(totals),
              "confident_learning": lambda: confident_learning(totals,
                                                               labels)}
  for name in names:
    if name in computed:
      values[name] = computed[name]()
  values = {n: values[n] for n in names}
  ses = {n: s for n, s in ses.items() if n in names}
  return Scores(values, ses)


def summary(scores: Scores, noisy_idx: Optional[np.ndarray] = None) -> str:
  """One line per score: NaN count and, with `noisy_idx`, mean noisy vs
  clean."""
  lines = []
  for name, value in scores.values.items():
    line = f"{name:>20}: {int(np.isnan(value).sum())} NaN"
    if noisy_idx is not None and len(noisy_idx):
      noisy = np.zeros(len(value), bool)
      noisy[noisy_idx] = True
      line += (f", mean {np.nanmean(value[noisy]):.3f} noisy vs "
               f"{np.nanmean(value[~noisy]):.3f} clean")
    lines.append(line)
  return "\n".join(lines)
