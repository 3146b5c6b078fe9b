"""Where a report's inputs live in a collection, and reading them.

  <root>/<experiment>/<ratio>/config.json          the collection's settings
  <root>/<experiment>/<ratio>/estimates.npz        mnist_example.train's
                                                   estimates (with pairs)
  <root>/<experiment>/<ratio>/quality/scores.npz   mnist_example.quality's
  <root>/<experiment>/<ratio>/quality/detection.csv, removal.csv

`result_paths` is the one place these names are spelled: repoint it when
they move (e.g. into `heldout_tf.collection.layout`). Everything here reads files the
user pointed at and treats them as untrusted (`np.load` never unpickles);
a bad file is a `ReportInputError` naming it.
"""

import csv
import json
import os
from typing import Dict, List, Optional
import zipfile

import numpy as np

from heldout_tf.core import errors
from heldout_tf.collection import layout

ESTIMATES_FILENAME = "estimates.npz"
QUALITY_DIRNAME = "quality"
SCORES_FILENAME = "scores.npz"
DETECTION_FILENAME = "detection.csv"
REMOVAL_FILENAME = "removal.csv"


class ReportInputError(errors.HeldoutError, ValueError):
  """A report input is missing, unreadable or inconsistent (names it)."""


def result_paths(ratio_dir: str) -> Dict[str, str]:
  """The result files the kit's pipelines write next to one ratio's runs:
  keys 'config', 'estimates', 'scores', 'detection', 'removal'."""
  quality = os.path.join(ratio_dir, QUALITY_DIRNAME)
  return {"config": os.path.join(ratio_dir, layout.CONFIG_FILENAME),
          "estimates": os.path.join(ratio_dir, ESTIMATES_FILENAME),
          "scores": os.path.join(quality, SCORES_FILENAME),
          "detection": os.path.join(quality, DETECTION_FILENAME),
          "removal": os.path.join(quality, REMOVAL_FILENAME)}


def choose_ratio(root: str, experiment: str,
                 ratio: Optional[float]) -> List[layout.RunPath]:
  """The runs a report covers: those at `ratio`, or all when None.

  Raises `ReportInputError` when there are none (naming where it looked).
  """
  ratios = None if ratio is None else [ratio]
  found = layout.list_runs(root, experiment, ratios)
  if not found:
    where = os.path.join(root, experiment)
    if ratio is not None:
      where = layout.ratio_dir(root, experiment, ratio)
    raise ReportInputError(f"no runs under {where} (expected "
                           f"<ratio>/<run>/{layout.AUX_FILENAME})")
  return found


def read_bytes(path: str) -> bytes:
  """The file's bytes; `errors.PathError` naming it if unreadable."""
  with errors.user_path(path, "read"):
    with open(path, "rb") as f:
      return f.read()


def read_npz(path: str) -> Dict[str, np.ndarray]:
  """Every array of an npz file (never unpickled); ReportInputError if it
  is not one."""
  if not os.path.isfile(path):
    raise ReportInputError(f"{path}: file not found")
  unreadable = (ValueError, OSError, EOFError, zipfile.BadZipFile)
  try:
    npz = np.load(path, allow_pickle=False)
  except unreadable as e:
    raise ReportInputError(f"{path}: not a readable npz file ({e})") from None
  if not isinstance(npz, np.lib.npyio.NpzFile):
    raise ReportInputError(f"{path}: a single .npy array, not an npz file")
  with npz:
    try:
      return {k: npz[k] for k in npz.files}
    except unreadable as e:
      raise ReportInputError(f"{path}: not a readable npz file "
                             f"({e})") from None


def read_json(path: str) -> Optional[dict]:
  """A JSON object file, or None when absent; ReportInputError if bad."""
  if not os.path.isfile(path):
    return None
  with errors.user_path(path, "read"):
    with open(path) as f:
      text = f.read()
  try:
    value = json.loads(text)
  except ValueError as e:
    raise ReportInputError(f"{path}: not JSON ({e})") from None
  if not isinstance(value, dict):
    raise ReportInputError(f"{path}: not a JSON object")
  return value


def _cell(text: str):
  try:
    return float(text)
  except ValueError:
    return text


def read_csv(path: str) -> Optional[List[dict]]:
  """Rows of a CSV table with a header (numbers as floats), None if
  absent."""
  if not os.path.isfile(path):
    return None
  with errors.user_path(path, "read"):
    with open(path, newline="") as f:
      rows = list(csv.DictReader(f))
  if rows and None in rows[0]:
    raise ReportInputError(f"{path}: a row has more cells than the header")
  return [{k: _cell(v or "") for k, v in row.items()} for row in rows]
