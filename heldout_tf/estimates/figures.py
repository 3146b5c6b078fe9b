"""Figures of a collection's estimates, for any image data: the most and
least memorized training examples, the top high-influence pairs, the
memorization histogram (`heldout_tf.core.figures`: Agg canvas, no pyplot,
atomic PNG writes; nothing happens at import).

Images are uint8 or float `[n, h, w, c]` (grey or colour, any size), drawn
pixel for pixel (no smoothing), grey images as a dark digit on light
(`figures.show_image`, as the quality figures and the report's
thumbnails).
"""

import os

import numpy as np

from heldout_tf.core import figures
from heldout_tf.estimates import reporting

NOISY_COLOR = "tab:red"
FILENAMES = ("memorization_examples.png", "high_influence_pairs.png",
             "memorization_histogram.png")


def score_text(value) -> str:
  """A score in three decimals; a tiny non-zero one with its sign and an
  exponent (-4e-04), never a '0.000' that hides its order."""
  value = float(value)
  if value != 0.0 and abs(value) < 5e-4:
    return f"{value:.0e}"
  return f"{value:.3f}"


def memorization_figure(images, labels, mem, noisy_idx=(), clean_labels=None,
                        count=20, columns=10, evidence=None):
  """The figure of `memorization_examples` (not saved)."""
  most, least = reporting.memorization_order(mem, evidence)
  tie_rule = (" (ties: held out by more runs first; out N = runs that "
              "held it out)" if evidence is not None else "")
  groups = [("Most memorized" + tie_rule, most[:count]),
            ("Least memorized" + tie_rule, least[:count])]
  rows = -(-count // columns)
  noisy = set(np.asarray(noisy_idx).tolist())
  # Constrained layout: each group's title just above its images, no
  # empty bands between the rows.
  fig = figures.new(1.3 * columns, 2 * 1.45 * rows + 0.7)
  fig.set_layout_engine("constrained")
  for sub, (title, idx) in zip(fig.subfigures(2, 1), groups):
    sub.suptitle(title, fontsize=11, fontweight="bold")
    axes = sub.subplots(rows, columns, squeeze=False)
    for ax in axes.flat:
      ax.axis("off")
    for ax, i in zip(axes.flat, idx):
      ax.axis("on")
      figures.show_image(ax, images[i])
      label = f"label {labels[i]}"
      color = "black"
      if i in noisy:
        color = NOISY_COLOR
        if clean_labels is not None:
          label += f" (was {clean_labels[i]})"
      score = f"mem {score_text(mem[i])}"
      if evidence is not None:
        score += f" out {int(evidence[i])}"
      ax.set_title(f"#{i}\n{label}\n{score}", fontsize=7, color=color)
  return fig


def memorization_examples(path, images, labels, mem, noisy_idx=(),
                          clean_labels=None, count=20, columns=10,
                          evidence=None):
  """The `count` most and least memorized training examples, with their
  label, memorization score and (if `evidence` is given) how many runs held
  them out, in `reporting.memorization_order` (the order of the printed summary).
  Relabelled (noisy) examples in red."""
  return figures.save_png(memorization_figure(
      images, labels, mem, noisy_idx, clean_labels, count, columns,
      evidence), path)


def influence_pairs(path, train_images, train_labels, test_images,
                    test_labels, pairs, count=10, columns=10):
  """The `count` highest-influence (train, test) pairs: each train image
  above the test image it influences most, as in the original's figure."""
  order = np.argsort(-np.asarray(pairs["infl"]), kind="stable")[:count]
  columns = max(1, min(columns, len(order)))
  rows = max(1, -(-len(order) // columns))
  # Constrained layout keeps the title above the captions and every
  # caption (train #index) clear of its neighbours.
  fig = figures.new(1.35 * columns + 0.3, 3.3 * rows + 0.5)
  fig.set_layout_engine("constrained")
  axes = fig.subplots(2 * rows, columns, squeeze=False)
  for ax in axes.flat:
    ax.axis("off")
  for k, p in enumerate(order):
    tr, tt = int(pairs["tr_idx"][p]), int(pairs["tt_idx"][p])
    top = axes[2 * (k // columns), k % columns]
    bottom = axes[2 * (k // columns) + 1, k % columns]
    for ax in (top, bottom):
      ax.axis("on")
    figures.show_image(top, train_images[tr])
    top.set_title(f"train #{tr}\nlabel {train_labels[tr]}\n"
                  f"mem {score_text(pairs['mem'][p])}", fontsize=7)
    figures.show_image(bottom, test_images[tt])
    bottom.set_title(f"test #{tt}\nlabel {test_labels[tt]}\n"
                     f"infl {score_text(pairs['infl'][p])}", fontsize=7)
  if not len(order):
    axes[0, 0].text(0.5, 0.5, "no pair above the thresholds",
                    ha="center", va="center")
  fig.suptitle("Top high-influence pairs (train above, test below)",
               fontsize=12, fontweight="bold")
  return figures.save_png(fig, path)


def memorization_histogram(path, mem, noisy_idx=()):
  """Histogram of memorization scores; relabelled examples separately."""
  fig = figures.new(6, 3.5)
  ax = fig.add_subplot()
  bins = np.linspace(-0.2, 1.0, 49)
  noisy = np.zeros(len(mem), bool)
  noisy[np.asarray(noisy_idx, np.int64)] = True
  shown = ~noisy & np.isfinite(mem)
  ax.hist(mem[shown], bins=bins, alpha=0.75,
          label=(f"original labels ({shown.sum()})" if noisy.any() else
                 f"training examples with an estimate ({shown.sum()})"))
  if noisy.any():
    flipped = noisy & np.isfinite(mem)
    ax.hist(mem[flipped], bins=bins, alpha=0.75, color=NOISY_COLOR,
            label=f"flipped labels ({flipped.sum()})")
  ax.set_yscale("log")
  ax.set_xlabel("memorization estimate")
  ax.set_ylabel("training examples")
  ax.legend()
  return figures.save_png(fig, path)


def write_all(directory, data, mem, result, noisy_idx=(),
              clean_labels=None):
  """Writes every figure into `directory`; returns their paths.

  Args:
    directory: where the PNG files go (made if needed).
    data: the `ImageData` the runs were trained on (labels as trained).
    mem: float `[n_train]` memorization (NaN replaced by the caller).
    result: `heldout_tf.estimates.compute`'s output (the pairs, and
      `n_out`, the runs holding each example out, which breaks
      memorization ties).
    noisy_idx: the training examples recorded noise changed (red).
    clean_labels: the labels before noise (shown for noisy examples).
  """
  os.makedirs(directory, exist_ok=True)
  examples, pairs, histogram = (os.path.join(directory, name)
                                for name in FILENAMES)
  return [
      memorization_examples(
          examples, data.train_images, data.train_labels, mem, noisy_idx,
          clean_labels, evidence=result.get("n_out")),
      influence_pairs(pairs, data.train_images, data.train_labels,
                      data.test_images, data.test_labels, result),
      memorization_histogram(histogram, mem, noisy_idx),
  ]
