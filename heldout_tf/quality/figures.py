"""Figures of the data-quality comparison (`heldout_tf.quality.workflow`):
ROC and precision-at-k curves of every score against the known noise,
the most suspicious examples per score, and the removal ablation.

Drawn with `heldout_tf.core.figures` (the kit's one figure writer: Agg canvas,
no pyplot, atomic PNG writes); nothing happens at import.
"""

import os
from typing import List, Mapping, Sequence

import numpy as np

from heldout_tf.quality import detection
from heldout_tf.core import figures

NOISY_COLOR = "tab:red"
FILENAMES = ("roc.png", "precision_at_k.png", "top_suspicious.png",
             "removal.png")  # The last only with a removal ablation.
RANDOM_STYLE = dict(color="black", linestyle="--")


def _legend_outside(ax):
  ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))


def roc_curves(path, scores: Mapping[str, np.ndarray], noisy_idx):
  """One ROC curve per score (noisy = positive), AUC in the legend."""
  fig = figures.new(5.5, 5)
  ax = fig.add_subplot()
  for name, value in scores.items():
    fpr, tpr = detection.roc_curve(value, noisy_idx)
    auc = detection.metrics(value, noisy_idx)["auc"]
    ax.plot(fpr, tpr, label=f"{name} ({auc:.3f})")
  ax.plot([0, 1], [0, 1], label="chance", **RANDOM_STYLE)
  ax.set_xlabel("false positive rate (clean flagged)")
  ax.set_ylabel("true positive rate (noisy found)")
  ax.set_title("Finding the noisy examples: ROC (AUC)")
  ax.legend(fontsize=8, loc="lower right")
  return figures.save_png(fig, path)


def precision_curves(path, scores: Mapping[str, np.ndarray], noisy_idx,
                     max_k=None):
  """Precision among the top k, k = 1 .. 2 x the number of noisy."""
  n = len(next(iter(scores.values())))
  num_noisy = len(noisy_idx)
  max_k = min(n, max_k or max(1, 2 * num_noisy))
  ks = np.arange(1, max_k + 1)
  fig = figures.new(6, 4)
  ax = fig.add_subplot()
  for name, value in scores.items():
    ax.plot(ks, detection.precision_at(value, noisy_idx, ks), label=name)
  ax.axhline(num_noisy / n, label="random", **RANDOM_STYLE)
  if num_noisy:
    ax.axvline(num_noisy, color="gray", linewidth=0.8)
  ax.set_xlabel("k (examples flagged, most suspicious first)")
  ax.set_ylabel("precision at k (fraction noisy)")
  ax.set_ylim(0, 1.02)
  ax.set_title(f"Precision at k ({num_noisy} noisy of {n}; line: k = noisy)")
  _legend_outside(ax)
  return figures.save_png(fig, path)


def removal_plot(path, rows: Sequence[dict]):
  """Test accuracy (mean +- sd) after removing the top fraction by each
  method; the no-removal accuracy as a horizontal line."""
  fig = figures.new(6, 4)
  ax = fig.add_subplot()
  methods = [m for m in dict.fromkeys(r["method"] for r in rows)
             if m != detection.NO_REMOVAL]
  for method in methods:
    mine = sorted((r for r in rows if r["method"] == method),
                  key=lambda r: r["fraction"])
    x = [100 * r["fraction"] for r in mine]
    style = RANDOM_STYLE if method == detection.RANDOM else {}
    ax.errorbar(x, [r["accuracy_mean"] for r in mine],
                yerr=[r["accuracy_sd"] for r in mine], label=method,
                marker="o", markersize=3, capsize=2, **style)
  for r in rows:
    if r["method"] == detection.NO_REMOVAL:
      ax.axhline(r["accuracy_mean"], color="gray", linewidth=0.8,
                 label="nothing removed")
  ax.set_xlabel("training examples removed (%), most suspicious first")
  ax.set_ylabel("clean test accuracy")
  ax.set_xticks(sorted({100 * r["fraction"] for r in rows
                        if r["method"] != detection.NO_REMOVAL}))
  ax.set_title("Removal ablation (retrained models, mean +- sd)")
  _legend_outside(ax)
  return figures.save_png(fig, path)


def top_examples(path, images, labels, clean_labels,
                 scores: Mapping[str, np.ndarray], noisy_idx, count=12,
                 tiebreak="loss"):
  """Per score (one row each), the `count` examples it ranks most
  suspicious; with recorded noise (`noisy_idx` not empty), how many of
  them are noisy, and noisy ones titled in red with their original label
  (a collection without recorded noise gets neither).

  Ties (e.g. many C-scores of exactly 0) are broken by the `tiebreak`
  score (held-out loss by default), then by index.
  """
  tie_values = scores.get(tiebreak)
  noisy = detection.noisy_mask(len(labels), noisy_idx)
  rows = len(scores)
  fig = figures.new(1.1 * count + 1.5, 1.35 * rows + 0.4)
  # Constrained layout puts the title just above the grid (no empty band).
  fig.set_layout_engine("constrained")
  axes = fig.subplots(rows, count, squeeze=False)
  known = bool(noisy.any())
  for ax in axes.flat:
    ax.axis("off")
  for r, (name, value) in enumerate(scores.items()):
    top = detection.ranking(value, tie_values)[:count]
    found = f"\n{int(noisy[top].sum())}/{len(top)} noisy" if known else ""
    axes[r, 0].axis("on")
    axes[r, 0].set_ylabel(f"{name}{found}", fontsize=8, rotation=0,
                          ha="right", va="center")
    for c, i in enumerate(top):
      ax = axes[r, c]
      ax.axis("on")
      figures.show_image(ax, images[i])
      text = f"#{i} y={labels[i]}"
      color = "black"
      if noisy[i]:
        color = NOISY_COLOR
        text += f" ({clean_labels[i]})" if labels[i] != clean_labels[i] else (
            " (img)")
        for spine in ax.spines.values():
          spine.set_edgecolor(NOISY_COLOR)
          spine.set_linewidth(2)
      ax.set_title(text, fontsize=6.5, color=color)
  ties = f"ties by {tiebreak if tie_values is not None else 'index'}"
  fig.suptitle("Most suspicious examples per score, #index y=label ("
               + ("red: noisy, with the label before the noise, or (img) "
                  "for input noise; " if known else "") + ties + ")",
               fontsize=10)
  return figures.save_png(fig, path)


def write_all(directory, images, labels, clean_labels, noisy_idx,
              scores: Mapping[str, np.ndarray],
              removal_rows: Sequence[dict]) -> List[str]:
  """Writes every figure into `directory`; returns their paths. ROC and
  precision curves need known noise (`noisy_idx` not empty); the removal
  plot a removal ablation.

  Args:
    images: the training images `[n, ...]` (uint8 or float in [0, 1]).
    labels: int `[n]`, the labels trained with; `clean_labels` before noise.
    noisy_idx: int, the examples the noise touched.
    scores: name -> float `[n]`, higher = more suspicious.
    removal_rows: rows of `detection.REMOVAL_COLUMNS` (may be empty).
  """
  os.makedirs(directory, exist_ok=True)
  paths = []
  if len(noisy_idx):
    paths += [roc_curves(os.path.join(directory, FILENAMES[0]), scores,
                         noisy_idx),
              precision_curves(os.path.join(directory, FILENAMES[1]),
                               scores, noisy_idx)]
  paths.append(top_examples(os.path.join(directory, FILENAMES[2]), images,
                            labels, clean_labels, scores, noisy_idx))
  if removal_rows:
    paths.append(removal_plot(os.path.join(directory, FILENAMES[3]),
                              removal_rows))
  return paths
