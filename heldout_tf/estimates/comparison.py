"""Our estimates compared with the papers' published score files.

  report = comparison.compare(result, "cifar10-cscores-orig-order.npz",
                              experiment="cifar10-inception",
                              plot_path="compare.png")

Spearman and Pearson correlations of C-scores or memorization (NaNs
excluded and counted), the Jaccard overlap of high-influence pair sets,
label agreement, and a scatter plot. The files are loaded and checked by
`heldout_tf.estimates.published`; CIFAR C-scores (original order) are mapped to the
runs' tfds order by `heldout_tf.data.order.tfds_original_order`.
"""

import dataclasses
import os
from typing import Optional, Tuple
import warnings

import numpy as np

from heldout_tf.core import figures
from heldout_tf.estimates import published as published_lib

MAX_PLOT_POINTS = 100_000
CompareError = published_lib.CompareError


@dataclasses.dataclass(frozen=True)
class Correlation:
  """Correlation of two score vectors over the entries finite in both."""
  n: int  # Pairs used.
  num_nan_ours: int
  num_nan_published: int
  spearman: float
  pearson: float

  def line(self, what: str) -> str:
    excluded = self.num_nan_ours + self.num_nan_published
    nan = (f" ({excluded} excluded as NaN: {self.num_nan_ours} ours, "
           f"{self.num_nan_published} published)" if excluded else "")
    return (f"{what}: Spearman {self.spearman:.4f}, Pearson "
            f"{self.pearson:.4f} over {self.n} examples{nan}")


def correlate(ours: np.ndarray, published: np.ndarray) -> Correlation:
  """Spearman and Pearson correlation, NaN entries excluded and counted.

  Entries NaN in ours are counted as ours (even when also NaN published).
  Fewer than 3 usable pairs, or a constant side, give NaN correlations.
  """
  import scipy.stats  # pylint: disable=g-import-not-at-top
  ours = np.asarray(ours, np.float64)
  published = np.asarray(published, np.float64)
  nan_ours = np.isnan(ours)
  nan_published = np.isnan(published) & ~nan_ours
  keep = ~(nan_ours | nan_published)
  x, y = ours[keep], published[keep]
  spearman = pearson = float("nan")
  if len(x) >= 3 and np.ptp(x) > 0 and np.ptp(y) > 0:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")
      spearman = float(scipy.stats.spearmanr(x, y)[0])
      pearson = float(scipy.stats.pearsonr(x, y)[0])
  return Correlation(int(keep.sum()), int(nan_ours.sum()),
                     int(nan_published.sum()), spearman, pearson)


def jaccard(ours: Tuple[np.ndarray, np.ndarray],
            published: Tuple[np.ndarray, np.ndarray]) -> Tuple[float, int,
                                                                int, int]:
  """Jaccard overlap of two sets of (tr_idx, tt_idx) pairs.

  Returns `(jaccard, |ours|, |published|, |both|)`; 1.0 when both are empty.
  """
  def as_set(pairs):
    tr, tt = (np.asarray(p, np.int64).ravel() for p in pairs)
    return set(zip(tr.tolist(), tt.tolist()))
  a, b = as_set(ours), as_set(published)
  both = len(a & b)
  union = len(a | b)
  return (both / union if union else 1.0), len(a), len(b), both


def write_scatter(path: str, ours, published, xlabel: str, ylabel: str,
                  title: str, seed: int = 0):
  """A PNG scatter plot of `published` against `ours`
  (`heldout_tf.core.figures.save_png`: atomic, `PathError` naming `path`).

  NaN pairs are left out; above `MAX_PLOT_POINTS` points a random subset is
  drawn (said in the title).
  """
  x = np.asarray(ours, np.float64)
  y = np.asarray(published, np.float64)
  keep = np.flatnonzero(~(np.isnan(x) | np.isnan(y)))
  if len(keep) > MAX_PLOT_POINTS:
    keep = np.sort(np.random.default_rng(seed).choice(
        keep, MAX_PLOT_POINTS, replace=False))
    title += f" (random {MAX_PLOT_POINTS} points)"
  fig = figures.new(5, 5)
  ax = fig.add_subplot()
  ax.scatter(x[keep], y[keep], s=2, alpha=0.3, linewidths=0)
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.set_title(title, fontsize=9)
  figures.save_png(fig, path)


def _ours(result, key: str, what: str, path: str) -> np.ndarray:
  if key not in result:
    raise CompareError(f"the estimates have no {key!r}: compute {what} "
                       f"(--what ...,{what}) to compare with {path}")
  return np.asarray(result[key])


def _same_length(ours, published, what, path):
  if len(ours) != len(published):
    raise CompareError(f"{path}: {len(published)} published {what} but "
                       f"{len(ours)} of ours (another dataset or split?)")


