"""Tar members: which are safe, which run and part each belongs to, limits.

A member `<experiment>/<ratio>/<run>/<rest>` belongs to a run when `<ratio>`
and `<run>` are canonical names (`heldout_tf.collection.layout.parse_ratio` /
`parse_run`). Other names (`0.70/`, `00/`, `nan/`) are skipped with a
warning; a non-canonical name meaning the same as a selected canonical one
(`0.70/` beside `0.7/`) stops the download (`AmbiguousMemberError`).

Only regular files and directories are accepted: links, devices, FIFOs,
sparse files and any other tar type stop the download, as do absolute paths
and `..`. A selected member larger than its kind's limit (from its tar
header, before a byte is written) stops it too (`MemberTooLargeError`).
"""

import dataclasses
import os
import tarfile
from typing import Callable, Dict, Mapping, Optional

from heldout_tf.core import errors
from heldout_tf.collection import layout
from heldout_tf.collection import selection
from heldout_tf.core import sizes
from heldout_tf.archive.exceptions import AmbiguousMemberError
from heldout_tf.archive.exceptions import MemberTooLargeError
from heldout_tf.archive.exceptions import UnsafeMemberError

# Parts of a run: aux_arrays.npz, checkpoints/, and anything else in the run.
KINDS_FOR_ONLY = {
    "all": frozenset({"aux", "checkpoints", "other"}),
    "aux": frozenset({"aux"}),
    "checkpoints": frozenset({"checkpoints"}),
}
ONLY_CHOICES = tuple(KINDS_FOR_ONLY)
# Parts every released run has; a run lacking a requested one is reported.
EXPECTED_PARTS = {"aux": layout.AUX_FILENAME,
                  "checkpoints": layout.CHECKPOINTS_DIRNAME + "/"}

# Largest member written, per size kind: generous bounds over the released
# files (aux arrays: a few MB; ResNet-50 checkpoint data: ~100-200 MB).
DEFAULT_SIZE_LIMITS = {
    "aux": 256 * 2**20,  # aux_arrays.npz
    "index": 64 * 2**20,  # checkpoints/*.index
    "data": 2**30,  # checkpoints/*.data-*
    "other": 64 * 2**20,  # anything else in a run
}
SIZE_KINDS = tuple(DEFAULT_SIZE_LIMITS)
LIMITS_FLAG = "--max_member_size"

_ACCEPTED_TYPES = (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.DIRTYPE)


def member_parts(member):
  """Checks a tar member is safe; returns its normalized path components.

  Raises:
    UnsafeMemberError: naming the member.
  """
  name = member.name
  if member.issym():
    raise UnsafeMemberError(f"refusing symlink member {name!r} -> "
                            f"{member.linkname!r}")
  if member.islnk():
    raise UnsafeMemberError(f"refusing hard link member {name!r} -> "
                            f"{member.linkname!r}")
  if member.ischr() or member.isblk():
    raise UnsafeMemberError(f"refusing device member {name!r}")
  if member.isfifo():
    raise UnsafeMemberError(f"refusing FIFO member {name!r}")
  if member.issparse() or member.type == tarfile.GNUTYPE_SPARSE:
    raise UnsafeMemberError(
        f"refusing sparse member {name!r} (declares "
        f"{sizes.format_bytes(member.size)}); the released archives have "
        "none")
  if member.type not in _ACCEPTED_TYPES:
    raise UnsafeMemberError(f"refusing member {name!r} of tar type "
                            f"{member.type!r} (only regular files and "
                            "directories are extracted)")
  if not name or name.startswith(("/", "\\")) or (
      len(name) > 1 and name[1] == ":"):
    raise UnsafeMemberError(f"refusing member with absolute path {name!r}")
  parts = name.replace("\\", "/").split("/")
  if ".." in parts:
    raise UnsafeMemberError(f"refusing member with '..' in its path {name!r}")
  return [p for p in parts if p not in ("", ".")]


def kind_of(sub_parts):
  """The part of a run a path inside it belongs to (see `KINDS_FOR_ONLY`)."""
  if sub_parts == [layout.AUX_FILENAME]:
    return "aux"
  if sub_parts[0] == layout.CHECKPOINTS_DIRNAME:
    return "checkpoints"
  return "other"


def size_kind_of(sub_parts):
  """The size limit a file inside a run falls under (`SIZE_KINDS`)."""
  if sub_parts == [layout.AUX_FILENAME]:
    return "aux"
  if sub_parts[0] == layout.CHECKPOINTS_DIRNAME and len(sub_parts) == 2:
    if sub_parts[1].endswith(".index"):
      return "index"
    if ".data-" in sub_parts[1]:
      return "data"
  return "other"


def size_limits(overrides=None) -> Dict[str, int]:
  """`DEFAULT_SIZE_LIMITS` with `overrides` (`{kind: bytes or '4GiB'}`)."""
  limits = dict(DEFAULT_SIZE_LIMITS)
  for kind, value in (overrides or {}).items():
    if kind not in limits:
      raise errors.UsageError(
          f"{LIMITS_FLAG}: unknown member kind {kind!r}; use "
          f"{', '.join(SIZE_KINDS)}")
    limits[kind] = sizes.parse_bytes(value, f"{LIMITS_FLAG} {kind}")
  return limits


