"""The estimates' figures (`heldout_tf.estimates.figures`) and their order."""

import numpy as np

from heldout_tf import estimates
from heldout_tf.estimates import figures
from heldout_tf.estimates import reporting


def test_most_memorized_ties_put_more_evidence_first():
  mem = np.array([1.0, 0.5, 1.0, 1.0, 0.0, 0.0, np.nan])
  n_out = np.array([2, 9, 5, 5, 1, 7, 0])
  most, least = reporting.memorization_order(mem, n_out)
  np.testing.assert_array_equal(most, [2, 3, 0, 1, 5, 4, 6])
  np.testing.assert_array_equal(least, [5, 4, 1, 2, 3, 0, 6])


def test_printed_top_list_and_figure_order_ties_alike():
  mem = np.array([0.5, 1.0, 1.0, 1.0, 0.25])
  n_out = np.array([3, 2, 9, 4, 5])
  result = {"ratios": [0.7], "runs_per_ratio": [12], "num_runs": 12,
            "n_train": 5, "n_test": 2, "num_never_held_out": 0,
            "num_never_trained": 0, "memorization": mem,
            "num_nan_memorization": 0, "n_out": n_out, "n_in": 12 - n_out}
  line = next(l for l in estimates.summary(result).splitlines()
              if l.startswith("top memorized"))
  printed = [int(item.split(":")[0].strip(" #"))
             for item in line.split(": ", 1)[1].split(", ")]
  assert printed == list(reporting.memorization_order(mem, n_out)[0])
  assert printed == [2, 3, 1, 0, 4]


def test_tiny_negative_scores_keep_their_sign():
  assert figures.score_text(-0.0004) == "-4e-04"
  assert figures.score_text(0.0004) == "4e-04"
  assert figures.score_text(0.0) == "0.000"
  assert figures.score_text(-0.0123) == "-0.012"
  assert figures.score_text(1.0) == "1.000"


def test_memorization_captions_do_not_run_into_each_other():
  rng = np.random.default_rng(0)
  images = rng.random([40, 28, 28, 1])
  labels = rng.integers(0, 10, 40)
  mem = rng.random(40) - 0.5
  fig = figures.memorization_figure(
      images, labels, mem, noisy_idx=np.arange(0, 40, 3),
      clean_labels=(labels + 1) % 10, evidence=rng.integers(100, 999, 40))
  fig.canvas.draw()
  renderer = fig.canvas.get_renderer()
  boxes = [ax.title.get_window_extent(renderer) for ax in fig.axes
           if ax.title.get_text()]
  assert len(boxes) == 40
  overlaps = [(a, b) for k, a in enumerate(boxes) for b in boxes[k + 1:]
              if a.overlaps(b)]
  assert not overlaps
  # No caption runs into the images of the row below it either.
  images_boxes = [ax.get_window_extent(renderer) for ax in fig.axes
                  if ax.title.get_text()]
  for title in boxes:
    assert not any(title.overlaps(box) and title.y1 < box.y1 - 1
                   for box in images_boxes)


def test_images_of_any_shape_are_drawn_pixel_for_pixel():
  rng = np.random.default_rng(1)
  for shape in ([6, 8, 8, 1], [6, 32, 32, 3], [6, 64]):
    images = rng.integers(0, 255, shape).astype(np.uint8)
    fig = figures.memorization_figure(images, np.arange(6) % 3,
                                      rng.random(6), count=3, columns=3)
    shown = [ax.images[0] for ax in fig.axes if ax.images]
    assert len(shown) == 6
    assert all(im.get_interpolation() == "nearest" for im in shown)
    if shape[-1] == 1 or len(shape) == 2:
      assert all(im.get_cmap().name == "gray_r" for im in shown)


def _drawn(path_fn, *args, **kwargs):
  """The figure `path_fn(path, ...)` saves, drawn (not written)."""
  from heldout_tf.core import figures as core_figures  # pylint: disable=g-import-not-at-top
  saved = {}
  original = core_figures.save_png
  core_figures.save_png = lambda fig, path: saved.setdefault("fig", fig)
  try:
    path_fn("unused.png", *args, **kwargs)
  finally:
    core_figures.save_png = original
  fig = saved["fig"]
  fig.canvas.draw()
  return fig, fig.canvas.get_renderer()


def test_pairs_title_is_clear_of_every_caption():
  rng = np.random.default_rng(2)
  images = rng.integers(0, 255, [30, 8, 8, 1]).astype(np.uint8)
  pairs = {"tr_idx": np.arange(10) * 2, "tt_idx": np.arange(10),
           "infl": rng.random(10), "mem": rng.random(10)}
  fig, renderer = _drawn(figures.influence_pairs, images, np.arange(30) % 10,
                         images, np.arange(30) % 10, pairs)
  title = fig._suptitle.get_window_extent(renderer)  # pylint: disable=protected-access
  captions = [ax.title.get_window_extent(renderer) for ax in fig.axes
              if ax.title.get_text()]
  assert len(captions) == 20
  assert not [c for c in captions if c.overlaps(title)]
  assert not [(a, b) for k, a in enumerate(captions)
              for b in captions[k + 1:] if a.overlaps(b)]


def test_memorization_groups_have_no_empty_bands():
  rng = np.random.default_rng(3)
  fig = figures.memorization_figure(
      rng.integers(0, 255, [40, 8, 8, 1]).astype(np.uint8),
      np.arange(40) % 10, rng.random(40))
  fig.canvas.draw()
  renderer = fig.canvas.get_renderer()
  # Rows of images, top to bottom, with the caption above each: the gap
  # between one row's images and the next row's captions stays small.
  rows = sorted({round(ax.get_window_extent(renderer).y0)
                 for ax in fig.axes}, reverse=True)
  assert len(rows) == 4
  height = fig.axes[0].get_window_extent(renderer).height
  spans = [(ax.get_window_extent(renderer).y0,
            ax.title.get_window_extent(renderer).y1) for ax in fig.axes]
  tops = sorted({round(top) for _, top in spans}, reverse=True)
  bottoms = sorted({round(bottom) for bottom, _ in spans}, reverse=True)
  gaps = [bottoms[k] - tops[k + 1] for k in range(3)]
  assert max(gaps) < 0.6 * height, (gaps, height)


def test_suspicious_examples_speak_of_noise_only_when_there_is_some():
  from heldout_tf.quality import figures as quality_figures  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(4)
  images = rng.integers(0, 255, [30, 8, 8, 1]).astype(np.uint8)
  labels = np.arange(30) % 3
  scores = {"memorization": rng.random(30), "loss": rng.random(30)}
  texts = lambda fig: " ".join(t.get_text() for t in fig.findobj(
      lambda a: hasattr(a, "get_text")))
  fig, _ = _drawn(quality_figures.top_examples, images, labels, labels,
                  scores, np.zeros([0], np.int64), count=5)
  assert "noisy" not in texts(fig) and "red" not in texts(fig)
  assert all(im.get_interpolation() == "nearest"
             for ax in fig.axes for im in ax.images)
  fig, _ = _drawn(quality_figures.top_examples, images, labels,
                  (labels + 1) % 3, scores, np.arange(0, 30, 2), count=5)
  assert "/5 noisy" in texts(fig) and "red: noisy" in texts(fig)
