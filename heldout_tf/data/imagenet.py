"""ImageNet evaluation examples, as the released runs were evaluated.

  make_split = imagenet.split_reader(data_dir, index_map)  # or index_map None
  ds, n = make_split("test")   # {'image', 'label', 'index'} examples

From either of
- user-built TFRecords `train-*` / `validation-*` in `data_dir`, with
  features `image/encoded`, `label`, `index` (`records_split`);
- a prepared tfds `imagenet2012` directory (`find_tfds_dir`; read, never
  downloaded, its features.json checked first by `heldout_tf.data.tfds`)
  plus an index map file of `split,file_name,index` lines giving each
  image's canonical index (`read_index_map`, `tfds_split`).

Every image goes through `eval_image`: centre crop with padding 32,
224x224, mean/std normalisation. `heldout_tf.data.pipelines.load` opens
ImageNet through `split_reader`.
"""

import dataclasses
import glob
import json
import os
import re
from typing import Callable, Optional

import numpy as np
import tensorflow as tf

from heldout_tf.core import errors
from heldout_tf.data import image_data
from heldout_tf.data import tfds as tfds_lib

SIZE = 224
CROP_PADDING = 32
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
SPLIT_FILES = {"train": "train-*", "test": "validation-*"}
TFDS_NAME = "imagenet2012"
TFDS_SPLITS = {"train": "train", "test": "validation"}
INDEX_MAP_HEADER = ("split", "file_name", "index")
# Examples are looked up in the index map in chunks, so that file names
# missing from the map are reported a few at a time.
INDEX_LOOKUP_CHUNK = 256


def split_reader(data_dir: Optional[str], index_map: Optional[str] = None
                 ) -> Callable:
  """`split -> (examples, number or None)` of the ImageNet in `data_dir`.

  `data_dir` is a prepared tfds `imagenet2012` directory (see
  `find_tfds_dir`), read with the file name -> index map file `index_map`
  (see `read_index_map`); otherwise it holds indexed TFRecords `train-*` /
  `validation-*` (see `records_split`).

  Raises:
    errors.UsageError: no `data_dir`; a tfds directory without an index
      map, or an index map without one (naming the flags).
    image_data.DatasetNotFoundError, image_data.DataError: from
      `read_index_map`.
  """
  if not data_dir:
    raise errors.UsageError(
        "ImageNet needs --data_dir: a directory of indexed TFRecords "
        "(train-*, validation-*) with features image/encoded, label, index, "
        "or a prepared tfds imagenet2012 directory (with an index map).")
  tfds_dir = find_tfds_dir(data_dir)
  if tfds_dir is None:
    if index_map:
      raise errors.UsageError(
          f"An index map ({index_map}) is only used with a tfds "
          f"imagenet2012 directory, but {data_dir} holds none (no "
          "imagenet2012/<version>/dataset_info.json).")
    return lambda split: records_split(data_dir, split)
  if not index_map:
    raise errors.UsageError(
        f"{tfds_dir} is a tfds imagenet2012 dataset: it needs an index map "
        "(--imagenet_index_map), a file of split,file_name,index lines "
        "giving each image's canonical index.")
  entries = read_index_map(index_map)
  return lambda split: tfds_split(tfds_dir, split, entries)


def records_split(data_dir: str, split: str):
  """Evaluation examples of indexed ImageNet TFRecords in `data_dir`."""
  pattern = os.path.join(data_dir, SPLIT_FILES[split])
  record_files = sorted(glob.glob(pattern))
  if not record_files:
    raise image_data.DatasetNotFoundError(
        f"No TFRecord files match {pattern} (and {data_dir} holds no "
        "prepared tfds imagenet2012/<version>/).")
  features = {
      "image/encoded": tf.io.FixedLenFeature([], tf.string),
      "label": tf.io.FixedLenFeature([], tf.int64),
      "index": tf.io.FixedLenFeature([], tf.int64),
  }

  def parse(record):
    ex = tf.io.parse_single_example(record, features)
    return {"image": eval_image(ex["image/encoded"]),
            "label": ex["label"], "index": ex["index"]}

  ds = tf.data.TFRecordDataset(record_files)
  # The number of records is unknown without reading them all.
  return ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE), None


