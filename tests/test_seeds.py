"""The seed table: every stream draws what it drew before it was a table.

The pinned values were drawn by the code each stream came from
(`training.ensemble`, `training.model_training`, `data.noise`,
`quality.detection`) before `heldout_tf.core.seeds` existed: collections on
disk keep their bits and fingerprints only while these hold.
"""

import numpy as np
import pytest

from heldout_tf.core import errors
from heldout_tf.core import seeds
from heldout_tf.data import noise
from heldout_tf.quality import detection


def test_run_streams_draw_the_pinned_values():
  subset = seeds.subset_indices(5, 3, 20, 0.5)
  assert subset.dtype == np.int64
  assert subset.tolist() == [0, 3, 6, 7, 8, 10, 14, 15, 16, 19]
  assert seeds.epoch_order(5, 3, 2, subset).tolist() == [
      10, 15, 16, 6, 8, 0, 3, 7, 19, 14]
  assert seeds.subset_indices(0, 0, 10, 0.7).tolist() == [
      0, 1, 2, 3, 4, 5, 9]
  assert seeds.init_seed(5, 3) == 2158061083
  assert seeds.init_seed(5, 0) == 2409841619
  augment = seeds.augment_seed(5, 3, 2, 7)
  assert augment.dtype == np.int64
  assert augment.tolist() == [2279055489, 119832974]


def test_noise_and_removal_streams_draw_the_pinned_values():
  labels, idx = noise.flip_labels(np.arange(20) % 4, 0.25, 5, 4)
  assert idx.tolist() == [1, 7, 10, 11, 17]
  assert labels.tolist() == [0, 3, 2, 3, 0, 1, 2, 0, 0, 1, 1, 1, 0, 1, 2, 3,
                             0, 3, 2, 3]
  noisy = noise.apply(np.zeros((20, 2, 2, 1), np.uint8), np.arange(20) % 4,
                      noise.parse("input_uniform:0.2@1"), 5, 4)
  assert noisy.noisy_idx.tolist() == [1, 3, 7, 13]
  assert noisy.images[noisy.noisy_idx].reshape(-1)[:8].tolist() == [
      208, 97, 141, 104, 165, 70, 197, 60]
  removals = detection.removal_sets({"s": np.arange(20.0)}, [0.25], seed=6)
  assert removals[-1].method == detection.RANDOM
  assert removals[-1].removed.tolist() == [3, 12, 14, 16, 17]
  assert seeds.removal_seed(5) == 6


def test_streams_are_apart():
  subset = seeds.subset_indices(1, 2, 1000, 0.5)
  assert len(subset) == 500 and len(np.unique(subset)) == 500
  assert np.all(np.diff(subset) > 0)
  assert not np.array_equal(subset, seeds.subset_indices(1, 3, 1000, 0.5))
  assert not np.array_equal(subset, seeds.subset_indices(2, 2, 1000, 0.5))
  order = seeds.epoch_order(1, 2, 0, subset)
  np.testing.assert_array_equal(np.sort(order), subset)
  assert not np.array_equal(order, seeds.epoch_order(1, 2, 1, subset))
  assert seeds.subset_size(10, 0.01) == 1  # At least one example.
  with pytest.raises(errors.UsageError, match="run ids must be >= 0"):
    seeds.init_seed(0, -1)
