"""Example images for a report: the collection's dataset, as sprite sheets.

Images come from the dataset the runs were trained on, never downloaded:

- collections made by `heldout train` or `heldout quality` (its MNIST
  preset `mnist_example.quality` included): config.json records the data
  source; `heldout_tf.collection.provenance.load_recorded` loads it again
  with its recorded cut and noise and checks the recorded fingerprint;
- collections made by `mnist_example.train` (config.json names `dataset`
  'mnist' or 'digits', and no source), and MNIST quality collections made
  before that pipeline became a preset of `heldout quality` (they also
  record `noise`): the dataset loaded by `heldout_tf.data.mnist` ('mnist'
  from tfds in `data_dir`, or the embedded offline 'digits'), cut and
  noised exactly as that pipeline did, and checked against the recorded
  data fingerprint;
- the released CIFAR collections: tfds in `data_dir` (download=False);
- anything else: no images (the page says why).

Thumbnails are PNG sprite sheets (`SHEET_COLUMNS` x `SHEET_ROWS` tiles per
sheet). Grayscale images are drawn dark on light, as the kit's PNG figures
draw them (`heldout_tf.quality.figures`: value 1 black, 0 white), with 16
grey levels (4-bit PNG), about 95 bytes per MNIST digit; colour images are
stored as they are. When all of a split's images would exceed
`budget_bytes`, only the first `priority` examples that fit get one.
"""

import dataclasses
import io
from typing import List, Optional, Sequence, Tuple

import numpy as np

from heldout_tf.core import errors
from heldout_tf.collection import released
from heldout_tf import collection

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


def _mnist_fingerprint(train_float, data, noisy_idx, config) -> str:
  """The data fingerprint `mnist_example.train` records, and the MNIST
  quality pipeline recorded before it became a preset of `heldout quality`:
  of the training labels (as trained: noisy), the test labels, the first
  64 training images as the runs saw them (`train_float`: float32 `uint8 /
  255`, input noise applied) and, when config.json records `noise` (the
  quality pipeline), the first 64 noisy examples' images too."""
  arrays = [data.train_labels, data.test_labels, train_float[:64]]
  if "noise" in config:
    arrays.append(train_float[noisy_idx[:64]])
  return collection.fingerprint(*arrays)


def _mnist_data(config: dict, data_dir):
  """`(data, train_float, noisy_idx)`: the data of an MNIST collection
  without a recorded source rebuilt from its config.json as its pipeline
  made it (uint8 `ImageData`), its training images as the runs saw them
  (float32 `[n, 28, 28, 1]`) and the indices of its noisy training
  examples.

  The earlier MNIST quality pipeline (config has `noise`): the first
  `train_size` / `test_size` examples, then the noise (`heldout_tf.data.
  noise.apply_to_images`, on the float32 images as trained);
  `mnist_example.train`: `label_noise` (`noise.flip_labels`) on the whole
  training set, then the cut.
  """
  # pylint: disable=g-import-not-at-top
  from heldout_tf.data import image_data
  from heldout_tf.data import mnist
  from heldout_tf.data import noise as noise_lib
  # pylint: enable=g-import-not-at-top
  seed = int(config.get("seed", 0))
  sizes = int(config.get("train_size", 0)), int(config.get("test_size", 0))
  data = mnist.load(config["dataset"], data_dir)
  if "noise" in config:
    data = image_data.first_examples(data, *sizes)
    as_trained, noisy = noise_lib.apply_to_images(
        dataclasses.replace(
            data, train_images=image_data.as_float(data.train_images)),
        noise_lib.parse(config["noise"]), seed)
    data = dataclasses.replace(as_trained,
                               train_images=_uint8(as_trained.train_images))
    return data, as_trained.train_images, noisy.noisy_idx
  fraction = float(config.get("label_noise", 0.0))
  if not 0.0 <= fraction < 1.0:  # Also refuses nan.
    raise errors.ConfigError(
        f"config.json: label_noise must be in [0, 1), got {fraction}")
  labels, noisy_idx = noise_lib.flip_labels(data.train_labels, fraction,
                                            seed, mnist.NUM_CLASSES)
  data = image_data.first_examples(
      dataclasses.replace(data, train_labels=labels), *sizes)
  noisy_idx = noisy_idx[noisy_idx < len(data.train_labels)]
  return data, image_data.as_float(data.train_images), noisy_idx


def _mnist(config: dict, data_dir) -> Tuple[Optional[Images], str]:
  # pylint: disable=g-import-not-at-top
  from heldout_tf.data import image_data
  from heldout_tf.data import mnist
  # pylint: enable=g-import-not-at-top
  dataset = config["dataset"]
  try:
    data, train_float, noisy_idx = _mnist_data(config, data_dir)
  except image_data.DatasetNotFoundError:
    return None, (f"no images: tfds MNIST is not prepared in "
                  f"{data_dir or 'the default tfds data_dir'} (pass "
                  "--data_dir)")
  except errors.HeldoutError as e:  # E.g. a data_dir that is a file.
    return None, f"no images: loading {dataset} failed ({e})"
  recorded = config.get("data_fingerprint")
  if recorded and _mnist_fingerprint(train_float, data, noisy_idx,
                                     config) != recorded:
    return None, (f"no images: the {dataset} data loaded now differs from "
                  "the data the runs were trained on (data fingerprint)")
  return Images(data.train_images, data.test_images, data.description,
                [str(c) for c in range(mnist.NUM_CLASSES)],
                data.train_labels, data.test_labels), ""


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
  if config and config.get("source"):  # Made by `heldout train`.
    images, note = _image_data(config, data_dir)
  elif config and config.get("dataset") in ("mnist", "digits"):
    images, note = _mnist(config, data_dir)
  elif (experiment in released.EXPERIMENTS and
        released.EXPERIMENTS[experiment].dataset != "imagenet"):
    images, note = _tfds(released.EXPERIMENTS[experiment].dataset, data_dir)
  else:
    dataset = (config or {}).get("dataset") or (
        released.EXPERIMENTS[experiment].dataset
        if experiment in released.EXPERIMENTS else "unknown")
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
  return Images(data.train_images, data.test_images, data.description,
                [str(c) for c in range(data.num_classes)], data.train_labels,
                data.test_labels), ""


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
