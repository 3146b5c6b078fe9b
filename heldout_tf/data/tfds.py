"""The one way the kit reads tfds: a guard before tfds opens a dataset, the
split loader with its errors, a prepared dataset's builder, class names.

  from heldout_tf.data import tfds as tfds_lib  # tfds: tensorflow_datasets
  arrays = tfds_lib.load_split("cifar10:3.0.2", "train", data_dir)
  arrays["image"], arrays["label"]    # numpy, in shuffle_files=False order
  tfds_lib.class_names("cifar10", data_dir)  # ['airplane', ...] or None
  builder = tfds_lib.builder("cifar10", data_dir, split="train")

Every function here checks the dataset first (`check_source`): its name
must be name[/config][:version], and every `features.json` prepared for it
may name only tfds's own feature types, since tfds imports whatever module
a features.json names (no code is imported because a file names it); a
prepared version directory opened directly is checked by
`check_version_dir`. Nothing is downloaded unless `download=True`. A
dataset or split that is not prepared, an unknown split or dataset name is
an `image_data.DatasetNotFoundError` saying where it was looked for and
what to pass; a features.json naming other code an `image_data.DataError`.
tensorflow_datasets (and so TensorFlow) is imported only when a dataset is
opened.
"""

import json
import os
import re
from typing import List, Optional

from heldout_tf.core import errors
from heldout_tf.core import npz
from heldout_tf.data import image_data

# What the messages call tfds' default data directory.
DEFAULT_DATA_DIR_TEXT = "the default tfds data_dir (~/tensorflow_datasets)"
# What to do about a dataset that is not prepared, for commands with
# --data_dir and --download.
PREPARE_OR_DOWNLOAD = ("pass --data_dir pointing at a prepared tfds "
                       "directory, or --download where a network is "
                       "available")

# The tfds feature types the kit reads: tfds's own classes. A prepared
# dataset's features.json names its feature classes, and tfds imports any
# module a name points at; `check_source` refuses every other name before
# tfds reads the file (no code is imported because a file says so).
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


def default_data_dir() -> str:
  """tfds' default data directory: `$TFDS_DATA_DIR`, ~/tensorflow_datasets."""
  return os.path.expanduser(os.environ.get("TFDS_DATA_DIR",
                                           "~/tensorflow_datasets"))


# ------------------------------------------------------------------ guard --


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
  """`image_data.DataError` unless the tfds `features.json` at `path` names
  only `KNOWN_FEATURE_TYPES` (read bounded, as untrusted JSON)."""
  with errors.user_path(path, "read"):
    npz.check_regular(path, image_data.DataError)
    with open(path, "rb") as f:
      raw = f.read(MAX_FEATURES_JSON_BYTES + 1)
  if len(raw) > MAX_FEATURES_JSON_BYTES:
    raise image_data.DataError(
        f"{path}: larger than {MAX_FEATURES_JSON_BYTES} bytes; not a tfds "
        "features.json")
  try:
    parsed = json.loads(raw.decode("utf-8"))
  except (UnicodeDecodeError, ValueError) as e:
    raise image_data.DataError(
        f"{path}: not a tfds features.json ({e})") from None
  for name in _feature_types(parsed):
    if name not in KNOWN_FEATURE_TYPES:
      shown = str(name)[:120]
      raise image_data.DataError(
          f"{path}: feature type {shown!r} is not one the kit reads (tfds "
          "would import its module; no code is imported because a file "
          "names it)")


def check_version_dir(path: str):
  """Checks the `features.json` of a prepared tfds version directory `path`
  (when it has one) before tfds opens the directory itself."""
  features = os.path.join(path, "features.json")
  if os.path.lexists(features):
    check_features_file(features)


def check_source(name: str, data_dir: Optional[str] = None,
                 flag: str = "--dataset"):
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


# ---------------------------------------------------------------- reading --


def _not_prepared(name, split, data_dir, remedy, error):
  """The `DatasetNotFoundError` of `name` (its `split`, unless None) not
  prepared in `data_dir`, caught as `error`."""
  what = f"tfds dataset {name!r}" + (
      "" if split is None else f" split {split!r}")
  return image_data.DatasetNotFoundError(
      f"{what} is not prepared in {data_dir or DEFAULT_DATA_DIR_TEXT}: "
      f"{remedy} ({type(error).__name__})")


def load_split(name: str, split: str, data_dir: Optional[str] = None,
               download: bool = False) -> dict:
  """The whole `split` of tfds dataset `name` as numpy arrays, one per
  feature (e.g. uint8 `image` `[n, h, w, c]`, int64 `label` `[n]`), in
  canonical order: `tfds.load(name, split=split, batch_size=-1,
  shuffle_files=False)`, from `data_dir` (tfds' default when None).

  Raises:
    errors.UsageError, image_data.DataError: `check_source` refused it;
    image_data.DatasetNotFoundError: not prepared in `data_dir` (and
      `download` False), or no such split or dataset.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  check_source(name, data_dir)
  try:
    arrays = tfds.load(name, split=split, batch_size=-1, shuffle_files=False,
                       data_dir=data_dir, download=download)
  except (tfds.core.DatasetNotFoundError, AssertionError,
          FileNotFoundError) as e:
    raise _not_prepared(name, split, data_dir, PREPARE_OR_DOWNLOAD,
                        e) from e
  except (ValueError, KeyError) as e:  # Unknown split or dataset name.
    first_line = (str(e).splitlines() or [type(e).__name__])[0][:200]
    raise image_data.DatasetNotFoundError(
        f"tfds dataset {name!r} has no split {split!r} in "
        f"{data_dir or DEFAULT_DATA_DIR_TEXT} ({first_line})") from e
  return tfds.as_numpy(arrays)


def builder(name: str, data_dir: Optional[str] = None,
            split: Optional[str] = None, remedy: str = PREPARE_OR_DOWNLOAD):
  """The tfds builder of `name` as prepared in `data_dir` (tfds' default when
  None), after `check_source`; it never downloads or prepares anything.

  Raises:
    image_data.DatasetNotFoundError: `name` (or its `split`, when given) is
      not prepared there; the message says what to do: `remedy`.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  check_source(name, data_dir)
  try:
    found = tfds.builder(name, data_dir=data_dir)
    info_file = os.path.join(found.data_dir, "dataset_info.json")
    if not os.path.isfile(info_file) or (
        split is not None and split not in found.info.splits):
      raise FileNotFoundError(info_file)
  except (tfds.core.DatasetNotFoundError, AssertionError, FileNotFoundError,
          ValueError) as e:
    raise _not_prepared(name, split, data_dir, remedy, e) from e
  return found


def class_names(name: str, data_dir: Optional[str] = None
                ) -> Optional[List[str]]:
  """The class names of the prepared dataset's `label` feature (a tfds
  ClassLabel; their number is the number of classes), or None when it has
  no such feature. Raises as `builder`."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  features = builder(name, data_dir).info.features
  label = features["label"] if "label" in features else None
  if not isinstance(label, tfds.features.ClassLabel) or not label.num_classes:
    return None
  return [str(n) for n in label.names]
