"""A collection's estimates and the files beside its runs: the estimate
stage of the MNIST reproduction, for any collection the kit made.

  result, paths = workflow.estimate_collection(store, num_runs=512)

reads runs 0..num_runs-1 of `store` (exactly those: a missing, unfinished
or extra run is refused), rebuilds the data they were trained on from the
recorded config (`collection.provenance`, fingerprint checked), computes
memorization, high-influence pairs and C-scores with the labels the runs
trained with, and writes next to the runs of that ratio:

  estimates.npz                                  (`estimates.save_estimates`)
  <dataset>_high_infl_pairs_infl<t>_mem<m>.npz   (the published format)
  figures/memorization_examples.png, high_influence_pairs.png,
          memorization_histogram.png
"""

import os
from typing import Dict, Tuple

import numpy as np

from heldout_tf.collection import layout
from heldout_tf.collection import provenance
from heldout_tf.core import errors
from heldout_tf.estimates import figures
from heldout_tf.estimates import loading
from heldout_tf.estimates import pipeline
from heldout_tf.estimates import reporting
from heldout_tf.estimates.counting import EstimateError

_FINISH_HINT = ("Finish them (re-run the same training command; each "
                "--shard i/n), then estimate.")


def estimate_collection(store, num_runs: int, *, infl_threshold=0.15,
                        mem_threshold=0.25, data=None, noisy=None,
                        draw_figures: bool = True, progress: bool = True
                        ) -> Tuple[dict, Dict[str, object]]:
  """Estimates runs 0..num_runs-1 of `store` (a `collection.Store`) and
  writes the files of the module docstring.

  Args:
    store: the collection (one experiment at one ratio).
    num_runs: exactly these runs must be finished, and no others exist.
    infl_threshold, mem_threshold: the high-influence pairs' thresholds.
    data, noisy: the runs' data and its `noise.NoisyTrainSet`, when the
      caller has them (else rebuilt from the recorded config).
    draw_figures: also write the figures.
    progress: show progress bars.

  Returns:
    `(result, paths)`: `estimates.compute`'s dict plus `noisy_idx`,
    `clean_train_labels`, `test_labels`; the paths written by kind
    ('estimates', 'pairs', 'figures': a list).
  """
  config = store.require_config()
  store.check_complete(num_runs, hint=_FINISH_HINT)
  if data is None:
    data, noisy = provenance.load_recorded(config, store.config_path)
  runs = loading.load_runs(store.root, store.experiment, [store.ratio],
                           progress=progress)
  if (runs.n_train, runs.n_test) != (len(data.train_labels),
                                     len(data.test_labels)):
    raise EstimateError(
        f"{store.path}: the runs cover {runs.n_train} training / "
        f"{runs.n_test} test examples, the data {len(data.train_labels)} / "
        f"{len(data.test_labels)}")
  result = pipeline.compute(
      runs, what=("mem", "pairs", "cscores"), infl_threshold=infl_threshold,
      mem_threshold=mem_threshold, labels=data.train_labels,
      progress=progress)
  labels = np.asarray(data.train_labels, np.int64)
  noisy_idx = (noisy.noisy_idx if noisy is not None
               else np.zeros([0], np.int64))
  result.update(noisy_idx=noisy_idx,
                clean_train_labels=(noisy.clean_labels if noisy is not None
                                    else labels),
                test_labels=np.asarray(data.test_labels, np.int64))
  paths = {"estimates": os.path.join(store.path, layout.ESTIMATES_FILENAME),
           "pairs": os.path.join(store.path, layout.pairs_filename(
               data.name, infl_threshold, mem_threshold)),
           "figures": []}
  with errors.user_path(store.path, "write"):
    reporting.save_estimates(paths["estimates"], result)
    reporting.save_pairs(paths["pairs"], result)
    if draw_figures:
      mem = np.nan_to_num(result["memorization"], nan=0.0)
      paths["figures"] = figures.write_all(
          os.path.join(store.path, layout.FIGURES_DIRNAME), data, mem,
          result, noisy_idx, result["clean_train_labels"])
  return result, paths
