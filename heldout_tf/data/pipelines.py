"""Input pipelines exactly as the released runs were trained and evaluated.

Every example carries its `index`: its position in the dataset's canonical
order, the same index `aux_arrays.npz` uses.

- CIFAR-10/100: `tfds.load(name, batch_size=-1, shuffle_files=False)`, images
  `uint8 / 255.0`, no mean/std normalisation.
  `tfds_original_order` maps the tfds order to the original CIFAR order
  (the order of the papers' CIFAR C-score files), from the tfds `id`.
- ImageNet, either of
  - user-built TFRecords with features `image/encoded`, `label`, `index`;
  - a prepared tfds `imagenet2012` directory (read, never downloaded) plus
    an index map file of `split,file_name,index` lines;
  centre crop with padding 32, 224x224, mean/std normalisation.

Errors derive from `heldout_tf.core.errors.HeldoutError`: `DatasetNotFoundError`
(a FileNotFoundError: nothing prepared where it was looked for), `DataError`
(a ValueError: bad data or index map, naming file and line) and
`errors.UsageError` (arguments that do not fit together).
"""

import dataclasses
import glob
import json
import os
import re
from typing import Optional

from absl import logging
import numpy as np
import tensorflow as tf

from heldout_tf.core import errors
from heldout_tf.core import files
from heldout_tf.core import npz

CIFAR_PAD = 4
IMAGENET_SIZE = 224
IMAGENET_CROP_PADDING = 32
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET_SPLIT_FILES = {"train": "train-*", "test": "validation-*"}
IMAGENET_TFDS_NAME = "imagenet2012"
IMAGENET_TFDS_SPLITS = {"train": "train", "test": "validation"}
INDEX_MAP_HEADER = ("split", "file_name", "index")
# Examples are looked up in the index map in chunks, so that file names
# missing from the map are reported a few at a time.
INDEX_LOOKUP_CHUNK = 256
# Under a tfds data directory: cached tfds -> original CIFAR orders.
ORDER_CACHE_DIRNAME = "heldout_tf_cache"


class DataError(errors.HeldoutError, ValueError):
  """Bad data: an undecodable image, a file name missing from the ImageNet
  index map, a malformed index map or dataset_info.json."""


class DatasetNotFoundError(errors.HeldoutError, FileNotFoundError):
  """A dataset (tfds directory, TFRecord files, index map) is not where it
  was looked for."""


@dataclasses.dataclass
class Dataset:
  """A dataset whose splits yield `{'image', 'label', 'index'}` examples."""
  name: str
  make_split: callable  # split -> (unbatched tf.data.Dataset, num_examples)
  _splits: dict = dataclasses.field(default_factory=dict, repr=False)

  def split(self, split: str):
    """Returns `(tf.data.Dataset of examples, number of examples or None)`.

    Each split is opened once and reused (CIFAR splits live in memory).
    """
    if split not in ("train", "test"):
      raise errors.UsageError(
          f"split must be 'train' or 'test', got {split!r}")
    if split not in self._splits:
      self._splits[split] = self.make_split(split)
    return self._splits[split]

  def batches(self, split: str, batch_size: int):
    ds, n = self.split(split)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE), n


