"""Tests of heldout_tf.quality.scores and heldout_tf.quality.detection on toy problems."""

import numpy as np
import pytest
from sklearn import metrics as sk_metrics

from heldout_tf.quality import detection
from heldout_tf.core import errors
from heldout_tf import estimates
from heldout_tf.quality import scores as scores_lib
from heldout_tf.collection import signals

N, C = 6, 3
LABELS = np.array([0, 1, 2, 0, 1, 2])


def _run(subset, margin, tracin, probs, forget, epochs=2, ssft_epochs=3):
  subset = np.array(subset)
  heldout = np.setdiff1d(np.arange(N), subset)
  return signals.RunSignals(
      n_train=N, num_classes=C, epochs=epochs, learning_rate=0.1,
      subset=subset, margin_sum=np.array(margin, float),
      correct_epochs=np.zeros(len(subset), np.int32),
      tracin_sum=np.array(tracin, float), heldout=heldout,
      heldout_probs=np.array(probs, np.float32), ssft_epochs=ssft_epochs,
      forget_epoch=np.array(forget, np.int32))


@pytest.fixture
def toy():
  """Three runs; example 5 is never held out, example 4 never trained on."""
  runs = [
      _run([0, 1, 5], [2.0, -1.0, 4.0], [0.2, 0.8, 0.1],
           [[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.5, 0.25, 0.25]],
           [4, 0, 4]),
      _run([2, 3, 5], [1.0, 3.0, 0.5], [0.3, 0.1, 0.5],
           [[0.2, 0.7, 0.1], [0.3, 0.3, 0.4], [0.1, 0.8, 0.1]],
           [2, 4, 1]),
      _run([0, 2, 5], [1.0, -2.0, 1.0], [0.4, 0.9, 0.3],
           [[0.1, 0.6, 0.3], [0.9, 0.05, 0.05], [0.2, 0.2, 0.6]],
           [3, 1, 4]),
  ]
  totals = signals.Totals.zeros(N, C)
  for r in runs:
    totals.add(r)
  mask = np.zeros([3, N], bool)
  for k, r in enumerate(runs):
    mask[k, r.subset] = True
  correct = np.array([[1, 0, 1, 1, 0, 1], [0, 1, 1, 1, 1, 1],
                      [1, 1, 0, 0, 1, 1]], bool)
  return runs, totals, mask, correct


def test_scores_equal_direct_computation(toy):
  runs, totals, mask, correct = toy
  got = scores_lib.compute(mask, correct, totals, LABELS)
  assert tuple(got.values) == scores_lib.SCORES
  v = got.values
  # Example 0: trained by runs 0 and 2 (2 epochs each).
  assert v["tracin"][0] == pytest.approx((0.2 + 0.4) / 2)
  assert v["aum"][0] == pytest.approx(-(2.0 + 1.0) / 4)
  assert v["ssft"][0] == pytest.approx(1 - (4 / 4 + 3 / 4) / 2)
  # Example 1: held out by run 1 (its 2nd held-out row) and run 2 (1st):
  # the mean probability of its label, 1.
  p1 = (0.3 + 0.6) / 2
  assert v["loss"][1] == pytest.approx(-np.log(p1), rel=1e-6)
  # Never trained on (4): training signals NaN; never held out (5): NaN.
  for name in ("tracin", "aum", "ssft", "memorization"):
    assert np.isnan(v[name][4])
  for name in ("loss", "cscore", "confident_learning", "memorization"):
    assert np.isnan(v[name][5])
  assert got.num_nan()["memorization"] == 2
  arrays = got.arrays()
  assert arrays["num_nan_loss"] == 1 and "memorization_se" in arrays


def test_memorization_and_cscore_reuse_estimates_with_standard_errors(toy):
  _, totals, mask, correct = toy
  got = scores_lib.compute(mask, correct, totals, LABELS)
  np.testing.assert_array_equal(got.values["memorization"],
                                estimates.memorization(mask, correct))
  np.testing.assert_array_equal(got.values["cscore"],
                                1 - estimates.cscores(mask, correct))
  # Example 0: in-runs 0, 2 (both correct), out-run 1 (wrong).
  assert got.standard_errors["memorization"][0] == 0.0
  # Example 2: in-runs 1 (correct) and 2 (wrong): p=1/2 over 2; out 0: 1.
  assert got.standard_errors["memorization"][2] == pytest.approx(
      np.sqrt(0.25 / 2))
  assert got.standard_errors["cscore"][2] == 0.0
  assert np.isnan(got.standard_errors["cscore"][5])


def test_confident_learning_is_cleanlab_on_out_of_sample_probs(toy):
  from cleanlab import rank
  _, totals, mask, correct = toy
  got = scores_lib.compute(mask, correct, totals, LABELS)
  held = totals.n_out > 0
  probs = totals.prob_sum[held] / totals.n_out[held, None]
  probs = probs / probs.sum(axis=1, keepdims=True)
  want = 1 - rank.get_label_quality_scores(LABELS[held], probs)
  np.testing.assert_allclose(got.values["confident_learning"][held], want)


