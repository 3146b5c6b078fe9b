"""Calling a reader on a FIFO without hanging the test that does it.

  messages = refusals(fifo, runs.AuxArraysError, lambda: runs.read_aux(fifo))
  assert messages == [f"{fifo}: not a regular file (a FIFO)"]

A reader that opens a FIFO blocks until a writer appears; `refusals` runs
the calls in a daemon thread and, if they are still running after
`seconds`, opens the FIFO for writing (so the reader returns) and raises
`AssertionError`.
"""

import os
import threading
from typing import Callable, List


def refusals(fifo: str, error, *calls: Callable[[], object],
             seconds: float = 20.0) -> List[str]:
  """`str(e)` of each `error` the calls raise, in order (calls that return
  add nothing); `AssertionError` if they block on `fifo`."""
  messages = []

  def run():
    for call in calls:
      try:
        call()
      except error as e:  # pylint: disable=broad-except
        messages.append(str(e))

  thread = threading.Thread(target=run, daemon=True)
  thread.start()
  thread.join(seconds)
  if thread.is_alive():  # Release the blocked reader, then fail.
    os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    raise AssertionError(f"blocked on the FIFO {fifo}")
  return messages
