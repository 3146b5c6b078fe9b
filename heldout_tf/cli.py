"""What every command-line entry point shares.

  if __name__ == "__main__":
    cli.quiet_tensorflow()   # before anything imports TensorFlow
  ...
  def main(argv): ...        # parse flags, call one library function, print
  if __name__ == "__main__":
    cli.run(main)

`run` prints `error: <message>` and exits 1 for a `HeldoutError` (bad
input), exits 130 on Ctrl-C, and leaves every other exception's traceback
alone: those are bugs.
"""

import os
import sys
from typing import Callable, Optional, Sequence

from heldout_tf import errors


def quiet_tensorflow():
  """Hides TensorFlow's C++ start-up lines (oneDNN, cuInit, CPU features).

  Call before TensorFlow is imported, from entry points only (never at
  library import time). A value the user set is kept.
  """
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  try:
    from absl import logging  # pylint: disable=g-import-not-at-top
    logging.set_verbosity(logging.WARNING)
  except ImportError:
    pass


def fail(message: str, code: int = 1):
  """Prints `error: message` to stderr and exits with `code`."""
  print(f"error: {message}", file=sys.stderr, flush=True)
  sys.exit(code)


def run(main: Callable[[Optional[Sequence[str]]], Optional[int]],
        argv: Optional[Sequence[str]] = None):
  """Calls `main(argv)` and turns kit errors into `error:` lines."""
  try:
    code = main(argv)
  except errors.HeldoutError as e:
    fail(str(e))
  except KeyboardInterrupt:
    print("interrupted; re-run the same command to resume", file=sys.stderr)
    sys.exit(130)
  sys.exit(code or 0)
