"""The run layout's names: every file name in one place, parsed in one place.

  <root>/<experiment>/<ratio>/<run>/aux_arrays.npz, margins.npz, ...
  <root>/<experiment>/<ratio>/<run>/checkpoints/ckpt-<N>.{index,data-*}
  <root>/<experiment>/<ratio>/config.json, estimates.npz, figures/, ...
  <root>/<experiment>/<ratio>/attribution/datamodels.npz, lds.npz

(the per-run and per-collection names are the constants below).

Directory names are canonical or ignored: a ratio is `repr(float)` of a
number in (0, 1] (`0.7`, `1.0`; not `0.70`, `.7`, `nan`, `7e-1`); a run is an
ASCII decimal without leading zeros (`0`, `3`, `12`; not `03`, `٣`, `+3`).
Anything else is skipped with a warning. Two names for one value (`0.7` and
`0.70`, `3` and `03`) are ambiguous: `LayoutError`. Both the estimator
(directories on disk) and the downloader (archive members) use these rules.
"""

import dataclasses
import os
import re
from typing import Callable, Iterable, List, Optional

from absl import logging

from heldout_tf.core import errors

# Per run: <root>/<experiment>/<ratio>/<run>/...
AUX_FILENAME = "aux_arrays.npz"  # Correctness and indices (released).
CHECKPOINTS_DIRNAME = "checkpoints"  # ckpt-<N>.{index,data-*}
SIGNALS_FILENAME = "signals.npz"  # Per-epoch signal sums (quality).
MARGINS_FILENAME = "margins.npz"  # Final margins and label probabilities.
TRAJECTORY_DIRNAME = "trajectory"  # ckpt-<epoch> of every epoch.

# Per collection: <root>/<experiment>/<ratio>/...
CONFIG_FILENAME = "config.json"  # The settings every run depends on.
ESTIMATES_FILENAME = "estimates.npz"  # Memorization, influence, C-scores.
REPORT_FILENAME = "report.html"  # The browsable page (heldout_tf.report).
FIGURES_DIRNAME = "figures"  # The estimates' figures.
QUALITY_DIRNAME = "quality"  # Data-quality results, the files below.
SCORES_FILENAME = "scores.npz"
DETECTION_FILENAME = "detection.csv"
REMOVAL_FILENAME = "removal.csv"
MANIFEST_FILENAME = "manifest.json"  # Written last: the outputs belong
                                     # together.
ATTRIBUTION_DIRNAME = "attribution"  # Attribution results, the files below.
DATAMODELS_FILENAME = "datamodels.npz"  # `heldout datamodels`' default.
LDS_FILENAME = "lds.npz"  # `heldout lds`' default: the LDS table.

# Result directories beside the runs of a ratio: not runs, and not worth a
# warning.
RESULT_DIRNAMES = frozenset({FIGURES_DIRNAME, QUALITY_DIRNAME,
                             ATTRIBUTION_DIRNAME})


def pairs_filename(dataset: str, infl_threshold: float,
                   mem_threshold: float) -> str:
  """The high-influence pairs file of a collection, named as the published
  ones: `<dataset>_high_infl_pairs_infl<t>_mem<m>.npz`."""
  return (f"{dataset}_high_infl_pairs_infl{infl_threshold:g}"
          f"_mem{mem_threshold:g}.npz")


_RUN_RE = re.compile(r"(0|[1-9][0-9]*)")
_LOOSE_NUMBER_RE = re.compile(r"[+-]?[0-9]*\.?[0-9]+([eE][+-]?[0-9]+)?")


class LayoutError(errors.HeldoutError, ValueError):
  """Two directory names mean the same ratio or run."""


def format_ratio(ratio) -> str:
  """A subset ratio's directory name: 0.7 -> '0.7', 1 -> '1.0'.

  Raises `errors.UsageError` for a value outside (0, 1] or not a number.
  """
  try:
    value = float(ratio)
  except (TypeError, ValueError):
    raise errors.UsageError(f"ratio {ratio!r} is not a number") from None
  if not 0.0 < value <= 1.0:  # Also refuses nan.
    raise errors.UsageError(f"ratio must be in (0, 1], got {ratio!r}")
  return repr(value)


def parse_ratio(name: str) -> Optional[float]:
  """The ratio a canonical directory name stands for, else None."""
  if not isinstance(name, str) or not name.isascii():
    return None
  try:
    value = float(name)
  except ValueError:
    return None
  if not 0.0 < value <= 1.0 or repr(value) != name:
    return None
  return value


def parse_run(name: str) -> Optional[int]:
  """The run id of a canonical run directory name, else None."""
  if isinstance(name, str) and name.isascii() and _RUN_RE.fullmatch(name):
    return int(name)
  return None


def loose_value(name: str):
  """What a non-canonical name would mean to a lenient reader (or None).

  `0.70` -> 0.7, `03` -> 3.0, `٣` -> 3.0: used only to detect ambiguity.
  """
  text = name.strip()
  if not text.isascii():
    try:
      text = str(int(text))  # Non-ASCII digits, e.g. '٣'.
    except ValueError:
      return None
  if not _LOOSE_NUMBER_RE.fullmatch(text):
    return None
  return float(text)


