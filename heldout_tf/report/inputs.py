"""Where a report's inputs live in a collection, and reading them.

  <root>/<experiment>/<ratio>/config.json          the collection's settings
  <root>/<experiment>/<ratio>/estimates.npz        estimates (with pairs),
                                                   e.g. mnist_example.train's
  <root>/<experiment>/<ratio>/quality/scores.npz   `heldout quality`'s, with
      detection.csv, removal.csv and manifest.json (written last)
  <root>/<experiment>/<ratio>/attribution/lds.npz, datamodels.npz
      `heldout lds`'s and `heldout datamodels`' (`report.attribution`)

The names are `heldout_tf.collection.layout`'s. Every file here is one the
user pointed at, read as untrusted: only regular files are opened (a FIFO
or a device is refused before it can block), and npz files only through
the hardened reader `heldout_tf.core.npz` (no pickles, only the members
asked for, each refused before reading when its header does not fit). A
bad file is a `ReportInputError` naming it (and the key).
"""

import csv
import io
import json
import os
from typing import Dict, List, Optional

import numpy as np

from heldout_tf.collection import layout
from heldout_tf.core import errors
from heldout_tf.core import npz


class ReportInputError(errors.HeldoutError, ValueError):
  """A report input is missing, unreadable or inconsistent (names it)."""


def result_paths(ratio_dir: str) -> Dict[str, str]:
  """The result files the kit's pipelines write next to one ratio's runs:
  keys 'config', 'estimates', 'scores', 'detection', 'removal',
  'manifest' (the quality outputs' manifest), 'lds', 'datamodels'."""
  quality = os.path.join(ratio_dir, layout.QUALITY_DIRNAME)
  attribution = os.path.join(ratio_dir, layout.ATTRIBUTION_DIRNAME)
  return {"config": os.path.join(ratio_dir, layout.CONFIG_FILENAME),
          "lds": os.path.join(attribution, layout.LDS_FILENAME),
          "datamodels": os.path.join(attribution,
                                     layout.DATAMODELS_FILENAME),
          "estimates": os.path.join(ratio_dir, layout.ESTIMATES_FILENAME),
          "scores": os.path.join(quality, layout.SCORES_FILENAME),
          "detection": os.path.join(quality, layout.DETECTION_FILENAME),
          "removal": os.path.join(quality, layout.REMOVAL_FILENAME),
          "manifest": os.path.join(quality, layout.MANIFEST_FILENAME)}


def choose_experiment(root: str, experiment: str = "") -> str:
  """`experiment`, or when empty the only experiment under `root`.

  Raises:
    ReportInputError: `root` holds none;
    errors.UsageError: it holds several (naming them).
  """
  if experiment:
    return experiment
  found = layout.list_experiments(root)
  if not found:
    raise ReportInputError(f"--root {root}: no collection there (no "
                           "<experiment>/<ratio>/<run>/ directories)")
  if len(found) > 1:
    raise errors.UsageError(f"--root {root} holds {len(found)} experiments "
                            f"({', '.join(found)}): pass --experiment")
  return found[0]


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
  """The bytes of the regular file `path`; `errors.PathError` naming it if
  unreadable, ReportInputError if it is not a regular file."""
  with npz.open_regular(path, ReportInputError, errors.PathError) as f:
    with errors.user_path(path, "read"):
      return f.read()


def read_arrays(path: str, limits: Dict[str, dict]) -> Dict[str, np.ndarray]:
  """The arrays of the npz file `path` named in `limits` that it holds.

  Each is read by `heldout_tf.core.npz` under its limits (the keyword
  arguments of `npz.Reader.read`, e.g. `{"kinds": "f", "shape": (n,)}`);
  members not named are never read.
  """
  with npz.Reader(path, ReportInputError, os_error=errors.PathError,
                  max_total_bytes="auto") as f:
    return {key: f.read(key, **limits[key]) for key in limits if key in f}


def _text(path: str) -> Optional[str]:
  """The UTF-8 text of a regular file, None when absent."""
  if not os.path.lexists(path):
    return None
  content = read_bytes(path)
  try:
    return content.decode("utf-8")
  except UnicodeDecodeError as e:
    raise ReportInputError(f"{path}: not UTF-8 text ({e})") from None


def read_json(path: str) -> Optional[dict]:
  """A JSON object file, or None when absent; ReportInputError if bad."""
  text = _text(path)
  if text is None:
    return None
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
  text = _text(path)
  if text is None:
    return None
  rows = list(csv.DictReader(io.StringIO(text, newline="")))
  if rows and None in rows[0]:
    raise ReportInputError(f"{path}: a row has more cells than the header")
  return [{k: _cell(v or "") for k, v in row.items()} for row in rows]


def incomplete_quality(paths: Dict[str, str]) -> Optional[str]:
  """Why the quality outputs beside `paths['scores']` cannot be trusted
  (`heldout quality` writes manifest.json last, naming the files that
  belong together), or None when the manifest lists scores.npz."""
  manifest = read_json(paths["manifest"])
  scores = paths["scores"]
  if manifest is None:
    return (f"{scores} has no {layout.MANIFEST_FILENAME} beside it: the "
            "quality run that wrote it did not finish, so its scores are "
            "incomplete and not shown (re-run heldout quality)")
  listed = manifest.get("files")
  if not isinstance(listed, list) or layout.SCORES_FILENAME not in listed:
    return (f"{paths['manifest']} does not list {layout.SCORES_FILENAME}: "
            f"the scores beside it are incomplete and not shown (re-run "
            "heldout quality)")
  return None
