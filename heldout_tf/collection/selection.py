"""Run ids and ratios as people type them (flags, API arguments).

  parse_run_ids("0-3,7")      -> [0, 1, 2, 3, 7]   ('all': None)
  parse_ratios("0.1:0.9:0.2") -> [0.1, 0.3, 0.5, 0.7, 0.9]
  run_id("03") -> 3;  ratio_value("0.70") -> 0.7

Directory names (`heldout_tf.collection.layout`) are strict; here `03` is
run 3 and `0.70` ratio 0.7, the same in every command and function that
takes a list of them. Errors are `errors.UsageError` naming the flag.
"""

import re
from typing import List, Optional

from heldout_tf.core import errors
from heldout_tf.collection.layout import format_ratio


_RUN_RANGE_RE = re.compile(r"([0-9]+)-([0-9]+)")
MAX_RUN_RANGE = 1_000_000  # Ids in one `a-b` range (a typo guard).


def run_id(value, flag: str = "run id") -> int:
  """A run id from what a person typed: 3, '3', '03', 3.0 -> 3.

  Raises `errors.UsageError` naming `flag` for anything else (negative,
  fractional, '+3', non-ASCII digits, booleans).
  """
  if isinstance(value, str):
    text = value.strip()
    if text.isascii() and text.isdigit():
      return int(text)
  elif not isinstance(value, bool):
    try:
      number = float(value)
    except (TypeError, ValueError):
      number = None
    if number is not None and number >= 0 and number == int(number):
      return int(number)
  raise errors.UsageError(f"{flag}: {value!r} is not a run id (an integer "
                          ">= 0, e.g. 0, 3 or 12)")


def ratio_value(value, flag: str = "ratio") -> float:
  """A subset ratio from what a person typed: '0.70', 0.7, '7e-1' -> 0.7.

  Raises `errors.UsageError` naming `flag` outside (0, 1] or for a
  non-number.
  """
  try:
    return float(format_ratio(value.strip() if isinstance(value, str)
                              else value))
  except errors.UsageError as e:
    raise errors.UsageError(f"{flag}: {e}") from None


def _items(text: str, flag: str) -> List[str]:
  items = [item.strip() for item in text.split(",")]
  items = [item for item in items if item]
  if not items:
    raise errors.UsageError(f"{flag}: nothing in {text!r}; leave the flag "
                            "out for all")
  return items


def parse_run_ids(text: Optional[str], flag: str = "--runs"
                  ) -> Optional[List[int]]:
  """`--runs` text as sorted, distinct run ids; None for all.

  `None` and 'all' mean every run; otherwise comma-separated ids and
  inclusive ranges: '0,3,7', '03' (run 3), '0-9', '0-4,8'.
  """
  if text is None or text.strip() == "all":
    return None
  ids = set()
  for item in _items(text, flag):
    span = _RUN_RANGE_RE.fullmatch(item)
    if span:
      first, last = int(span.group(1)), int(span.group(2))
      if first > last:
        raise errors.UsageError(f"{flag}: range {item!r} is empty (the "
                                "first id must not exceed the last)")
      if last - first >= MAX_RUN_RANGE:
        raise errors.UsageError(f"{flag}: range {item!r} holds more than "
                                f"{MAX_RUN_RANGE} ids")
      ids.update(range(first, last + 1))
    else:
      ids.add(run_id(item, flag))
  return sorted(ids)


def format_run_ids(ids) -> str:
  """Run ids as `parse_run_ids` reads them, ranges joined: [0, 1, 2, 5] ->
  '0-2,5' (sorted, each id once)."""
  ids = sorted(set(int(i) for i in ids))
  spans, start = [], 0
  for k in range(1, len(ids) + 1):
    if k == len(ids) or ids[k] != ids[k - 1] + 1:
      first, last = ids[start], ids[k - 1]
      spans.append(f"{first}" if first == last else f"{first}-{last}")
      start = k
  return ",".join(spans)


MAX_RATIOS = 1000  # Ratios in one `start:stop:step` range (a typo guard).


def parse_ratios(text: Optional[str], flag: str = "--ratios"
                 ) -> Optional[List[float]]:
  """`--ratios` text as sorted, distinct ratios; None for all.

  The one ratio grammar of every command: `None` and 'all' mean every
  ratio; otherwise comma-separated numbers in (0, 1] ('0.1,0.7'; '0.70'
  is 0.7) and inclusive ranges `start:stop:step` ('0.1:0.9:0.1' is
  0.1, 0.2, ..., 0.9), mixed freely.
  """
  if text is None or text.strip() == "all":
    return None
  values = set()
  for item in _items(text, flag):
    if ":" not in item:
      values.add(ratio_value(item, flag))
      continue
    parts = item.split(":")
    try:
      start, stop, step = (float(p) for p in parts)
      if len(parts) != 3 or not step > 0 or not stop >= start:
        raise ValueError
    except ValueError:
      raise errors.UsageError(
          f"{flag}: {item!r} is not a range start:stop:step (e.g. "
          "0.1:0.9:0.1, with step > 0 and stop >= start)") from None
    count = int(round((stop - start) / step)) + 1
    if count > MAX_RATIOS:
      raise errors.UsageError(f"{flag}: range {item!r} holds more than "
                              f"{MAX_RATIOS} ratios")
    values.update(ratio_value(round(start + k * step, 6), flag)
                  for k in range(count))
  return sorted(values)


def parse_one_ratio(text: Optional[str], flag: str = "--ratios"
                    ) -> Optional[float]:
  """`--ratios` for a command that works on one ratio: None (unset: the
  only ratio there is), else exactly one ratio (`parse_ratios` grammar)."""
  if text is None:
    return None
  ratios = parse_ratios(text, flag)
  if ratios is None or len(ratios) != 1:
    raise errors.UsageError(f"{flag} {text!r}: this command takes one "
                            "ratio (e.g. 0.7)")
  return ratios[0]