def experiment_name(name, flag: str = "--experiment") -> str:
  """`name` if it names one directory right under a root; else
  `errors.UsageError` naming `flag`.

  The one rule for experiment names, wherever one is taken (every
  command's --experiment, every path built here): not empty, not '.' or
  '..', no path separator ('/', or '\\' on any system: collections move
  between systems) and no NUL, so `<root>/<experiment>` never leaves
  `root` nor nests directories a reader of `root` would not find.
  """
  if not isinstance(name, str) or not name:
    problem = "is empty"
  elif name in (".", ".."):
    problem = "is not a directory name"
  elif any(c in name for c in ("/", "\\", "\0")) or os.path.isabs(name):
    problem = "holds a path separator"
  else:
    return name
  raise errors.UsageError(
      f"{flag} {name!r} {problem}: an experiment is one directory name "
      "under --root (e.g. cifar10-resnet9; no '/', '..' or absolute path)")


def run_dir(root: str, experiment: str, ratio, run) -> str:
  """`<root>/<experiment>/<ratio>/<run>`."""
  run = int(run)
  if run < 0:
    raise errors.UsageError(f"run ids must be >= 0, got {run}")
  return os.path.join(root, experiment_name(experiment), format_ratio(ratio),
                      str(run))


def ratio_dir(root: str, experiment: str, ratio) -> str:
  """`<root>/<experiment>/<ratio>`."""
  return os.path.join(root, experiment_name(experiment), format_ratio(ratio))


def attribution_path(root: str, experiment: str, ratio, filename: str
                     ) -> str:
  """`<root>/<experiment>/<ratio>/attribution/<filename>`: where `heldout
  datamodels` and `heldout lds` write by default, and the report looks."""
  return os.path.join(ratio_dir(root, experiment, ratio),
                      ATTRIBUTION_DIRNAME, filename)


def select_names(names: Iterable[str], parse: Callable[[str], object],
                 where: str, kind: str,
                 warn: Callable[[str], None] = logging.warning) -> dict:
  """`{value: name}` of the canonical names; the rest warned about.

  Raises `LayoutError` when a skipped name would mean the same value as a
  canonical one (`0.70` beside `0.7`), naming both.
  """
  canonical, skipped = {}, []
  for name in sorted(names):
    value = parse(name)
    if value is None:
      skipped.append(name)
    else:
      canonical[value] = name
  for name in skipped:
    loose = loose_value(name)
    twin = next((c for v, c in canonical.items()
                 if loose is not None and float(v) == loose), None)
    if twin is not None:
      raise LayoutError(
          f"{os.path.join(where, name)}: {kind} directory {name!r} means the "
          f"same as {twin!r}; rename or remove one (canonical names: "
          f"{_CANONICAL[kind]})")
    warn(f"skipping {os.path.join(where, name)}: not a {kind} directory name "
         f"({_CANONICAL[kind]})")
  return canonical


_CANONICAL = {
    "ratio": "a number in (0, 1] written as Python's repr, e.g. 0.7 or 1.0",
    "run": "a decimal integer without leading zeros, e.g. 0 or 12",
}


@dataclasses.dataclass(frozen=True, order=True)
class RunPath:
  """One run directory found on disk."""
  ratio: float
  run: int
  path: str = dataclasses.field(compare=False)

  @property
  def ratio_name(self) -> str:
    return format_ratio(self.ratio)


def _subdirs(path: str) -> List[str]:
  with errors.user_path(path, "read"):
    return [e.name for e in os.scandir(path) if e.is_dir()]


def list_runs(root: str, experiment: str, ratios=None,
              warn: Callable[[str], None] = logging.warning) -> List[RunPath]:
  """Every canonical run directory under `<root>/<experiment>`, sorted.

  `ratios` (numbers or names) restricts to those subset ratios. Entries that
  are not directories (a file named `0.7`) or not canonical are skipped with
  a warning; ambiguous names raise `LayoutError`.
  """
  exp_dir = os.path.join(root, experiment_name(experiment))
  if not os.path.isdir(exp_dir):
    return []
  wanted = None if ratios is None else {
      float(format_ratio(r)) for r in ratios}
  with errors.user_path(exp_dir, "read"):
    entries = list(os.scandir(exp_dir))
  for entry in entries:
    if not entry.is_dir() and parse_ratio(entry.name) is not None:
      warn(f"skipping {entry.path}: a ratio entry that is not a directory")
  ratio_names = select_names([e.name for e in entries if e.is_dir()],
                             parse_ratio, exp_dir, "ratio", warn)
  found = []
  for ratio, ratio_name in ratio_names.items():
    if wanted is not None and ratio not in wanted:
      continue
    ratio_path = os.path.join(exp_dir, ratio_name)
    names = select_names(
        [n for n in _subdirs(ratio_path) if n not in RESULT_DIRNAMES],
        parse_run, ratio_path, "run", warn)
    found += [RunPath(ratio, run, os.path.join(ratio_path, name))
              for run, name in names.items()]
  return sorted(found)


def list_experiments(root: str, warn: Callable[[str], None] = logging.warning
                     ) -> List[str]:
  """The names under `root` holding at least one canonical run directory
  (`<root>/<experiment>/<ratio>/<run>/`), sorted; [] when `root` is not a
  directory."""
  if not os.path.isdir(root):
    return []
  return [name for name in sorted(_subdirs(root))
          if _is_experiment_name(name) and list_runs(root, name, warn=warn)]


def _is_experiment_name(name: str) -> bool:
  try:
    return bool(experiment_name(name))
  except errors.UsageError:
    return False
