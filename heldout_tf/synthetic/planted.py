"""Collections with a planted linear ground truth: every run's margins are
a known linear function of its training mask plus noise, so an attribution
method's estimate can be checked against the truth (no training).

  planted = planted_collection(root, "toy", 0.5, n_train=200, n_test=40,
                               num_runs=300, rng=np.random.default_rng(0))
  planted.theta   # float64 [n_test, n_train]: the true effects

Test example j's margin in run r is

  margin[r, j] = bias[j] + sum_i theta[j, i] mask[r, i] + noise * N(0, 1)

with `theta` sparse (`support` training examples per test example, weights
of either sign); a training example's own margin is `train_margin` higher
when trained on. Each run is written in the released layout with two-class
logits [0, margin] for label 1 (so correctness is `margin > 0` and the
label probability is sigmoid(margin)): `aux_arrays.npz` and, through
`heldout_tf.collection.margins.write`, `margins.npz`.
"""

import dataclasses
from typing import Optional

import numpy as np

from heldout_tf.collection import layout
from heldout_tf.collection import margins as margins_lib
from heldout_tf.collection import runs as runs_lib


@dataclasses.dataclass
class Planted:
  """A planted collection (its runs are on disk)."""
  mask: np.ndarray           # bool [runs, n_train]
  theta: np.ndarray          # float64 [n_test, n_train]: the truth.
  bias: np.ndarray           # float64 [n_test]
  margin_train: np.ndarray   # float32 [runs, n_train]
  margin_test: np.ndarray    # float32 [runs, n_test]
  run_paths: list


def planted_theta(n_train: int, n_test: int, rng: np.random.Generator,
                  support: int = 5, scale: float = 1.0) -> np.ndarray:
  """float64 [n_test, n_train]: `support` random training examples per test
  example, weights `scale` * N(0, 1) pushed away from 0 (|w| >= scale/2)."""
  theta = np.zeros((n_test, n_train))
  for j in range(n_test):
    where = rng.choice(n_train, support, replace=False)
    weights = rng.standard_normal(support)
    theta[j, where] = scale * (np.sign(weights) * 0.5 + weights)
  return theta


def planted_collection(root: str, experiment: str, ratio: float, *,
                       n_train: int, n_test: int, num_runs: int,
                       rng: np.random.Generator,
                       theta: Optional[np.ndarray] = None,
                       noise: float = 0.5, train_margin: float = 2.0,
                       first_run: int = 0) -> Planted:
  """Writes runs `first_run..first_run+num_runs-1` of
  `<root>/<experiment>/<ratio>/` (aux arrays and margins) and returns them.

  Args:
    theta: the true effects [n_test, n_train] (default `planted_theta`).
    noise: standard deviation of each run's margin noise.
    train_margin: how much higher a training example's own margin is when
      trained on.
  """
  if theta is None:
    theta = planted_theta(n_train, n_test, rng)
  bias = rng.standard_normal(n_test) * 0.5
  typical = rng.standard_normal(n_train)
  k = int(round(ratio * n_train))
  mask = np.zeros((num_runs, n_train), bool)
  for r in range(num_runs):
    mask[r, rng.choice(n_train, k, replace=False)] = True
  margin_test = (bias + mask @ theta.T +
                 noise * rng.standard_normal((num_runs, n_test)))
  margin_train = (typical + train_margin * mask +
                  noise * rng.standard_normal((num_runs, n_train)))
  margin_test = margin_test.astype(np.float32)
  margin_train = margin_train.astype(np.float32)
  paths = []
  for r in range(num_runs):
    subset = np.flatnonzero(mask[r])
    removed = np.flatnonzero(~mask[r])
    path = layout.run_dir(root, experiment, ratio, first_run + r)
    logits = {s: np.stack([np.zeros_like(m), m], axis=1)
              for s, m in (("train", margin_train[r]),
                           ("test", margin_test[r]))}
    correct = {s: l.argmax(1) == 1 for s, l in logits.items()}
    runs_lib.write_aux(
        path, correctness={"train": correct["train"][subset],
                           "removed": correct["train"][removed],
                           "test": correct["test"]},
        index={"train": subset, "removed": removed,
               "test": np.arange(n_test)}, subsample_idx=subset)
    margins_lib.write(path, train_logits=logits["train"],
                      train_labels=np.ones(n_train, np.int64),
                      test_logits=logits["test"],
                      test_labels=np.ones(n_test, np.int64))
    paths.append(path)
  return Planted(mask, theta, bias, margin_train, margin_test, paths)