def load(dataset: str, data_dir: Optional[str] = None,
         download: bool = False, index_map: Optional[str] = None) -> Dataset:
  """Opens `dataset` ('cifar10:3.0.2', 'cifar100:3.0.2' or 'imagenet').

  For CIFAR, `data_dir` is the tfds data directory (tfds' default when None);
  with `download=False` a missing dataset is an error, never a download.
  For ImageNet, `data_dir` is a prepared tfds `imagenet2012` directory (see
  `find_tfds_imagenet`), read with the file name -> index map `index_map`
  (see `read_index_map`); otherwise it holds indexed TFRecords `train-*` /
  `validation-*`.
  """
  if dataset == "imagenet":
    if not data_dir:
      raise errors.UsageError(
          "ImageNet needs --data_dir: a directory of indexed TFRecords "
          "(train-*, validation-*) with features image/encoded, label, index, "
          "or a prepared tfds imagenet2012 directory (with an index map).")
    tfds_dir = find_tfds_imagenet(data_dir)
    if tfds_dir is None:
      if index_map:
        raise errors.UsageError(
            f"An index map ({index_map}) is only used with a tfds "
            f"imagenet2012 directory, but {data_dir} holds none (no "
            "imagenet2012/<version>/dataset_info.json).")
      return Dataset(dataset, lambda split: imagenet_split(data_dir, split))
    if not index_map:
      raise errors.UsageError(
          f"{tfds_dir} is a tfds imagenet2012 dataset: it needs an index map "
          "(--imagenet_index_map), a file of split,file_name,index lines "
          "giving each image's canonical index.")
    entries = read_index_map(index_map)
    return Dataset(dataset, lambda split: imagenet_tfds_split(
        tfds_dir, split, entries))
  if index_map:
    raise errors.UsageError(
        f"An index map applies only to ImageNet, not {dataset}.")
  return Dataset(dataset,
                 lambda split: cifar_split(dataset, split, data_dir, download))


# The tfds feature types the kit reads: tfds's own classes. A prepared
# dataset's features.json names its feature classes, and tfds imports any
# module a name points at; `check_tfds_source` refuses every other name
# before tfds reads the file (no code is imported because a file says so).
KNOWN_FEATURE_TYPES = frozenset(
    f"tensorflow_datasets.core.features.{name}" for name in (
        "features_dict.FeaturesDict", "image_feature.Image",
        "class_label_feature.ClassLabel", "text_feature.Text",
        "tensor_feature.Tensor", "feature.Tensor", "scalar.Scalar",
        "sequence_feature.Sequence", "bounding_boxes.BBoxFeature",
        "labeled_image.LabeledImage"))
MAX_FEATURES_JSON_BYTES = 1 << 20
# A tfds dataset as the kit names it: name[/config][:version]. Community
# namespaces ('huggingface:mnist') would load other code: refused.
_TFDS_NAME_RE = re.compile(
    r"[a-z0-9_]+(/[A-Za-z0-9_.-]+)?(:[0-9]+\.[0-9]+\.[0-9]+)?")


def _feature_types(value):
  """Every `pythonClassName` in a parsed features.json, depth first."""
  if isinstance(value, dict):
    for key, item in value.items():
      if key == "pythonClassName":
        yield item
      else:
        yield from _feature_types(item)
  elif isinstance(value, list):
    for item in value:
      yield from _feature_types(item)


def check_features_file(path: str):
  """`DataError` unless the tfds `features.json` at `path` names only
  `KNOWN_FEATURE_TYPES` (read bounded, as untrusted JSON)."""
  with errors.user_path(path, "read"):
    npz.check_regular(path, DataError)
    with open(path, "rb") as f:
      raw = f.read(MAX_FEATURES_JSON_BYTES + 1)
  if len(raw) > MAX_FEATURES_JSON_BYTES:
    raise DataError(f"{path}: larger than {MAX_FEATURES_JSON_BYTES} bytes; "
                    "not a tfds features.json")
  try:
    parsed = json.loads(raw.decode("utf-8"))
  except (UnicodeDecodeError, ValueError) as e:
    raise DataError(f"{path}: not a tfds features.json ({e})") from None
  for name in _feature_types(parsed):
    if name not in KNOWN_FEATURE_TYPES:
      shown = str(name)[:120]
      raise DataError(
          f"{path}: feature type {shown!r} is not one the kit reads (tfds "
          "would import its module; no code is imported because a file "
          "names it)")


def check_tfds_source(name: str, data_dir=None, flag: str = "--dataset"):
  """Checks a tfds dataset before tfds opens it: `name` must be
  name[/config][:version] (`errors.UsageError` naming `flag`), and every
  `features.json` prepared for it under `data_dir` may name only the
  kit's known feature types (`check_features_file`)."""
  if not isinstance(name, str) or not _TFDS_NAME_RE.fullmatch(name):
    raise errors.UsageError(
        f"{flag} {str(name)[:80]!r}: not a tfds dataset name (name, "
        "name/config or name:1.2.3; community datasets such as "
        "'huggingface:...' are not loaded)")
  base = os.path.join(os.path.expanduser(data_dir) if data_dir
                      else default_data_dir(), name.split(":")[0])
  if not os.path.isdir(base):
    return
  for directory, subdirs, names in os.walk(base):
    depth = os.path.relpath(directory, base).count(os.sep)
    if depth >= 2:  # <name>/[<config>/]<version>/features.json
      subdirs[:] = []
    if "features.json" in names:
      check_features_file(os.path.join(directory, "features.json"))


