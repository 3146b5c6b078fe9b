"""What the machine's arithmetic units can do fast: chooses the precision.

`resolve_precision('auto')` is 'bfloat16' where matmuls run fast in it (a
CPU with AVX-512 BF16 or AMX BF16, or a GPU of compute capability >= 8.0)
and 'float32' otherwise, with the reason in words.
"""

import dataclasses
import functools

PRECISIONS = ("float32", "bfloat16")
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


@dataclasses.dataclass(frozen=True)
class Precision:
  name: str  # 'float32' or 'bfloat16'
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


def gpu_bf16() -> bool:
  """Whether a visible GPU has fast bfloat16 (compute capability >= 8)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  for gpu in tf.config.list_physical_devices("GPU"):
    details = tf.config.experimental.get_device_details(gpu)
    if tuple(details.get("compute_capability", (0, 0))) >= (8, 0):
      return True
  return False


def resolve_precision(requested: str, flags=None, has_gpu_bf16=None
                      ) -> Precision:
  """'float32' | 'bfloat16' | 'auto' -> the precision to train in.

  `flags` and `has_gpu_bf16` override detection (tests fake them).
  """
  if requested not in CHOICES:
    from heldout_tf.core import errors  # pylint: disable=g-import-not-at-top
    raise errors.UsageError(
        f"--precision must be one of {', '.join(CHOICES)}, got {requested!r}")
  if requested != "auto":
    return Precision(requested, "requested")
  gpu = gpu_bf16() if has_gpu_bf16 is None else has_gpu_bf16
  if gpu:
    return Precision("bfloat16", "auto: GPU with bfloat16 units")
  flags = cpu_flags() if flags is None else frozenset(flags)
  found = [f for f in _BF16_CPU_FLAGS if f in flags]
  if found:
    return Precision("bfloat16", f"auto: CPU has {'/'.join(found)}")
  return Precision("float32", "auto: no bfloat16 matmul units detected")
