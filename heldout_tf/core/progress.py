"""Progress bars for long work, the same everywhere in the kit.

`progress.bar(total, desc, unit)` is a tqdm bar on a terminal. When stderr
is not a terminal (a redirected log, CI) it prints one plain line at most
every `log_every` seconds and one at the end, instead of thousands of `\\r`
updates. Counts are whole units (runs, files, bytes).
"""

import sys
import time
from typing import Optional

import tqdm

from heldout_tf.core import sizes


class _LogLines:
  """tqdm's small interface (`update`, `n`, `set_postfix_str`, `close`) as
  occasional plain lines."""

  def __init__(self, total, desc, unit, log_every, file, unit_scale):
    self.total, self.desc, self.unit = total, desc, unit
    self.n = 0
    self._file = file
    self._log_every = log_every
    self._unit_scale = unit_scale
    self._start = self._last = time.monotonic()
    self._postfix = ""
    self._closed = False
    self._shown = None

  def _fmt(self, value):
    if self._unit_scale:
      return sizes.format_bytes(value)
    return str(int(value))

  def _line(self):
    self._shown = self.n
    elapsed = time.monotonic() - self._start
    total = f"/{self._fmt(self.total)}" if self.total else ""
    pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
    post = f", {self._postfix}" if self._postfix else ""
    if self._unit_scale:
      unit = ""  # Sizes say it.
    elif (self.total or self.n) == 1 or self.unit.endswith("s"):
      unit = f" {self.unit}"
    else:
      unit = f" {self.unit}s"  # '3/3 runs', '1/1 run'.
    print(f"{self.desc}: {self._fmt(self.n)}{total}{unit}{pct}, "
          f"{elapsed:.0f} s{post}", file=self._file, flush=True)

  def update(self, n=1):
    self.n += n
    now = time.monotonic()
    if now - self._last >= self._log_every:
      self._last = now
      self._line()

  def set_postfix_str(self, text, refresh=True):
    del refresh
    self._postfix = text

  def refresh(self):
    pass

  def close(self):
    if not self._closed:
      self._closed = True
      if self.n and self._shown != self.n:
        self._line()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


def bar(total: Optional[float], desc: str, unit: str = "it",
        enabled: bool = True, unit_scale: bool = False,
        log_every: float = 30.0, file=None):
  """A progress bar: tqdm on a terminal, occasional lines elsewhere.

  Use as a context manager; call `update(n)` with whole units.
  """
  file = file or sys.stderr
  if not enabled:
    return tqdm.tqdm(total=total, disable=True)
  if getattr(file, "isatty", lambda: False)():
    return tqdm.tqdm(total=total, desc=desc, unit=unit, file=file,
                     unit_scale=unit_scale, dynamic_ncols=True,
                     smoothing=0.1)
  return _LogLines(total, desc, unit, log_every, file, unit_scale)