def load_tfds_arrays(name: str, split: str, data_dir=None, download=False):
  """The whole split as numpy arrays, in canonical (unshuffled) order."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  check_tfds_source(name, data_dir)
  try:
    arrays = tfds.load(name, split=split, batch_size=-1, shuffle_files=False,
                       data_dir=data_dir, download=download)
  except (tfds.core.DatasetNotFoundError, AssertionError, FileNotFoundError) as e:
    where = data_dir or "the default tfds data_dir (~/tensorflow_datasets)"
    raise DatasetNotFoundError(
        f"tfds dataset {name!r} split {split!r} is not prepared in {where}. "
        "Pass --data_dir pointing at a prepared tfds directory, or --download "
        f"where a network is available. ({type(e).__name__}: {e})") from e
  return tfds.as_numpy(arrays)


def cifar_split(name: str, split: str, data_dir=None, download=False):
  """Evaluation examples of a CIFAR split, with their canonical index."""
  arrays = load_tfds_arrays(name, split, data_dir, download)
  n = len(arrays["label"])
  ds = tf.data.Dataset.from_tensor_slices({
      "image": arrays["image"],
      "label": arrays["label"].astype(np.int64),
      "index": np.arange(n, dtype=np.int64),
  }).map(lambda ex: dict(ex, image=tf.cast(ex["image"], tf.float32) / 255.0))
  return ds, n


def cifar_augment(image, seed=None):
  """Training augmentation: pad 4, random 32x32 crop, random left-right flip.

  `image` is a float [32, 32, 3] image; `seed` an optional stateless seed
  (shape [2]) to make the augmentation reproducible.
  """
  shape = tf.shape(image)
  padded = tf.pad(image, [[CIFAR_PAD, CIFAR_PAD], [CIFAR_PAD, CIFAR_PAD],
                          [0, 0]], mode="CONSTANT")
  if seed is None:
    cropped = tf.image.random_crop(padded, shape)
    return tf.image.random_flip_left_right(cropped)
  seeds = tf.random.experimental.stateless_split(seed, 2)
  cropped = tf.image.stateless_random_crop(padded, shape, seed=seeds[0])
  return tf.image.stateless_random_flip_left_right(cropped, seed=seeds[1])


def imagenet_split(data_dir: str, split: str):
  """Evaluation examples of indexed ImageNet TFRecords in `data_dir`."""
  pattern = os.path.join(data_dir, IMAGENET_SPLIT_FILES[split])
  record_files = sorted(glob.glob(pattern))
  if not record_files:
    raise DatasetNotFoundError(
        f"No TFRecord files match {pattern} (and {data_dir} holds no "
        "prepared tfds imagenet2012/<version>/).")
  features = {
      "image/encoded": tf.io.FixedLenFeature([], tf.string),
      "label": tf.io.FixedLenFeature([], tf.int64),
      "index": tf.io.FixedLenFeature([], tf.int64),
  }

  def parse(record):
    ex = tf.io.parse_single_example(record, features)
    return {"image": imagenet_eval_image(ex["image/encoded"]),
            "label": ex["label"], "index": ex["index"]}

  ds = tf.data.TFRecordDataset(record_files)
  # The number of records is unknown without reading them all.
  return ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE), None


def find_tfds_imagenet(data_dir: str) -> Optional[str]:
  """The prepared tfds `imagenet2012` version directory at `data_dir`, or None.

  `data_dir` may be the version directory itself, the `imagenet2012`
  directory or a tfds data directory holding `imagenet2012/<version>/`.
  A version counts as prepared when its `dataset_info.json` names
  imagenet2012; of several, the highest version is used.
  """
  data_dir = os.path.expanduser(data_dir)
  candidates = ([data_dir] + _version_dirs(data_dir) +
                _version_dirs(os.path.join(data_dir, IMAGENET_TFDS_NAME)))
  for path in candidates:
    info_path = os.path.join(path, "dataset_info.json")
    if not os.path.isfile(info_path):
      continue
    try:
      with open(info_path, encoding="utf-8") as f:
        name = json.load(f).get("name")
    except (ValueError, AttributeError) as e:
      raise DataError(f"{info_path} is not a tfds dataset_info.json: "
                       f"{e}") from e
    if name == IMAGENET_TFDS_NAME:
      return path
  return None


def _version_dirs(parent):
  """Subdirectories of `parent` named like a version, highest first."""
  if not os.path.isdir(parent):
    return []
  versions = [name for name in os.listdir(parent)
              if re.fullmatch(r"\d+\.\d+\.\d+", name)]
  versions.sort(key=lambda v: tuple(int(part) for part in v.split(".")),
                reverse=True)
  return [os.path.join(parent, v) for v in versions]


@dataclasses.dataclass
class IndexMap:
  """File name -> canonical index of each tfds imagenet2012 split."""
  path: str
  splits: dict  # tfds split -> (file names [n] str, indices [n] int64)

  def table(self, split: str) -> tf.lookup.StaticHashTable:
    """An in-graph lookup of `split`'s file names; -1 when absent."""
    names, indices = self.splits[split]
    return tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            tf.constant(names, tf.string), tf.constant(indices, tf.int64)),
        default_value=-1)


