"""Figures of the MNIST reproduction (matplotlib, Agg backend: no display)."""

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top

from heldout_tf import files  # pylint: disable=g-import-not-at-top

_NOISY_COLOR = "tab:red"


def _show(ax, image):
  ax.imshow(np.asarray(image).reshape(28, 28), cmap="gray_r", vmin=0, vmax=1)
  ax.set_xticks([])
  ax.set_yticks([])


def _score(value):
  """Two decimals, without a '-0.00' for tiny negative estimates."""
  text = f"{value:.2f}"
  return "0.00" if text == "-0.00" else text


def _save(fig, path):
  def write(f):
    fig.savefig(f, format="png", dpi=110, bbox_inches="tight")
  files.atomic_write(path, write)
  plt.close(fig)
  return path


def memorization_order(mem, evidence=None):
  """`(most, least)`: training example indices, most / least memorized first.

  Scores tie often (many examples at 1.00 or 0.00). Ties are broken by
  `evidence`, how many runs held the example out (more runs: a better
  measured score, shown first), then by example index.

  Args:
    mem: float [n] memorization scores (no NaN).
    evidence: int [n] runs holding each example out, or None (index only).
  """
  mem = np.asarray(mem, np.float64)
  evidence = (np.zeros(len(mem)) if evidence is None
              else np.asarray(evidence, np.float64))
  index = np.arange(len(mem))
  # np.lexsort sorts by its last key first.
  most = np.lexsort((index, -evidence, -mem))
  least = np.lexsort((index, -evidence, mem))
  return most, least


def memorization_examples(path, images, labels, mem, noisy_idx=(),
                          clean_labels=None, count=20, columns=10,
                          evidence=None):
  """The `count` most and least memorized training examples, with their
  label, memorization score and (if `evidence` is given) how many runs held
  them out; ties are broken by that count (see `memorization_order`).
  Relabelled (noisy) examples in red."""
  most, least = memorization_order(mem, evidence)
  tie_rule = (" (ties: held out by more runs first; out N = runs that "
              "held it out)" if evidence is not None else "")
  groups = [("Most memorized" + tie_rule, most[:count]),
            ("Least memorized" + tie_rule, least[:count])]
  rows = -(-count // columns)
  noisy = set(np.asarray(noisy_idx).tolist())
  fig = plt.figure(figsize=(1.25 * columns, 2 * (1.45 * rows + 0.4)))
  sub_figs = fig.subfigures(2, 1)
  for sub, (title, idx) in zip(sub_figs, groups):
    sub.suptitle(title, fontsize=13, fontweight="bold")
    axes = sub.subplots(rows, columns, squeeze=False)
    for ax in axes.flat:
      ax.axis("off")
    for ax, i in zip(axes.flat, idx):
      ax.axis("on")
      _show(ax, images[i])
      score = f"mem {_score(mem[i])}"
      if evidence is not None:
        score += f", out {int(evidence[i])}"
      text = f"#{i} label {labels[i]}\n{score}"
      color = "black"
      if i in noisy:
        color = _NOISY_COLOR
        if clean_labels is not None:
          text = f"#{i} label {labels[i]} (was {clean_labels[i]})\n{score}"
      ax.set_title(text, fontsize=7.5, color=color)
  return _save(fig, path)


def influence_pairs(path, train_images, train_labels, test_images,
                    test_labels, pairs, count=10, columns=10):
  """The `count` highest-influence (train, test) pairs: each train image
  above the test image it influences most, as in the original's figure."""
  order = np.argsort(-np.asarray(pairs["infl"]), kind="stable")[:count]
  columns = max(1, min(columns, len(order)))
  rows = max(1, -(-len(order) // columns))
  fig, axes = plt.subplots(2 * rows, columns, squeeze=False,
                           figsize=(1.35 * columns, 3.3 * rows))
  for ax in axes.flat:
    ax.axis("off")
  for k, p in enumerate(order):
    tr, tt = int(pairs["tr_idx"][p]), int(pairs["tt_idx"][p])
    top = axes[2 * (k // columns), k % columns]
    bottom = axes[2 * (k // columns) + 1, k % columns]
    for ax in (top, bottom):
      ax.axis("on")
    _show(top, train_images[tr])
    top.set_title(f"train #{tr}\nlabel {train_labels[tr]} "
                  f"mem {_score(pairs['mem'][p])}", fontsize=7.5)
    _show(bottom, test_images[tt])
    bottom.set_title(f"test #{tt} label {test_labels[tt]}\n"
                     f"infl {_score(pairs['infl'][p])}", fontsize=7.5)
  if not len(order):
    axes[0, 0].text(0.5, 0.5, "no pair above the thresholds",
                    ha="center", va="center")
  fig.suptitle("Top high-influence pairs (train above, test below)",
               fontsize=12, fontweight="bold")
  return _save(fig, path)


def memorization_histogram(path, mem, noisy_idx=()):
  """Histogram of memorization scores; relabelled examples separately."""
  fig, ax = plt.subplots(figsize=(6, 3.5))
  bins = np.linspace(-0.2, 1.0, 49)
  noisy = np.zeros(len(mem), bool)
  noisy[np.asarray(noisy_idx, np.int64)] = True
  ax.hist(mem[~noisy], bins=bins, alpha=0.75,
          label=f"original labels ({(~noisy).sum()})")
  if noisy.any():
    ax.hist(mem[noisy], bins=bins, alpha=0.75, color=_NOISY_COLOR,
            label=f"flipped labels ({noisy.sum()})")
  ax.set_yscale("log")
  ax.set_xlabel("memorization estimate")
  ax.set_ylabel("training examples")
  ax.legend()
  return _save(fig, path)


def write_all(directory, data, mem, result):
  """Writes every figure into `directory`; returns their paths.

  `result`: `heldout_tf.estimates.compute`'s output (the pairs, and `n_out`,
  the runs holding each example out, which breaks memorization ties).
  """
  os.makedirs(directory, exist_ok=True)
  return [
      memorization_examples(
          os.path.join(directory, "memorization_examples.png"),
          data.train_images, data.train_labels, mem, data.noisy_idx,
          data.clean_train_labels, evidence=result.get("n_out")),
      influence_pairs(
          os.path.join(directory, "high_influence_pairs.png"),
          data.train_images, data.train_labels, data.test_images,
          data.test_labels, result),
      memorization_histogram(
          os.path.join(directory, "memorization_histogram.png"), mem,
          data.noisy_idx),
  ]
