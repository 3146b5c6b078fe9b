"""Byte sizes for people: `format_bytes(1.5 * 2**30) == '1.5 GiB'`.

Binary units (powers of 2**10), named as such so they are not mistaken for
the decimal GB of published archive sizes; `estimates.parse_memory` reads
them back ('4GiB', and also '4GB', are 4 * 2**30 bytes).
"""

_UNITS = (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10))


def format_bytes(size) -> str:
  """'1.5 GiB', '12.0 MiB', '512 B' (one decimal from 1 KiB up)."""
  for unit, scale in _UNITS:
    if size >= scale:
      return f"{size / scale:.1f} {unit}"
  return f"{int(size)} B"