def parse_size_limits(text: Optional[str]) -> Dict[str, int]:
  """`'aux=1GiB,data=4GiB'` -> the limits of every kind (see `size_limits`)."""
  overrides = {}
  for item in (text or "").split(","):
    if not item.strip():
      continue
    kind, sep, value = item.partition("=")
    if not sep:
      raise errors.UsageError(
          f"{LIMITS_FLAG}: expected KIND=SIZE items, e.g. aux=1GiB,"
          f"data=4GiB; got {item.strip()!r}")
    overrides[kind.strip()] = value.strip()
  return size_limits(overrides)


def check_size(member, sub_parts, limits: Mapping[str, int]):
  """Raises `MemberTooLargeError` if `member` exceeds its kind's limit."""
  kind = size_kind_of(sub_parts)
  if member.size > limits[kind]:
    raise MemberTooLargeError(
        f"member {member.name!r} declares {sizes.format_bytes(member.size)}, "
        f"over the {sizes.format_bytes(limits[kind])} limit for {kind} "
        f"members; nothing was written. If the archive is trusted, raise it "
        f"with {LIMITS_FLAG} {kind}=SIZE")


@dataclasses.dataclass(frozen=True)
class Selection:
  """The runs to extract and the parts (kinds) of each run to write."""
  ratios: Optional[frozenset]  # None: all.
  runs: Optional[frozenset]  # None: all.
  kinds: frozenset

  @classmethod
  def parse(cls, only, ratios, runs):
    """Checks and normalizes `fetch`'s `only`, `ratios` and `runs`."""
    if only not in KINDS_FOR_ONLY:
      raise errors.UsageError(
          f"only must be one of {ONLY_CHOICES}, got {only!r}")
    if ratios is not None:
      ratios = frozenset(selection.ratio_value(r, "ratios") for r in ratios)
    if runs is not None:
      runs = frozenset(selection.run_id(r, "runs") for r in runs)
    if ratios is not None and not ratios:
      raise errors.UsageError("ratios is empty; pass None for all ratios")
    if runs is not None and not runs:
      raise errors.UsageError("runs is empty; pass None for all runs")
    return cls(ratios, runs, KINDS_FOR_ONLY[only])

  def wants_ratio(self, ratio):
    return self.ratios is None or ratio in self.ratios

  def wants(self, key):
    """Whether the run `(ratio, run)` is selected."""
    return self.wants_ratio(key[0]) and (
        self.runs is None or key[1] in self.runs)

  def pending(self, present, have):
    """Selected kinds the archive's run has and `dest` does not yet."""
    return (self.kinds & present) - have

  def missing(self, present):
    """Selected parts every run should have that the archive's run lacks."""
    return [kind for kind in EXPECTED_PARTS
            if kind in self.kinds and kind not in present]


class LayoutNames:
  """Sorts member paths into runs by the canonical layout names.

  `run_of(parts)` gives `(ratio_name, ratio, run)` for a member under a
  canonical `<experiment>/<ratio>/<run>/`, else None. Every non-canonical
  ratio or run directory name is reported once through `warn`; one meaning
  the same as a selected canonical name raises `AmbiguousMemberError`,
  whichever of the two comes first in the archive.
  """

  def __init__(self, experiment, selection: Selection,
               warn: Callable[[str], None]):
    self._experiment = experiment
    self._selection = selection
    self._warn = warn
    self._canonical = {}  # (scope, value) -> name; selected names only.
    self._loose = {}  # (scope, loose value) -> non-canonical name.
    self._seen = set()

  def run_of(self, parts, is_dir):
    """`(ratio_name, ratio, run)` of a member's run, or None."""
    if len(parts) < 2 or parts[0] != self._experiment:
      return None
    depth = len(parts) if is_dir else len(parts) - 1  # Directory levels.
    if depth < 2:
      return None
    ratio_name = parts[1]
    ratio = self._name(ratio_name, layout.parse_ratio, (), "ratio",
                       self._selection.wants_ratio)
    if ratio is None or depth < 3:
      return None
    run = self._name(parts[2], layout.parse_run, (ratio_name,), "run",
                     lambda run: self._selection.wants((ratio, run)))
    if run is None:
      return None
    return ratio_name, ratio, run

  def _name(self, name, parse, scope, kind, selected):
    """The value of a canonical name; None (warned once) for others."""
    value = parse(name)
    where = "/".join((self._experiment,) + scope)
    if value is not None:
      if selected(value):
        self._canonical.setdefault((scope, float(value)), name)
        twin = self._loose.get((scope, float(value)))
        if twin is not None:
          raise _ambiguous(where, twin, name, kind)
      return value
    if (scope, name) not in self._seen:
      self._seen.add((scope, name))
      loose = layout.loose_value(name)
      if loose is not None:
        twin = self._canonical.get((scope, loose))
        if twin is not None:
          raise _ambiguous(where, name, twin, kind)
        self._loose.setdefault((scope, loose), name)
      self._warn(f"{where}/{name}/: not a canonical {kind} directory "
                 "name; skipped")
    return None


def _ambiguous(where, name, twin, kind):
  return AmbiguousMemberError(
      f"{os.path.join(where, name)}: {kind} directory {name!r} in the "
      f"archive means the same as {twin!r}; refusing to guess which to "
      "extract (canonical names: 0.7 for ratios, 3 for runs)")