def find_tfds_dir(data_dir: str) -> Optional[str]:
  """The prepared tfds `imagenet2012` version directory at `data_dir`, or None.

  `data_dir` may be the version directory itself, the `imagenet2012`
  directory or a tfds data directory holding `imagenet2012/<version>/`.
  A version counts as prepared when its `dataset_info.json` names
  imagenet2012; of several, the highest version is used.
  """
  data_dir = os.path.expanduser(data_dir)
  candidates = ([data_dir] + _version_dirs(data_dir) +
                _version_dirs(os.path.join(data_dir, TFDS_NAME)))
  for path in candidates:
    info_path = os.path.join(path, "dataset_info.json")
    if not os.path.isfile(info_path):
      continue
    try:
      with open(info_path, encoding="utf-8") as f:
        name = json.load(f).get("name")
    except (ValueError, AttributeError) as e:
      raise image_data.DataError(
          f"{info_path} is not a tfds dataset_info.json: {e}") from e
    if name == TFDS_NAME:
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
    raise image_data.DatasetNotFoundError(
        f"ImageNet index map {path} does not exist.")
  splits = {s: ([], []) for s in TFDS_SPLITS.values()}
  line_of_name = {}
  with errors.user_path(path, "read"), open(path, "rb") as f:
    for number, raw in enumerate(f, 1):
      where = f"{path}:{number}"
      try:
        line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
      except UnicodeDecodeError as e:
        raise image_data.DataError(f"{where}: not UTF-8 text ({e})") from e
      line = line.rstrip("\r\n")
      if not line.strip():
        continue
      fields = [field.strip()
                for field in line.split("\t" if "\t" in line else ",")]
      if number == 1 and tuple(fields) == INDEX_MAP_HEADER:
        continue
      if len(fields) != 3:
        raise image_data.DataError(
            f"{where}: expected split,file_name,index, got {line!r}")
      split, name, index = fields
      if split not in splits:
        raise image_data.DataError(
            f"{where}: split must be 'train' or 'validation', got {split!r}")
      if not name:
        raise image_data.DataError(f"{where}: empty file name in {line!r}")
      if not re.fullmatch(r"[0-9]{1,18}", index):
        raise image_data.DataError(
            f"{where}: index must be an integer >= 0, got {index!r}")
      if name in line_of_name:
        raise image_data.DataError(
            f"{where}: file name {name!r} is already on line "
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
      raise image_data.DataError(
          f"{path}:{lines[1]}: {split} index {index} is already on line "
          f"{lines[0]}")
    arrays[split] = (np.array(names, dtype=object), indices)
  return IndexMap(path, arrays)


def tfds_split(tfds_dir: str, split: str, index_map: IndexMap):
  """Evaluation examples of a prepared tfds imagenet2012, indexed by map.

  Reads `tfds_dir` (a version directory, its features.json checked first
  by `tfds_lib.check_version_dir`) without ever downloading, files in
  order, images still encoded; each example's `index` is its `file_name`
  looked up in `index_map`. A file name missing from the map fails the
  iteration with an error naming a few.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  name = TFDS_SPLITS[split]
  tfds_lib.check_version_dir(tfds_dir)
  builder = tfds.builder_from_directory(tfds_dir)
  if name not in builder.info.splits:
    raise image_data.DatasetNotFoundError(
        f"{tfds_dir} has no {name!r} split (it has "
        f"{', '.join(sorted(builder.info.splits))}).")
  num_examples = builder.info.splits[name].num_examples
  num_mapped = len(index_map.splits[name][1])
  if num_mapped < num_examples:
    raise image_data.DataError(
        f"ImageNet index map {index_map.path} has {num_mapped} {name} "
        f"lines but {tfds_dir} has {num_examples} {name} examples.")
  table = index_map.table(name)
  missing_message = (f"ImageNet index map {index_map.path} has no "
                     f"{name} line for file names")

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

  ds = builder.as_dataset(split=name, shuffle_files=False,
                          decoders={"image": tfds.decode.SkipDecoding()})
  ds = ds.batch(INDEX_LOOKUP_CHUNK).map(attach_index).unbatch()
  ds = ds.map(lambda ex: dict(ex, image=eval_image(ex["image"])),
              num_parallel_calls=tf.data.AUTOTUNE)
  return ds, num_examples


def eval_image(encoded):
  """Decode, centre crop (padding 32), resize to 224, mean/std normalise.

  JPEGs are decoded only inside the crop window; other formats (PNG, GIF,
  BMP) are decoded whole and cropped to the same window.
  """

  def window(height, width):
    crop = tf.cast(SIZE / (SIZE + CROP_PADDING) *
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
  image = tf.image.resize(image, [SIZE, SIZE], method="bicubic")
  image = image / 255.0
  return (image - MEAN) / STD
