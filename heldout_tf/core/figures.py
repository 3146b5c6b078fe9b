"""The one figure writer: matplotlib `Figure`s on the Agg canvas (no pyplot,
no display, no global state), saved atomically as PNG.

  fig = figures.new(6, 4)
  ax = fig.add_subplot()
  ...
  figures.save_png(fig, path)
"""

DPI = 110


def new(width: float, height: float):
  """A `matplotlib.figure.Figure` of `width` x `height` inches, Agg canvas."""
  # pylint: disable=g-import-not-at-top
  from matplotlib import figure
  from matplotlib.backends import backend_agg
  # pylint: enable=g-import-not-at-top
  fig = figure.Figure(figsize=(width, height))
  backend_agg.FigureCanvasAgg(fig)
  return fig


def save_png(fig, path: str, dpi: int = DPI) -> str:
  """Writes `fig` to `path` as PNG atomically (`errors.PathError` naming
  `path` when it cannot be written); returns `path`."""
  from heldout_tf.core import files  # pylint: disable=g-import-not-at-top
  files.atomic_write(path, lambda f: fig.savefig(
      f, format="png", dpi=dpi, bbox_inches="tight"))
  return path
