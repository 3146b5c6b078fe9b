"""Every stream of a collection's randomness, named once, and its draws.

All of a collection's randomness comes from its seed (`--seed`). Each use
draws from its own stream, a numpy `SeedSequence` whose entropy names the
use, so no two uses ever see the same numbers:

  stream          entropy                          drawn by
  subset          [seed, run, 0]                   `subset_indices`
  shuffle         [seed, run, 1, epoch]            `epoch_order`
  (retired)       [seed, run, 2, layer]            the MLP ensemble's own
                                                   initialisation, gone;
                                                   never to be reused
  augmentation    [seed, run, 3, epoch, step]      `augment_seed`
  model init      [seed, run, 4]                   `init_seed`
  label noise     seed, spawn_key (7,)             `label_noise_rng`
  other noise     seed, spawn_key (8, kind)        `noise_rng`
  removal         [seed + 1, ...] (every stream    `removal_seed`
   ablation        above, from the offset seed)
  random removal  [seed + 1, round(fraction * 1e6)]  `random_removal`

SeedSequence pads entropy lists shorter than its 4-word pool with zeros,
so `[seed, run, 0]` is also `[seed, run]`: a new stream needs a spawn key
or an entropy list of 5 or more words to stay apart from the per-run ones
(the noise streams use spawn keys for that reason). The random removal
baseline's `[seed + 1, k]` (k = round(fraction * 1e6) >= 1) shares its
numbers with the removal models' subset stream of run k, which trains on
what the ablation keeps instead (it never draws a subset): kept as it is,
so existing removal tables reproduce.

The values never change: collections already on disk keep their bits
(tests/test_seeds.py pins drawn values).
"""

import numpy as np

from heldout_tf.core import errors

SUBSET_STREAM = 0
SHUFFLE_STREAM = 1
RETIRED_STREAM = 2  # The MLP ensemble's initialisation (retired).
AUGMENT_STREAM = 3
INIT_STREAM = 4
LABEL_NOISE_KEY = 7
NOISE_KEY = 8
REMOVAL_SEED_OFFSET = 1


def _check_run(run: int) -> int:
  if int(run) < 0:
    raise errors.UsageError(f"run ids must be >= 0, got {run}")
  return int(run)


def subset_size(num_examples: int, ratio: float) -> int:
  """How many of `num_examples` a run of subset ratio `ratio` trains on."""
  return max(1, int(round(ratio * num_examples)))


def subset_indices(seed: int, run: int, num_examples: int,
                   ratio: float) -> np.ndarray:
  """int64 `[subset_size]`, sorted: the examples run `run` trains on."""
  rng = np.random.default_rng([seed, _check_run(run), SUBSET_STREAM])
  chosen = rng.choice(num_examples, subset_size(num_examples, ratio),
                      replace=False)
  return np.sort(chosen).astype(np.int64)


def epoch_order(seed: int, run: int, epoch: int,
                subset: np.ndarray) -> np.ndarray:
  """`subset` in the order run `run` visits it in epoch `epoch`."""
  rng = np.random.default_rng([seed, _check_run(run), SHUFFLE_STREAM,
                               int(epoch)])
  return subset[rng.permutation(len(subset))]


def init_seed(seed: int, run: int) -> int:
  """The global TensorFlow seed run `run`'s model is built under."""
  return int(np.random.SeedSequence(
      [seed, _check_run(run), INIT_STREAM]).generate_state(1)[0])


def augment_seed(seed: int, run: int, epoch: int, step: int) -> np.ndarray:
  """int64 `[2]`: the stateless seed of run `run`'s augmentation at step
  `step` of epoch `epoch`."""
  return np.random.SeedSequence(
      [seed, _check_run(run), AUGMENT_STREAM, int(epoch), int(step)]
  ).generate_state(2).astype(np.int64)


def label_noise_rng(seed: int) -> np.random.Generator:
  """The generator label noise draws from (which examples, which labels)."""
  return np.random.default_rng(np.random.SeedSequence(
      seed, spawn_key=(LABEL_NOISE_KEY,)))


def noise_rng(seed: int, kind: int) -> np.random.Generator:
  """The generator noise kind number `kind` (not label noise) draws from:
  one stream per kind, so adding a kind never changes another's draws."""
  return np.random.default_rng(np.random.SeedSequence(
      seed, spawn_key=(NOISE_KEY, int(kind))))


def removal_seed(seed: int) -> int:
  """The seed of a removal ablation's models (and its random baseline):
  every stream drawn anew, independent of the scored runs'."""
  return int(seed) + REMOVAL_SEED_OFFSET


def random_removal(seed: int, fraction: float, num_examples: int,
                   count: int) -> np.ndarray:
  """int64 sorted: `count` of `num_examples` drawn at random, the removal
  ablation's baseline at `fraction` (`seed`: the ablation's own,
  `removal_seed`)."""
  rng = np.random.default_rng([seed, int(round(fraction * 1e6))])
  return np.sort(rng.choice(num_examples, count, replace=False))
