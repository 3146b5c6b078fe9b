"""Importing TensorFlow quietly: entry points and Ray workers call
`quiet_tensorflow()` before anything else imports it. It also gives every
warning the kit's own format: absl's `logging.warning(...)` (which would
print `WARNING:absl:...`) prints `warning: ...`, as the commands do."""

import contextlib
import logging as std_logging
import os
import re
import sys
import tempfile


# TensorFlow's C++ start-up lines, printed to fd 2 before absl logging is
# initialised (TF_CPP_MIN_LOG_LEVEL does not reach them in TF >= 2.16).
_TF_STARTUP_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog"
    r"|[IWE]\d{4} [\d:. ]+\s*\d+ (port|cudart_stub|cpu_feature_guard"
    r"|cuda_platform|cuda_executor|cuda_diagnostics|gpu_device)\.cc:"
    r"|To enable the following instructions:)")


@contextlib.contextmanager
def _filtered_stderr():
  """Runs the block with fd 2 captured, then replays all but the noise."""
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as captured:
    os.dup2(captured.fileno(), 2)
    try:
      yield
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      captured.seek(0)
      for line in captured.read().decode(errors="replace").splitlines():
        if not _TF_STARTUP_NOISE.match(line):
          print(line, file=sys.stderr)


def quiet_tensorflow():
  """Imports TensorFlow without its C++ start-up lines (oneDNN, cuInit,
  CPU features) and sets absl logging to warnings.

  Call from entry points only (never at library import time), before
  anything else imports TensorFlow. With TF_CPP_MIN_LOG_LEVEL=0 set by the
  user nothing is hidden.
  """
  if os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "0":
    import tensorflow  # pylint: disable=g-import-not-at-top,unused-import
  else:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with _filtered_stderr():
      import tensorflow as tf  # pylint: disable=g-import-not-at-top
      tf.config.list_physical_devices()  # Device start-up (cuInit) lines.
  from absl import logging  # pylint: disable=g-import-not-at-top
  logging.set_verbosity(logging.WARNING)
  kit_warning_format()


class _StderrHandler(std_logging.StreamHandler):
  """A stream handler that writes to whatever `sys.stderr` is when a record
  comes (not the stream of when it was made, which may be closed since)."""

  @property
  def stream(self):
    return sys.stderr

  @stream.setter
  def stream(self, value):
    del value  # Always the current sys.stderr.


class _KitFormatter(std_logging.Formatter):
  """`warning: message` (`error: message` for errors)."""

  def format(self, record):
    level = "error" if record.levelno >= std_logging.ERROR else "warning"
    return f"{level}: {record.getMessage()}"


def kit_warning_format():
  """Prints absl's warnings and errors as `warning: ...` / `error: ...` on
  stderr (once; absl's own handler no longer sees them)."""
  logger = std_logging.getLogger("absl")
  if any(isinstance(h.formatter, _KitFormatter) for h in logger.handlers):
    return
  handler = _StderrHandler()
  handler.setFormatter(_KitFormatter())
  handler.setLevel(std_logging.WARNING)
  logger.addHandler(handler)
  logger.propagate = False