def compare(result, path: str, *, experiment: str,
            data_dir: Optional[str] = None,
            plot_path: Optional[str] = None) -> str:
  """Compares our estimates with a published file; returns a report.

  Args:
    result: `heldout_tf.estimates.compute`'s dict (or the .npz it saved):
      `cscores` for a C-score file, `memorization` for `cifar100_infl_matrix`
      (and pair files, optional), `tr_idx` and `tt_idx` for a pairs file;
      `labels`, when present, is checked against the published labels.
    path: the published file (kind detected from its name or keys).
    experiment: the experiment the estimates are of (its dataset must be the
      file's).
    data_dir: tfds data directory holding the prepared CIFAR dataset (CIFAR
      C-score files only: their original order is mapped to tfds order).
    plot_path: where to write a scatter plot PNG (ours vs published).

  Returns:
    Lines: the file and order assumed, Spearman and Pearson correlations
    (NaNs excluded and counted), the Jaccard overlap of pair sets, label
    agreement, the plot written.

  Raises:
    published.PublishedFileError, image_data.DatasetNotFoundError (CIFAR:
    the tfds dataset for the order is not prepared), CompareError,
    UsageError.
  """
  dataset = published_lib.check_compatible(path, experiment)
  published = published_lib.load(path)
  name = os.path.basename(path)
  if isinstance(published, published_lib.CScores):
    lines, x, y, what = _compare_cscores(result, published, dataset, data_dir)
  elif isinstance(published, published_lib.InflMatrix):
    lines, x, y, what = _compare_memorization(result, published)
  else:
    lines, x, y, what = _compare_pairs(result, published)
  lines.insert(0, f"published: {name} ({published.kind})")
  if plot_path and x is not None:
    write_scatter(plot_path, x, y, f"ours ({experiment})",
                  f"published ({name})", what)
    lines.append(f"plot: wrote {plot_path}")
  elif plot_path:
    lines.append("plot: none (the estimates have no memorization to plot)")
  return "\n".join(lines)


def _label_line(result, labels, what="labels") -> list:
  if labels is None or "labels" not in result:
    return []
  ours = np.asarray(result["labels"])
  if len(ours) != len(labels):
    return [f"{what}: not compared ({len(ours)} ours, {len(labels)} "
            "published)"]
  agree = int(np.sum(ours == labels))
  warning = "" if agree == len(ours) else (
      "  WARNING: the orders (or datasets) differ")
  return [f"{what}: {agree}/{len(ours)} agree{warning}"]


def _compare_cscores(result, published: published_lib.CScores, dataset,
                     data_dir):
  ours = _ours(result, "cscores", "cscores", published.path)
  _same_length(ours, published.scores, "C-scores", published.path)
  scores, labels = published.scores, published.labels
  if dataset in ("cifar10", "cifar100"):
    from heldout_tf.data import order as order_lib  # pylint: disable=g-import-not-at-top
    order = order_lib.tfds_original_order(dataset, "train", data_dir)
    _same_length(ours, order, "tfds examples", published.path)
    scores, labels = scores[order], labels[order]
    note = ("order: published original CIFAR order mapped to the runs' tfds "
            "order by the tfds `id` feature")
  else:
    note = ("order: taken as the runs' order (no mapping is known for "
            f"{dataset}; a label mismatch below would show otherwise)")
  lines = [note, correlate(ours, scores).line("C-scores")]
  lines += _label_line(result, labels)
  return lines, ours, scores, "C-score"


def _compare_memorization(result, published: published_lib.InflMatrix):
  ours = _ours(result, "memorization", "mem", published.path)
  _same_length(ours, published.tr_mem, "memorization values", published.path)
  lines = ["order: published memorization taken in the runs' tfds order",
           correlate(ours, published.tr_mem).line("memorization")]
  lines += _label_line(result, published.tr_labels, "train labels")
  return lines, ours, published.tr_mem, "memorization"


def _compare_pairs(result, published: published_lib.Pairs):
  ours_pairs = (_ours(result, "tr_idx", "pairs", published.path),
                _ours(result, "tt_idx", "pairs", published.path))
  score, n_ours, n_published, both = jaccard(
      ours_pairs, (published.tr_idx, published.tt_idx))
  lines = ["order: published pairs taken in the runs' tfds order",
           f"high-influence pairs: Jaccard {score:.4f} ({both} in both, "
           f"{n_ours} ours, {n_published} published)"]
  if "memorization" not in result:
    return lines, None, None, "memorization"
  mem = np.asarray(result["memorization"])
  train, first = np.unique(published.tr_idx, return_index=True)
  if train.size and train.max() >= len(mem):
    raise CompareError(f"{published.path}: training index {train.max()} but "
                       f"the estimates have {len(mem)} training examples")
  lines.append(correlate(mem[train], published.mem[first]).line(
      "memorization of the published pairs' training examples"))
  return lines, mem[train], published.mem[first], "memorization"
