"""A small mnist-mlp collection on the embedded digits, for report tests.

The runs' correctness is simulated (no training): each run trains on a
seeded random half of the first `N_TRAIN` digits; typical examples are
right whether trained on or not, atypical ones mostly only when trained on,
and some test examples follow one training example (high-influence pairs).
The collection's config.json is what `mnist_example.train` records, so the
report finds the same images the runs would have seen.
"""

import os

import numpy as np

from heldout_tf import estimates
from heldout_tf import files
from heldout_tf import layout
from heldout_tf import runs as runs_lib
from heldout_tf import runstore
from heldout_tf import signals as signals_lib
from mnist_example import data as data_lib

EXPERIMENT = "mnist-mlp"
RATIO = 0.5
NUM_RUNS = 24
N_TRAIN = 240
N_TEST = 60
LABEL_NOISE = 0.1


def load_digits():
  """The collection's data: digits with 10 % label noise, cut."""
  return data_lib.first_examples(
      data_lib.load("digits", label_noise=LABEL_NOISE, seed=0), N_TRAIN,
      N_TEST)


def make_collection(root: str, with_scores: bool = True) -> dict:
  """Writes runs (with signals.npz), config.json and (optionally)
  quality/scores.npz.

  Each run's held-out softmax is one-hot on its prediction: the label when
  it is right, another class when wrong. Returns what a test compares the
  page against: the data, the runs' estimates (`estimates.compute`), the
  scores file's arrays and the held-out majority prediction.
  """
  data = load_digits()
  rng = np.random.default_rng(1)
  n, m = N_TRAIN, N_TEST
  typical = rng.uniform(0.0, 1.0, n)
  typical[data.noisy_idx] = 0.05  # Flipped labels: right only if trained.
  partner = rng.integers(0, n, m)  # Test j follows training example partner.
  follows = rng.uniform(size=m) < 0.3
  votes = np.zeros((n, data_lib.NUM_CLASSES), np.int64)
  for r in range(NUM_RUNS):
    subset = np.sort(rng.choice(n, n // 2, replace=False))
    mask = np.zeros(n, bool)
    mask[subset] = True
    correct = np.where(mask, rng.uniform(size=n) < 0.97,
                       rng.uniform(size=n) < typical)
    correct_test = np.where(follows, mask[partner],
                            rng.uniform(size=m) < 0.8)
    removed = np.flatnonzero(~mask)
    runs_lib.write_aux(
        layout.run_dir(root, EXPERIMENT, RATIO, r),
        correctness={"train": correct[subset], "removed": correct[removed],
                     "test": correct_test},
        index={"train": subset, "removed": removed, "test": np.arange(m)},
        subsample_idx=subset)
    wrong = (data.train_labels[removed] + rng.integers(
        1, data_lib.NUM_CLASSES, len(removed))) % data_lib.NUM_CLASSES
    predicted = np.where(correct[removed], data.train_labels[removed], wrong)
    votes[removed, predicted] += 1
    probs = np.eye(data_lib.NUM_CLASSES, dtype=np.float32)[predicted]
    signals_lib.RunSignals(
        n_train=n, num_classes=data_lib.NUM_CLASSES, epochs=1,
        learning_rate=0.1, subset=subset, margin_sum=np.zeros(len(subset)),
        correct_epochs=np.zeros(len(subset), np.int32),
        tracin_sum=np.zeros(len(subset)), heldout=removed,
        heldout_probs=probs).save(signals_lib.signals_path(
            layout.run_dir(root, EXPERIMENT, RATIO, r)))
  fingerprint = runstore.fingerprint(data.train_labels, data.test_labels,
                                     data.train_images[:64])
  config = {"dataset": "digits", "label_noise": LABEL_NOISE, "seed": 0,
            "train_size": n, "test_size": m, "data_fingerprint": fingerprint,
            "hidden": [512, 256], "num_classes": 10, "ratio": RATIO,
            "epochs": 10, "batch_size": 128, "learning_rate": 0.1,
            "group_size": 8, "precision": "float32"}
  store = runstore.RunStore(root, EXPERIMENT, RATIO)
  store.record_config(config)
  runs = estimates.load_runs(root, EXPERIMENT, progress=False)
  result = estimates.compute(runs, ("mem", "pairs", "cscores"),
                             progress=False)
  prediction = np.where(votes.sum(axis=1) > 0, np.argmax(votes, axis=1), -1)
  out = {"data": data, "result": result, "runs": runs, "scores": None,
         "prediction": prediction}
  if with_scores:
    scores = {
        "memorization": result["memorization"],
        "cscore": 1.0 - result["cscores"],
        "loss": np.round(rng.exponential(1.0, n), 2),  # Ties on purpose.
        "aum": rng.normal(0.0, 1.0, n),
        "labels": data.train_labels, "clean_labels": data.clean_train_labels,
        "noisy_idx": data.noisy_idx, "noise": np.array("label:0.1")}
    scores["aum"][:3] = np.nan  # Undefined for a few examples.
    path = os.path.join(store.path, "quality", "scores.npz")
    files.save_npz(path, **scores)
    out["scores"] = scores
    out["scores_path"] = path
  return out