def read_index_map(path: str) -> IndexMap:
  """Reads an ImageNet index map file.

  A UTF-8 text file with one `split,file_name,index` line per image (comma
  or tab separated; an optional first line `split,file_name,index` is a
  header; blank lines are skipped). `split` is `train` or `validation`,
  `file_name` the tfds `file_name` feature (e.g. `n01440764_10026.JPEG`,
  `ILSVRC2012_val_00000001.JPEG`) and `index` the image's canonical index
  (>= 0) in its split. File names must be unique over the whole file,
  indices unique within a split. Errors name the file and line.
  """
  if not os.path.isfile(path):
    raise DatasetNotFoundError(f"ImageNet index map {path} does not exist.")
  splits = {s: ([], []) for s in IMAGENET_TFDS_SPLITS.values()}
  line_of_name = {}
  with errors.user_path(path, "read"), open(path, "rb") as f:
    for number, raw in enumerate(f, 1):
      where = f"{path}:{number}"
      try:
        line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
      except UnicodeDecodeError as e:
        raise DataError(f"{where}: not UTF-8 text ({e})") from e
      line = line.rstrip("\r\n")
      if not line.strip():
        continue
      fields = [field.strip()
                for field in line.split("\t" if "\t" in line else ",")]
      if number == 1 and tuple(fields) == INDEX_MAP_HEADER:
        continue
      if len(fields) != 3:
        raise DataError(f"{where}: expected split,file_name,index, got "
                         f"{line!r}")
      split, name, index = fields
      if split not in splits:
        raise DataError(f"{where}: split must be 'train' or 'validation', "
                         f"got {split!r}")
      if not name:
        raise DataError(f"{where}: empty file name in {line!r}")
      if not re.fullmatch(r"[0-9]{1,18}", index):
        raise DataError(f"{where}: index must be an integer >= 0, got "
                         f"{index!r}")
      if name in line_of_name:
        raise DataError(f"{where}: file name {name!r} is already on line "
                         f"{line_of_name[name]}")
      line_of_name[name] = number
      splits[split][0].append(name)
      splits[split][1].append(int(index))
  arrays = {}
  for split, (names, indices) in splits.items():
    indices = np.array(indices, np.int64)
    unique, counts = np.unique(indices, return_counts=True)
    if np.any(counts > 1):
      index = unique[counts > 1][0]
      lines = [line_of_name[names[i]] for i in np.flatnonzero(indices == index)]
      raise DataError(f"{path}:{lines[1]}: {split} index {index} is already "
                       f"on line {lines[0]}")
    arrays[split] = (np.array(names, dtype=object), indices)
  return IndexMap(path, arrays)


