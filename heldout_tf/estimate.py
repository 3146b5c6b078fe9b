r"""Computes memorization, influence and C-scores from released-layout runs.

  python -m heldout_tf.estimate --root DIR --experiment NAME --out FILE.npz \
      [--ratios 0.7,...] [--what mem,pairs,cscores] [--infl_threshold 0.15] \
      [--mem_threshold 0.25] [--memory_budget 4GB] [--mmap_dir DIR]

Reads every `<root>/<experiment>/<ratio>/<run>/aux_arrays.npz`, writes the
estimates (see `heldout_tf.estimates.compute` for the keys) atomically to
`--out` and prints a short summary.
"""

from absl import app
from absl import flags

from heldout_tf import estimates

_ROOT = flags.DEFINE_string("root", None, "Directory holding <experiment>/.")
_EXPERIMENT = flags.DEFINE_string("experiment", None,
                                  "Experiment name, e.g. cifar10-inception.")
_OUT = flags.DEFINE_string("out", None, "Output .npz file.")
_RATIOS = flags.DEFINE_list("ratios", None,
                            "Subset ratios to use (default: all on disk).")
_WHAT = flags.DEFINE_list(
    "what", list(estimates.DEFAULT_WHAT),
    "Estimates to compute, from mem,infl,pairs,cscores. 'infl' is the dense "
    "[n_test, n_train] float32 matrix (opt-in: 2.4 GB for MNIST).")
_INFL_THRESHOLD = flags.DEFINE_float("infl_threshold", 0.15,
                                     "Pairs: minimum influence.")
_MEM_THRESHOLD = flags.DEFINE_float("mem_threshold", 0.25,
                                    "Pairs: minimum memorization of the "
                                    "training example.")
_MEMORY_BUDGET = flags.DEFINE_string(
    "memory_budget", estimates.DEFAULT_MEMORY_BUDGET,
    "Working memory for pairs and the dense influence, e.g. 4GB, 512MB.")

_MMAP_DIR = flags.DEFINE_string(
    "mmap_dir", None, "Keep the loaded [runs, examples] matrices in "
    "memory-mapped .npy files in this directory instead of memory (ImageNet "
    "scale: 5.2 GB as bool).")

flags.mark_flags_as_required(["root", "experiment", "out"])


def main(argv):
  del argv
  try:
    what = estimates.parse_what(_WHAT.value)
    estimates.parse_memory(_MEMORY_BUDGET.value)
    ratios = None if _RATIOS.value is None else [float(r)
                                                 for r in _RATIOS.value]
  except ValueError as e:
    raise app.UsageError(str(e)) from e
  try:
    runs = estimates.load_runs(_ROOT.value, _EXPERIMENT.value, ratios,
                               mmap_dir=_MMAP_DIR.value)
    result = estimates.compute(
        runs, what, infl_threshold=_INFL_THRESHOLD.value,
        mem_threshold=_MEM_THRESHOLD.value,
        memory_budget=_MEMORY_BUDGET.value)
  except ValueError as e:  # EstimateError, runs.AuxArraysError.
    raise SystemExit(f"error: {e}") from e
  estimates.save_estimates(_OUT.value, result)
  print(estimates.summary(result))
  print(f"wrote {_OUT.value}")


if __name__ == "__main__":
  app.run(main)
