"""The one figure writer: matplotlib `Figure`s on the Agg canvas (no pyplot,
no display, no global state), saved atomically as PNG.

  fig = figures.new(6, 4)
  ax = fig.add_subplot()
  ...
  figures.save_png(fig, path)
  figures.show_image(ax, image)   # an example's image, pixel for pixel
"""

import numpy as np

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


def show_image(ax, image):
  """One image on `ax`, pixel for pixel (no smoothing: an 8x8 digit shows
  its 64 pixels): uint8 or float in [0, 1]; `[h, w, c]`, `[h, w]` or flat
  square grey. Grey is drawn dark on light (ink on paper, as the report's
  thumbnails), colour as is; no ticks."""
  image = np.asarray(image)
  if image.dtype == np.uint8:
    image = image.astype(np.float32) / 255.0
  if image.ndim == 1:  # A flat grey image.
    side = int(round(np.sqrt(image.size)))
    image = image.reshape(side, side)
  if image.ndim == 3 and image.shape[-1] == 1:
    image = image[..., 0]
  if image.ndim == 2:
    ax.imshow(image, cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
  else:
    ax.imshow(np.clip(image, 0, 1), interpolation="nearest")
  ax.set_xticks([])
  ax.set_yticks([])
