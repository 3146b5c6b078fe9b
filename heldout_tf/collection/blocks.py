"""Canonical blocks of runs, and shards made of whole blocks.

A run's bits may depend on the runs trained beside it (the stacked
engine's floating-point results depend on the group size and a model's
slot in the group). So a collection with group size G is always trained in the same
blocks: block k is runs `[k*G, (k+1)*G)`, trained whole (runs beyond the
wanted ones pad the last block and are discarded). `shard_runs` hands out
whole blocks, so a run's arrays are the same whether it was trained in one
job, in shards, after a kill or in a Ray task.
"""

from typing import Dict, List, Sequence, Tuple

from heldout_tf.core import errors

NO_SHARD = "0/1"  # The whole collection in one job.


def parse_shard(text: str) -> Tuple[int, int]:
  """'i/n' -> (i, n) with 0 <= i < n; `errors.UsageError` otherwise."""
  try:
    index, count = (int(part) for part in str(text).split("/"))
  except ValueError:
    raise errors.UsageError(
        f"--shard must look like i/n (e.g. 0/4), got {text!r}") from None
  if count < 1 or not 0 <= index < count:
    raise errors.UsageError(f"--shard {text!r}: need 0 <= i < n")
  return index, count


def is_sharded(shard: str) -> bool:
  """Whether `shard` ('i/n') asks for part of the collection only."""
  return parse_shard(shard)[1] > 1


def check_group_size(group_size: int):
  """`errors.UsageError` unless `group_size` >= 1."""
  if int(group_size) < 1:
    raise errors.UsageError(f"group size must be >= 1, got {group_size}")


def block_runs(block: int, group_size: int) -> List[int]:
  """The run ids of canonical block `block`: `[block*G, (block+1)*G)`."""
  return list(range(block * group_size, (block + 1) * group_size))


def block_of(runs: Sequence[int], group_size: int) -> List[int]:
  """The members of the one canonical block holding every run of `runs`
  (`ValueError` naming the strays if they span several blocks)."""
  check_group_size(group_size)
  runs = sorted(set(int(r) for r in runs))
  members = block_runs(runs[0] // group_size, group_size)
  strays = [r for r in runs if r not in members]
  if strays:
    raise ValueError(f"runs {strays} are not in the block of run {runs[0]} "
                     f"(runs {members[0]}..{members[-1]})")
  return members


def groups(run_ids: Sequence[int], group_size: int) -> List[List[int]]:
  """`run_ids` split by canonical block, in block order.

  Each inner list holds the wanted runs of one block (all of them share
  `run // group_size`); a block trainer trains the whole block.
  """
  check_group_size(group_size)
  by_block: Dict[int, List[int]] = {}
  for run in sorted(set(int(r) for r in run_ids)):
    by_block.setdefault(run // group_size, []).append(run)
  return [by_block[k] for k in sorted(by_block)]


def shard_runs(num_runs: int, shard: str, group_size: int = 1) -> List[int]:
  """The runs of `0..num_runs-1` that shard `i/n` owns: whole blocks.

  The ceil(num_runs / G) blocks are dealt out contiguously, so shards are
  disjoint, cover every run, and never split a block (a shard may be empty
  when there are fewer blocks than shards).
  """
  index, count = parse_shard(shard)
  check_group_size(group_size)
  num_blocks = -(-num_runs // group_size)
  first = index * num_blocks // count * group_size
  last = (index + 1) * num_blocks // count * group_size
  return list(range(first, min(last, num_runs)))
