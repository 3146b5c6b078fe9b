"""Byte sizes for people: `format_bytes(1.5 * 2**30) == '1.5 GB'`.

Units are powers of 2**10, as in the sizes `estimates.parse_memory` reads
('4GB' is 4 * 2**30 bytes).
"""

_UNITS = (("TB", 2**40), ("GB", 2**30), ("MB", 2**20), ("KB", 2**10))


def format_bytes(size) -> str:
  """'1.5 GB', '12.0 MB', '512 B' (one decimal from 1 KB up)."""
  for unit, scale in _UNITS:
    if size >= scale:
      return f"{size / scale:.1f} {unit}"
  return f"{int(size)} B"
