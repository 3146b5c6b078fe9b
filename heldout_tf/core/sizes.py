"""Byte sizes and memory, in one place.

`format_bytes(1.5 * 2**30) == '1.5 GiB'`: binary units (powers of 2**10),
named as such so they are not mistaken for the decimal GB of published
archive sizes; `parse_bytes` reads them back ('4GiB', and also '4GB', are
4 * 2**30 bytes). `available_memory()` is what the machine can still give.
"""

import re

import psutil

from heldout_tf.core import errors

_UNITS = (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10))
_PARSE_UNITS = {"": 1, "B": 1, "K": 2**10, "KB": 2**10, "KIB": 2**10,
                "M": 2**20, "MB": 2**20, "MIB": 2**20, "G": 2**30,
                "GB": 2**30, "GIB": 2**30, "T": 2**40, "TB": 2**40,
                "TIB": 2**40}


def format_bytes(size) -> str:
  """'1.5 GiB', '12.0 MiB', '512 B' (one decimal from 1 KiB up)."""
  for unit, scale in _UNITS:
    if size >= scale:
      return f"{size / scale:.1f} {unit}"
  return f"{int(size)} B"


def parse_bytes(value, what: str = "size") -> int:
  """Bytes in '4GB', '512MiB', '1.5G', '1024' or an int; must be > 0.

  Raises `errors.UsageError` naming `what` (e.g. '--memory_budget').
  """
  if isinstance(value, int) and not isinstance(value, bool):
    size = value
  else:
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", str(value))
    unit = match and match.group(2).upper()
    if not match or unit not in _PARSE_UNITS:
      raise errors.UsageError(
          f"{what}: cannot parse {value!r} as a size; use e.g. '4GB', "
          "'512MB', '1.5G' or a number of bytes")
    size = int(float(match.group(1)) * _PARSE_UNITS[unit])
  if size <= 0:
    raise errors.UsageError(f"{what} must be positive, got {value!r}")
  return int(size)


def available_memory() -> int:
  """Bytes of memory available to new allocations (psutil's 'available')."""
  return int(psutil.virtual_memory().available)