def imagenet_tfds_split(tfds_dir: str, split: str, index_map: IndexMap):
  """Evaluation examples of a prepared tfds imagenet2012, indexed by map.

  Reads `tfds_dir` (a version directory) without ever downloading, files in
  order, images still encoded; each example's `index` is its `file_name`
  looked up in `index_map`. A file name missing from the map fails the
  iteration with an error naming a few.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  tfds_split = IMAGENET_TFDS_SPLITS[split]
  features = os.path.join(tfds_dir, "features.json")
  if os.path.lexists(features):
    check_features_file(features)
  builder = tfds.builder_from_directory(tfds_dir)
  if tfds_split not in builder.info.splits:
    raise DatasetNotFoundError(
        f"{tfds_dir} has no {tfds_split!r} split (it has "
        f"{', '.join(sorted(builder.info.splits))}).")
  num_examples = builder.info.splits[tfds_split].num_examples
  num_mapped = len(index_map.splits[tfds_split][1])
  if num_mapped < num_examples:
    raise DataError(
        f"ImageNet index map {index_map.path} has {num_mapped} "
        f"{tfds_split} lines but {tfds_dir} has {num_examples} "
        f"{tfds_split} examples.")
  table = index_map.table(tfds_split)
  missing_message = (f"ImageNet index map {index_map.path} has no "
                     f"{tfds_split} line for file names")

  def attach_index(chunk):
    index = table.lookup(chunk["file_name"])
    missing = tf.boolean_mask(chunk["file_name"], index < 0)
    message = tf.strings.join(
        [missing_message, tf.strings.reduce_join(missing[:5], separator=", ")],
        separator=" ")
    check = tf.debugging.Assert(tf.size(missing) == 0, [message])
    with tf.control_dependencies([check]):
      return {"image": chunk["image"], "label": chunk["label"],
              "index": tf.identity(index)}

  ds = builder.as_dataset(split=tfds_split, shuffle_files=False,
                          decoders={"image": tfds.decode.SkipDecoding()})
  ds = ds.batch(INDEX_LOOKUP_CHUNK).map(attach_index).unbatch()
  ds = ds.map(lambda ex: dict(ex, image=imagenet_eval_image(ex["image"])),
              num_parallel_calls=tf.data.AUTOTUNE)
  return ds, num_examples


def imagenet_eval_image(encoded):
  """Decode, centre crop (padding 32), resize to 224, mean/std normalise.

  JPEGs are decoded only inside the crop window; other formats (PNG, GIF,
  BMP) are decoded whole and cropped to the same window.
  """

  def window(height, width):
    crop = tf.cast(
        IMAGENET_SIZE / (IMAGENET_SIZE + IMAGENET_CROP_PADDING) *
        tf.cast(tf.minimum(height, width), tf.float32), tf.int32)
    return (height - crop + 1) // 2, (width - crop + 1) // 2, crop

  def decode_jpeg():
    shape = tf.io.extract_jpeg_shape(encoded)
    top, left, crop = window(shape[0], shape[1])
    return tf.image.decode_and_crop_jpeg(
        encoded, tf.stack([top, left, crop, crop]), channels=3)

  def decode_other():
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    shape = tf.shape(image)
    top, left, crop = window(shape[0], shape[1])
    return image[top:top + crop, left:left + crop]

  image = tf.cond(tf.io.is_jpeg(encoded), decode_jpeg, decode_other)
  image.set_shape([None, None, 3])
  image = tf.image.resize(image, [IMAGENET_SIZE, IMAGENET_SIZE],
                          method="bicubic")
  image = image / 255.0
  return (image - IMAGENET_MEAN) / IMAGENET_STD


# ------------------------------------------------ tfds order <-> original


def default_data_dir() -> str:
  """tfds' default data directory: `$TFDS_DATA_DIR`, ~/tensorflow_datasets."""
  return os.path.expanduser(os.environ.get("TFDS_DATA_DIR",
                                           "~/tensorflow_datasets"))


