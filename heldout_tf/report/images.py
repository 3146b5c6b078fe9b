"""Example images for a report: the collection's dataset, as sprite sheets.

Images come from the dataset the runs were trained on, never downloaded:

- collections the kit made (`heldout train`, `heldout quality`, the MNIST
  presets): config.json records the data source;
  `heldout_tf.collection.provenance.load_recorded` loads it again with its
  recorded cut and noise and checks the recorded fingerprint;
- the released CIFAR collections: tfds in `data_dir` (download=False);
- anything else (e.g. a collection of an earlier version of the MNIST
  reproduction, which recorded no source): no images (the page says why).

Thumbnails are PNG sprite sheets (`SHEET_COLUMNS` x `SHEET_ROWS` tiles per
sheet). Grayscale images are drawn dark on light, as the kit's PNG figures
draw them (`heldout_tf.estimates.figures`: value 1 black, 0 white), with 16
grey levels (4-bit PNG), about 95 bytes per MNIST digit; colour images are
stored as they are. When all of a split's images would exceed
`budget_bytes`, only the first `priority` examples that fit get one.
"""

import dataclasses
import io
from typing import List, Optional, Sequence, Tuple

import numpy as np

from heldout_tf.core import errors
from heldout_tf.collection import experiments

SHEET_COLUMNS = 64
SHEET_ROWS = 64
DEFAULT_BUDGET_BYTES = 12 * 2**20  # Per split, before base64.


@dataclasses.dataclass
class Images:
  """A collection's images, canonical order, uint8 `[n, height, width, c]`."""
  train: np.ndarray
  test: np.ndarray
  description: str
  class_names: Optional[List[str]] = None
  train_labels: Optional[np.ndarray] = None  # int64 [n_train]
  test_labels: Optional[np.ndarray] = None   # int64 [n_test]


@dataclasses.dataclass
class Sprites:
  """One split's thumbnails: PNG sheets, and each example's slot in them."""
  height: int
  width: int
  sheets: List[bytes]      # PNG files, SHEET_COLUMNS tiles wide.
  slots: np.ndarray        # int32 [n]: tile number, -1: no thumbnail.

  @property
  def num_bytes(self) -> int:
    return sum(len(s) for s in self.sheets)


def _uint8(images) -> np.ndarray:
  images = np.asarray(images)
  if images.dtype != np.uint8:
    images = np.clip(np.round(images.astype(np.float64) * 255), 0, 255)
    images = images.astype(np.uint8)
  if images.ndim == 3:
    images = images[..., None]
  return images


def _tfds(dataset: str, data_dir) -> Tuple[Optional[Images], str]:
  from heldout_tf.data import tfds as tfds_lib  # pylint: disable=g-import-not-at-top
  try:
    arrays = {split: tfds_lib.load_split(dataset, split, data_dir,
                                         download=False)
              for split in ("train", "test")}
  except errors.HeldoutError as e:
    if not isinstance(e, FileNotFoundError):
      return None, f"no images: {e}"
    return None, (f"no images: tfds {dataset} is not prepared in "
                  f"{data_dir or 'the default tfds data_dir'} (pass "
                  "--data_dir)")
  names = None
  try:
    names = tfds_lib.class_names(dataset, data_dir)
  except Exception:  # pylint: disable=broad-except
    names = None  # Class names are a nicety: numbers then.
  return Images(_uint8(arrays["train"]["image"]),
                _uint8(arrays["test"]["image"]), f"tfds {dataset}", names,
                arrays["train"]["label"].astype(np.int64),
                arrays["test"]["label"].astype(np.int64)), ""


def load(experiment: str, config: Optional[dict], data_dir=None,
         n_train: Optional[int] = None, n_test: Optional[int] = None
         ) -> Tuple[Optional[Images], str]:
  """`(images, note)`: the collection's images, or None and why not.

  Never downloads; imports TensorFlow (tfds). `n_train` / `n_test`: the
  runs' sizes, which the images must match.
  """
  if config and config.get("source"):  # Made by the training workflow.
    images, note = _image_data(config, data_dir)
  elif (experiment in experiments.RELEASED and
        experiments.RELEASED[experiment].dataset != "imagenet"):
    images, note = _tfds(experiments.RELEASED[experiment].dataset, data_dir)
  else:
    dataset = (config or {}).get("dataset") or (
        experiments.RELEASED[experiment].dataset
        if experiment in experiments.RELEASED else "unknown")
    return None, f"no images: no offline source for dataset {dataset!r}"
  if images is not None and (n_train, n_test) != (None, None) and (
      (len(images.train), len(images.test)) != (n_train, n_test)):
    return None, (f"no images: the dataset has {len(images.train)} / "
                  f"{len(images.test)} examples, the runs {n_train} / "
                  f"{n_test}")
  return images, note


