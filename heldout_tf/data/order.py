"""The released CIFAR runs' tfds order <-> the original CIFAR order.

  positions = order.tfds_original_order("cifar10", "train", data_dir)
  in_runs_order = values_in_original_order[positions]

The runs index CIFAR examples by their position in `tfds.load(...,
shuffle_files=False)` order; the papers' CIFAR C-score files are in the
original CIFAR order. A prepared tfds CIFAR names each example's original
position in its `id` feature (`train_16399` -> 16399), read once
(`heldout_tf.data.tfds.builder`, never downloaded) and cached under the
tfds data directory.
"""

import os
import re
from typing import Optional

from absl import logging
import numpy as np

from heldout_tf.core import errors
from heldout_tf.core import files
from heldout_tf.core import npz
from heldout_tf.data import image_data
from heldout_tf.data import tfds as tfds_lib

# Under a tfds data directory: cached tfds -> original CIFAR orders.
CACHE_DIRNAME = "heldout_tf_cache"
# What to do when the dataset for the order is not prepared.
_REMEDY = ("it is needed to map the original CIFAR order to the runs' tfds "
           "order; prepare it with tfds, or pass --data_dir")


def parse_ids(ids, split: str, where: str) -> np.ndarray:
  """`['train_16399', ...]` -> original positions [n] int64 (a permutation).

  Raises:
    image_data.DataError: an id is not `<split>_<digits>` or the positions
      are not a permutation of 0..n-1 (naming `where`).
  """
  pattern = re.compile(rf"{re.escape(split)}_([0-9]+)")
  positions = np.empty(len(ids), np.int64)
  for k, raw in enumerate(ids):
    text = raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
    match = pattern.fullmatch(text)
    if not match:
      raise image_data.DataError(f"{where}: example {k} has id {text!r}, "
                                 f"expected {split}_<number>")
    positions[k] = int(match.group(1))
  seen = np.zeros(len(ids), bool)
  inside = positions < len(ids)
  seen[positions[inside]] = True
  if not inside.all() or not seen.all():
    raise image_data.DataError(
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
    image_data.DatasetNotFoundError: the dataset is not prepared in
      `data_dir`.
    image_data.DataError: its ids are not `<split>_<n>` for n = 0..N-1.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  data_dir = (os.path.expanduser(data_dir) if data_dir
              else tfds_lib.default_data_dir())
  builder = tfds_lib.builder(dataset, data_dir, split, remedy=_REMEDY)
  info_file = os.path.join(builder.data_dir, "dataset_info.json")
  name = f"{builder.name}-{builder.version}-{split}"
  cache_path = os.path.join(data_dir, CACHE_DIRNAME, f"{name}-order.npy")
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
    order = npz.read_npy(path, image_data.DataError, kinds="i",
                         shape=(num_examples,)).astype(np.int64)
  except (OSError, errors.HeldoutError):
    return None
  if not np.array_equal(np.sort(order), np.arange(num_examples)):
    return None
  return order


def _write_cached_order(path, order):
  """Caches `order` at `path` atomically; a warning when it cannot."""
  try:
    files.atomic_write(path, lambda f: np.save(f, order))
  except OSError as e:
    logging.warning("Not caching the tfds order in %s: %s", path,
                    errors.describe_os_error(e))
