"""What the machine's arithmetic units can do fast: the precision table.

The precisions a collection trains in (`PRECISIONS`), and 'auto', which
`resolve_precision` turns into one with the reason in words:

  bfloat16  a CPU with AVX-512 BF16 or AMX BF16, or a GPU of compute
            capability >= 8.0
  float16   else, a GPU of compute capability 7.x (fast float16, no
            bfloat16)
  float32   else
"""

import dataclasses
import functools
from typing import List, Tuple

PRECISIONS = ("float32", "bfloat16", "float16")
CHOICES = PRECISIONS + ("auto",)
# Every precision a trainer takes (float16: mixed precision with loss
# scaling, for GPUs of compute capability 7.x).
TRAINING_PRECISIONS = ("float32", "bfloat16", "float16")


def check_name(name: str, auto: bool = False) -> str:
  """`name` if it is a training precision (or 'auto' when `auto`); else
  `errors.UsageError` naming --precision."""
  choices = TRAINING_PRECISIONS + (("auto",) if auto else ())
  if name not in choices:
    from heldout_tf.core import errors  # pylint: disable=g-import-not-at-top
    raise errors.UsageError(f"--precision must be one of "
                            f"{', '.join(choices)}, got {name!r}")
  return name
_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
_BF16_GPU, _FP16_GPU = (8, 0), (7, 0)  # Minimum compute capabilities.


@dataclasses.dataclass(frozen=True)
class Precision:
  name: str  # One of PRECISIONS.
  reason: str


@functools.lru_cache(maxsize=None)
def cpu_flags() -> frozenset:
  """The CPU feature flags of /proc/cpuinfo (empty where there is none)."""
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("flags"):
          return frozenset(line.split(":", 1)[1].split())
  except OSError:
    pass
  return frozenset()


def gpu_capabilities() -> List[Tuple[int, int]]:
  """The compute capability `(major, minor)` of every visible GPU."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return [tuple(tf.config.experimental.get_device_details(gpu).get(
      "compute_capability", (0, 0)))
          for gpu in tf.config.list_physical_devices("GPU")]


def gpu_bf16() -> bool:
  """Whether a visible GPU has fast bfloat16 (compute capability >= 8)."""
  return any(c >= _BF16_GPU for c in gpu_capabilities())


def gpu_float16() -> bool:
  """Whether a visible GPU has fast float16 (compute capability >= 7)."""
  return any(c >= _FP16_GPU for c in gpu_capabilities())


def resolve_precision(requested: str) -> Precision:
  """One of `CHOICES` -> the precision to train in (see the table above)."""
  if requested not in CHOICES:
    from heldout_tf.core import errors  # pylint: disable=g-import-not-at-top
    raise errors.UsageError(
        f"--precision must be one of {', '.join(CHOICES)}, got {requested!r}")
  if requested != "auto":
    return Precision(requested, "requested")
  if gpu_bf16():
    return Precision("bfloat16", "auto: GPU with bfloat16 units")
  found = [f for f in _BF16_CPU_FLAGS if f in cpu_flags()]
  if found:
    return Precision("bfloat16", f"auto: CPU has {'/'.join(found)}")
  if gpu_float16():
    return Precision("float16", "auto: GPU with float16 units")
  return Precision("float32", "auto: no bfloat16 or float16 matmul units "
                   "detected")