def parse_ids(ids, split: str, where: str) -> np.ndarray:
  """`['train_16399', ...]` -> original positions [n] int64 (a permutation).

  Raises:
    DataError: an id is not `<split>_<digits>` or the positions are not a
      permutation of 0..n-1 (naming `where`).
  """
  pattern = re.compile(rf"{re.escape(split)}_([0-9]+)")
  positions = np.empty(len(ids), np.int64)
  for k, raw in enumerate(ids):
    text = raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
    match = pattern.fullmatch(text)
    if not match:
      raise DataError(f"{where}: example {k} has id {text!r}, "
                               f"expected {split}_<number>")
    positions[k] = int(match.group(1))
  seen = np.zeros(len(ids), bool)
  inside = positions < len(ids)
  seen[positions[inside]] = True
  if not inside.all() or not seen.all():
    raise DataError(
        f"{where}: the ids are not {split}_0 .. {split}_{len(ids) - 1} "
        f"(each once): {int((~seen).sum())} positions missing")
  return positions


def tfds_original_order(dataset: str, split: str = "train",
                        data_dir: Optional[str] = None,
                        cache: bool = True) -> np.ndarray:
  """Original position of each example of a tfds CIFAR split, in tfds order.

  `order[k]` is the original CIFAR position of the example at position `k` of
  `tfds.load(dataset, split=split, shuffle_files=False)` (the index the
  released runs use), read from the tfds `id` feature. So a vector in the
  original order becomes one in the runs' order as `values[order]`.

  Reads a prepared tfds dataset (`dataset` as 'cifar10' or 'cifar10:3.0.2')
  from `data_dir` (tfds' default when None), never downloads. The mapping is
  cached atomically in `<data_dir>/heldout_tf_cache/<name>-<version>-<split>-
  order.npy` (skipped with a warning when that is not writable) and rebuilt
  when the dataset was prepared again since.

  Raises:
    DatasetNotFoundError: the dataset is not prepared in `data_dir`.
    DataError: its ids are not `<split>_<n>` for n = 0..N-1.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  data_dir = os.path.expanduser(data_dir) if data_dir else default_data_dir()
  check_tfds_source(dataset, data_dir)
  try:
    builder = tfds.builder(dataset, data_dir=data_dir)
    info_file = os.path.join(builder.data_dir, "dataset_info.json")
    if not os.path.isfile(info_file) or split not in builder.info.splits:
      raise FileNotFoundError(info_file)
  except (tfds.core.DatasetNotFoundError, AssertionError, FileNotFoundError,
          ValueError) as e:
    raise DatasetNotFoundError(
        f"tfds dataset {dataset!r} split {split!r} is not prepared in "
        f"{data_dir} (needed to map the original CIFAR order to the runs' "
        "tfds order; prepare it with tfds, or pass --data_dir)") from e
  name = f"{builder.name}-{builder.version}-{split}"
  cache_path = os.path.join(data_dir, ORDER_CACHE_DIRNAME,
                            f"{name}-order.npy")
  num_examples = builder.info.splits[split].num_examples
  if cache:
    cached = _read_cached_order(cache_path, num_examples, info_file)
    if cached is not None:
      return cached
  ds = builder.as_dataset(split=split, shuffle_files=False,
                          decoders=tfds.decode.PartialDecoding({"id": True}))
  ids = [i for batch in tfds.as_numpy(ds.batch(10_000)) for i in batch["id"]]
  order = parse_ids(ids, split, f"tfds {builder.name}:{builder.version} "
                    f"{split} in {data_dir}")
  if cache:
    _write_cached_order(cache_path, order)
  return order


def _read_cached_order(path, num_examples, info_file) -> Optional[np.ndarray]:
  """The cached order if present, newer than the dataset and well formed."""
  try:
    if os.path.getmtime(path) < os.path.getmtime(info_file):
      return None
    order = npz.read_npy(path, DataError, kinds="i",
                         shape=(num_examples,)).astype(np.int64)
  except (OSError, errors.HeldoutError):
    return None
  if not np.array_equal(np.sort(order), np.arange(num_examples)):
    return None
  return order


def _write_cached_order(path, order):
  try:
    files.atomic_write(path, lambda f: np.save(f, order))
  except OSError as e:
    logging.warning("Not caching the tfds order in %s: %s", path,
                    errors.describe_os_error(e))