def _image_data(config: dict, data_dir) -> Tuple[Optional[Images], str]:
  """The images of a `heldout train` collection, rebuilt from its recorded
  source and noise (`provenance.load_recorded`, checked by fingerprint)."""
  from heldout_tf.collection import provenance  # pylint: disable=g-import-not-at-top
  source = config["source"]
  try:
    data, _ = provenance.load_recorded(config, "config.json", "",
                                         data_dir)
  except errors.ConfigError:
    return None, (f"no images: the {source} data loaded now differs from "
                  "the data the runs were trained on (data fingerprint)")
  except errors.HeldoutError as e:
    return None, f"no images: loading {source} failed ({e})"
  names = (list(data.class_names) if data.class_names else
           [str(c) for c in range(data.num_classes)])
  return Images(data.train_images, data.test_images, data.description,
                names, data.train_labels, data.test_labels), ""


def _png(tile_grid: np.ndarray) -> bytes:
  from PIL import Image  # pylint: disable=g-import-not-at-top
  buffer = io.BytesIO()
  if tile_grid.shape[-1] == 1:  # Dark on light: level 15 is white.
    levels = (15 - (tile_grid[..., 0].astype(np.uint16) + 8) // 17).astype(
        np.uint8)  # 16 grey levels, shown as 17 * level.
    Image.fromarray(levels, "L").save(buffer, "PNG", bits=4, optimize=False)
  else:
    Image.fromarray(tile_grid[..., :3], "RGB").save(buffer, "PNG")
  return buffer.getvalue()


def _sheet(images: np.ndarray) -> bytes:
  """One PNG of up to SHEET_COLUMNS x SHEET_ROWS tiles, row by row."""
  count, height, width, channels = images.shape
  rows = -(-count // SHEET_COLUMNS)
  grid = np.zeros((rows * SHEET_COLUMNS, height, width, channels), np.uint8)
  grid[:count] = images
  grid = grid.reshape(rows, SHEET_COLUMNS, height, width, channels)
  grid = grid.transpose(0, 2, 1, 3, 4).reshape(
      rows * height, SHEET_COLUMNS * width, channels)
  return _png(grid)


def sprites(images: np.ndarray, priority: Optional[Sequence[int]] = None,
            budget_bytes: int = DEFAULT_BUDGET_BYTES) -> Sprites:
  """Thumbnails of `images` (uint8 `[n, h, w, c]`) as PNG sprite sheets.

  Every example gets one when they fit in `budget_bytes` (estimated from
  the first sheet); otherwise the examples of `priority` first (then the
  others in index order) until the budget is spent.
  """
  images = _uint8(images)
  n = len(images)
  per_sheet = SHEET_COLUMNS * SHEET_ROWS
  first = _sheet(images[:per_sheet]) if n else b""
  per_image = len(first) / max(1, min(n, per_sheet))
  count = n if per_image * n <= budget_bytes else int(
      budget_bytes // max(per_image, 1.0))
  if count >= n:
    order = np.arange(n)
  else:
    seen = np.zeros(n, bool)
    chosen = []
    for i in list(priority or []) + list(range(n)):
      if len(chosen) == count:
        break
      if not seen[i]:
        seen[i] = True
        chosen.append(i)
    order = np.asarray(chosen, np.int64)
  slots = np.full(n, -1, np.int32)
  slots[order] = np.arange(len(order), dtype=np.int32)
  sheets = [first] if count >= n and n else []
  start = len(sheets) * per_sheet
  for begin in range(start, len(order), per_sheet):
    sheets.append(_sheet(images[order[begin:begin + per_sheet]]))
  return Sprites(int(images.shape[1]), int(images.shape[2]), sheets, slots)
