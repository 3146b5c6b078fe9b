"""Memorization, influence and C-score estimates from a collection of runs.

With runs r, mask M[r, i] (run r trained on training example i) and
correctness C_train[r, i], C_test[r, j] (Feldman & Zhang 2020; Jiang et al.
2021):

  mem[i]     = mean_r{C_train[r,i] | M[r,i]} - mean_r{C_train[r,i] | !M[r,i]}
  infl[j, i] = mean_r{C_test[r,j]  | M[r,i]} - mean_r{C_test[r,j]  | !M[r,i]}
  cscore[i]  = mean_r{C_train[r,i] | !M[r,i]}   (held-out accuracy)

Every estimate is a ratio of integer counts. The counts are computed exactly
(0/1 float32 matrix products are exact while counts stay below 2**24) and the
ratios in float64, so results match a plain float64 computation. Where an
example was never held out (or never trained on) its estimate is NaN.

Arrays: `mask` and `correct_train` are bool `[runs, n_train]`, `correct_test`
bool `[runs, n_test]`, columns in canonical example order.

Modules: `counting` (exact counts; `Counts`, `CountsByRatio`, `counts_for`),
`estimators` (memorization, influence, pairs, C-scores from matrices),
`targets` (the same differences of means of a run's margin or label
probability, with Welch's standard errors), `planning` (the run planner:
runs needed for a standard error), `loading` (`Runs`, `load_runs`,
`load_runs_from`; `TARGETS`), `pipeline` (`compute`,
`compute_from_counts`), `reporting` (`summary` with standard errors,
`memorization_order`, `save_*`), `on_ray` (the same estimates on a Ray
cluster, `estimate_on_ray`; imported on use), `published` (the papers'
score files, read strictly), `comparison` (ours beside them), `figures`
(memorization examples, influence pairs, histogram) and `workflow`
(`estimate_collection`: a collection's estimates, pairs and figures
written beside its runs). Attribution on margins (imported on use):
`regression` (ridge and l1 fitted for many targets at once), `datamodels`
(linear datamodels of a collection, streamed over blocks of test
examples), `attributions` (attributions to judge: dense, blocks, pairs,
score files, the built-in methods), `tracin` (TracIn train x test on the
last layer from trajectory checkpoints), `lds` (the linear datamodeling
score of any attribution). Sharded
use (map over run shards, sum the counts):

  total = sum((counts_for(load_runs_from(shard)) for shard in shards),
              CountsByRatio())
  result = compute_from_counts(total, ("mem", "cscores"), n_test=n_test)

No TensorFlow is imported (`tracin` imports it to restore checkpoints,
when it runs).
"""

from heldout_tf.estimates.counting import Counts
from heldout_tf.estimates.counting import counts
from heldout_tf.estimates.counting import counts_by_ratio
from heldout_tf.estimates.counting import counts_for
from heldout_tf.estimates.counting import CountsByRatio
from heldout_tf.estimates.counting import EstimateError
from heldout_tf.estimates.counting import MAX_EXACT_RUNS
from heldout_tf.estimates.estimators import cscores
from heldout_tf.estimates.estimators import cscores_by_ratio
from heldout_tf.estimates.estimators import DEFAULT_MEMORY_BUDGET
from heldout_tf.estimates.estimators import high_influence_pairs
from heldout_tf.estimates.estimators import influence
from heldout_tf.estimates.estimators import influence_bytes
from heldout_tf.estimates.estimators import memorization
from heldout_tf.estimates.estimators import merge_pairs
from heldout_tf.estimates.estimators import multi_ratio_cscores
from heldout_tf.estimates.estimators import pairs_in_block
from heldout_tf.estimates.loading import find_runs
from heldout_tf.estimates.loading import load_runs
from heldout_tf.estimates.loading import load_runs_from
from heldout_tf.estimates.loading import Runs
from heldout_tf.estimates.loading import TARGETS
from heldout_tf.estimates import planning
from heldout_tf.estimates import targets
from heldout_tf.estimates.pipeline import compute
from heldout_tf.estimates.pipeline import compute_from_counts
from heldout_tf.estimates.pipeline import DEFAULT_WHAT
from heldout_tf.estimates.pipeline import DEFAULT_WHAT_OF_VALUES
from heldout_tf.estimates.pipeline import parse_what
from heldout_tf.estimates.pipeline import WHAT
from heldout_tf.estimates.reporting import memorization_order
from heldout_tf.estimates.reporting import memorization_se
from heldout_tf.estimates.reporting import save_cscores
from heldout_tf.estimates.reporting import save_estimates
from heldout_tf.estimates.reporting import save_pairs
from heldout_tf.estimates.reporting import summary
from heldout_tf.estimates.reporting import uncertainty