def test_bad_inputs_raise_heldout_errors(toy):
  _, totals, mask, correct = toy
  with pytest.raises(scores_lib.ScoresError, match="labels"):
    scores_lib.compute(mask, correct, totals, LABELS[:5])
  with pytest.raises(scores_lib.ScoresError, match=r"\[0, 3\)"):
    scores_lib.compute(mask, correct, totals, LABELS + 1)
  with pytest.raises(scores_lib.ScoresError, match="unknown score"):
    scores_lib.compute(mask, correct, totals, LABELS, names=("nope",))
  with pytest.raises(errors.HeldoutError, match=r"\(2, 7\).*6 training"):
    scores_lib.compute(np.zeros([2, 7], bool), np.zeros([2, 7], bool),
                       totals, LABELS)


# ---------------------------------------------------------------- detection --


def test_metrics_equal_sklearn_and_nan_ranks_last():
  rng = np.random.default_rng(0)
  score = rng.normal(size=200)
  noisy = rng.choice(200, 20, replace=False)
  score[noisy] += 1.0
  truth = np.zeros(200, bool)
  truth[noisy] = True
  got = detection.metrics(score, noisy)
  assert got["auc"] == pytest.approx(sk_metrics.roc_auc_score(truth, score))
  assert got["ap"] == pytest.approx(
      sk_metrics.average_precision_score(truth, score))
  top = np.argsort(-score)[:20]
  assert got["precision_at_k"] == truth[top].mean() == got["recall_at_k"]
  # A NaN score never counts as a detection, even on a noisy example.
  with_nan = score.copy()
  with_nan[noisy[0]] = np.nan
  assert detection.ranking(with_nan)[-1] == noisy[0]
  assert detection.metrics(with_nan, noisy)["auc"] < got["auc"]
  assert np.isnan(detection.metrics(score, [])["auc"])


def test_precision_at_k_and_ties_by_index():
  score = np.array([0.5, 0.9, 0.9, 0.1, np.nan])
  np.testing.assert_array_equal(detection.ranking(score), [1, 2, 0, 3, 4])
  np.testing.assert_array_equal(
      detection.ranking(score, tiebreak=[0, 1, 2, 0, 0]), [2, 1, 0, 3, 4])
  np.testing.assert_allclose(detection.precision_at(score, [2, 3], [1, 2, 4]),
                             [0, 0.5, 0.5])


def test_removal_sets_and_rows():
  scores = {"a": np.arange(10.0), "b": -np.arange(10.0)}
  removals = detection.removal_sets(scores, [0.2, 0.5], seed=1)
  assert [(r.method, r.fraction) for r in removals] == [
      ("a", 0.2), ("b", 0.2), ("random", 0.2), ("a", 0.5), ("b", 0.5),
      ("random", 0.5)]
  np.testing.assert_array_equal(removals[0].removed, [8, 9])
  np.testing.assert_array_equal(removals[1].removed, [0, 1])
  assert len(removals[2].removed) == 2
  again = detection.removal_sets(scores, [0.2, 0.5], seed=1)
  np.testing.assert_array_equal(again[2].removed, removals[2].removed)
  np.testing.assert_array_equal(detection.kept(10, removals[0]), range(8))
  rows = detection.removal_rows(removals[:2], [[0.9, 0.7], [0.5]], [9, 1])
  assert rows[0] == dict(method="a", fraction=0.2, accuracy_mean=0.8,
                         accuracy_sd=pytest.approx(np.std([0.9, 0.7],
                                                          ddof=1)),
                         num_removed=2, noisy_removed=1)
  assert rows[1]["accuracy_sd"] == 0.0
  assert set(rows[0]) == set(detection.REMOVAL_COLUMNS)


@pytest.mark.parametrize("text", ["", "0", "1.5", "a,b", "0.1,-0.2"])
def test_bad_removal_fractions(text):
  with pytest.raises(errors.UsageError, match="--removal_fractions"):
    detection.parse_fractions(text)


def test_missing_cleanlab_is_a_clear_error(monkeypatch):
  import builtins  # pylint: disable=g-import-not-at-top
  real_import = builtins.__import__

  def no_cleanlab(name, *args, **kwargs):
    if name.startswith("cleanlab"):
      raise ImportError("No module named 'cleanlab'")
    return real_import(name, *args, **kwargs)

  monkeypatch.setattr(builtins, "__import__", no_cleanlab)
  totals = signals.Totals.zeros(4, 3)
  totals.n_out[:] = 1
  totals.prob_sum[:] = 1 / 3
  with pytest.raises(scores_lib.MissingExtraError, match=r"\.\[quality\]"):
    scores_lib.confident_learning(totals, np.zeros(4, int))
