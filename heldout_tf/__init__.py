"""heldout_tf: use and reproduce the released held-out training checkpoints,
and make such collections for any data and model.

  from heldout_tf import estimates
  from heldout_tf.collection import experiments
  exp = experiments.get("cifar10-inception")
  runs = estimates.load_runs(root, exp.name)

One subpackage per stage; each imports only the ones listed before it
(`import heldout_tf` loads nothing, and no stage loads TensorFlow at import
time unless its own work needs it):

  core        foundations: errors, atomic files, the hardened npz reader,
              sizes, progress, figures, precision, Ray, lazy front doors
  data        ImageData and its sources (tfds, npz, MNIST), noise, the
              released runs' evaluation pipelines
  models      architectures, the one builder, calling any module
  collection  a collection on disk: layout, aux arrays, signals, the
              experiments registry, the store, canonical blocks, rules,
              the train loop (local or Ray), strict checkpoints,
              re-evaluation, exports
  training    recipes, trainers, the workflow that makes a collection
  estimates   memorization, influence, C-scores; published scores
  quality     data-quality scores, detection, removal ablations
  report      one browsable HTML page per collection
  archive     the released archives: stream, verify, extract
  cli         the `heldout` command and its subcommands (thin: parse
              flags, call one library function, print)
  synthetic   offline stand-ins for tests and benchmarks
"""

__version__ = "0.1.0"

STAGES = ("core", "data", "models", "collection", "training", "estimates",
          "quality", "report", "archive", "cli", "synthetic")

from heldout_tf.core import lazy  # noqa: E402  (no TensorFlow)
from heldout_tf.core.errors import HeldoutError  # noqa: E402

__getattr__, __dir__, _stages = lazy.front_door(
    __name__, {stage: () for stage in STAGES})
__all__ = ["HeldoutError"] + _stages
