"""Collections with simulated correctness: runs in the released layout
without training, for tests and benchmarks of what reads a collection
(estimates, the report) at any size.

  for run in simulated_runs(root, "mnist-mlp", 0.7, typical, n_test=1000,
                            num_runs=64, rng=rng):
    ...   # run.subset, run.removed, run.correct (aux_arrays.npz written)

A training example is right when trained on with probability
`train_accuracy`, and when held out with its `typical[i]`; a fraction
`follows` of the test examples is right exactly when its partner training
example was trained on (a high-influence pair), the others with
`test_accuracy`.
"""

import dataclasses
from typing import Iterator

import numpy as np

from heldout_tf.collection import layout
from heldout_tf.collection import runs as runs_lib


@dataclasses.dataclass
class SimulatedRun:
  """One simulated run (its `aux_arrays.npz` is on disk)."""
  run: int
  subset: np.ndarray   # int64 [k] sorted: trained on.
  removed: np.ndarray  # int64 [n_train - k]: held out.
  correct: np.ndarray  # bool [n_train]: right on each training example.
  correct_test: np.ndarray  # bool [n_test]


def simulated_runs(root: str, experiment: str, ratio: float,
                   typical: np.ndarray, *, n_test: int, num_runs: int,
                   rng: np.random.Generator, subset_size: int = None,
                   train_accuracy: float = 0.97, test_accuracy: float = 0.8,
                   follows: float = 0.3) -> Iterator[SimulatedRun]:
  """Writes runs 0..num_runs-1 of `<root>/<experiment>/<ratio>/`, yielding
  each after its aux arrays are written (draws from `rng` in a fixed
  order, so a caller drawing between runs stays reproducible).

  Args:
    typical: float [n_train], each example's accuracy when held out.
    subset_size: examples per run (default: ratio * n_train).
  """
  n = len(typical)
  k = int(ratio * n) if subset_size is None else int(subset_size)
  partner = rng.integers(0, n, n_test)  # Test j follows example partner[j].
  follows_partner = rng.uniform(size=n_test) < follows
  for r in range(num_runs):
    subset = np.sort(rng.choice(n, k, replace=False))
    mask = np.zeros(n, bool)
    mask[subset] = True
    correct = np.where(mask, rng.uniform(size=n) < train_accuracy,
                       rng.uniform(size=n) < typical)
    correct_test = np.where(follows_partner, mask[partner],
                            rng.uniform(size=n_test) < test_accuracy)
    removed = np.flatnonzero(~mask)
    runs_lib.write_aux(
        layout.run_dir(root, experiment, ratio, r),
        correctness={"train": correct[subset], "removed": correct[removed],
                     "test": correct_test},
        index={"train": subset, "removed": removed,
               "test": np.arange(n_test)}, subsample_idx=subset)
    yield SimulatedRun(r, subset, removed, correct, correct_test)
