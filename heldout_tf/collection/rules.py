"""Flags versus the recorded config: the rules every pipeline follows.

A collection's config.json records every setting a run's bits depend on,
the group size G and the training precision included. On a later call
(resume, more runs, another shard, another host):

- `--precision auto` takes the recorded precision (never re-detected, so a
  host with other bfloat16 support resumes instead of failing); an explicit
  value must equal the recorded one.
- `--group_size 0` takes the recorded G; with nothing recorded it is chosen
  (from the available memory, by the pipeline's `choose`), at most
  `--num_runs`. A sharded first call must name G explicitly: every shard
  must train the same blocks. An explicit value must equal the recorded one.
"""

import hashlib
from typing import Callable, Optional, Tuple

import numpy as np

from heldout_tf.core import errors
from heldout_tf.core import hardware
from heldout_tf.collection import blocks


def resolve_precision(flag: str, recorded: Optional[dict]
                      ) -> hardware.Precision:
  """--precision against the collection's recorded precision.

  'auto' takes the recorded one if there is one, else the machine's
  (`hardware.resolve_precision`, the one precision table); an explicit
  value must equal the recorded one (`errors.ConfigError` names both).
  """
  on_disk = (recorded or {}).get("precision")
  if flag == "auto" and on_disk:
    return hardware.Precision(on_disk, "recorded in this --root's config.json")
  precision = hardware.resolve_precision(flag)
  if on_disk and precision.name != on_disk:
    raise errors.ConfigError(
        f"--precision {flag} ({precision.name}) differs from the precision "
        f"{on_disk} the runs in this --root were trained in; pass "
        f"--precision {on_disk} (or auto), or use another --root")
  return precision


def resolve_group_size(flag: int, recorded: Optional[dict], *,
                       num_runs: int, shard: str = blocks.NO_SHARD,
                       choose: Callable[[], int] = lambda: 1
                       ) -> Tuple[int, str]:
  """`(G, why)`: --group_size against the collection's recorded one.

  Args:
    flag: --group_size; 0 means the recorded one, else `choose()`.
    recorded: the collection's config.json (None: a new collection).
    num_runs: --num_runs; a chosen G is at most this.
    shard: --shard; a sharded new collection needs an explicit G.
    choose: picks G for a new collection (e.g. from the memory).
  """
  on_disk = (recorded or {}).get("group_size")
  flag = int(flag)
  if flag < 0:
    raise errors.UsageError(
        f"--group_size must be >= 1, or 0 for the recorded one, got {flag}")
  if flag == 0:
    if on_disk:
      return int(on_disk), "recorded in this --root's config.json"
    if blocks.is_sharded(shard):
      raise errors.UsageError(
          f"--shard {shard}: every shard must train blocks of the "
          "same size; pass --group_size (e.g. 32) explicitly the first "
          "time (later runs read it back from config.json)")
    return max(1, min(int(choose()), num_runs)), (
        "chosen from the available memory")
  if on_disk and flag != on_disk:
    raise errors.ConfigError(
        f"--group_size {flag} differs from the group size {on_disk} the runs "
        "in this --root were trained with (a run's bits depend on it); pass "
        f"--group_size {on_disk} (or 0), or use another --root")
  return flag, "from --group_size"


def fingerprint(*arrays) -> str:
  """A short hash of the arrays a collection's runs depend on (its data),
  for the recorded config: same data or not."""
  digest = hashlib.sha256()
  for array in arrays:
    digest.update(np.ascontiguousarray(array).tobytes())
  return digest.hexdigest()[:16]
