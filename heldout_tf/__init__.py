"""heldout_tf: use and reproduce the released held-out training checkpoints,
and make such collections for any data and model.

  import heldout_tf as ht
  exp = ht.experiments.get("cifar10-inception")
  runs = ht.estimates.load_runs(root, exp.name)

Modules, one concept each (imported on first use, so `import heldout_tf`
and the download path never load TensorFlow). Commands (`heldout X`,
`python -m heldout_tf.X`) are thin layers over them: `download`, `evaluate`,
`estimate`, `export`, `train`, `quality`, `report` (see `commands`).

- the experiments: `experiments` (the registry: the released three and the
  kit's own), `released` (their archives);
- get the archives: `archive` (stream, verify, extract);
- the collection on disk: `layout` (every file name, parsed in one place;
  run-id and ratio lists), `runs` (read/write `aux_arrays.npz`);
- models: `models` (Sonnet builders matching the checkpoints, ResNet-9, a
  user's own module), `checkpoints` (strict, all-or-nothing restore; robust
  save), `exports` (ONNX, safetensors, npz);
- evaluation: `data`, `evaluation` (re-evaluate and cross-check many runs);
- estimates: `estimates` (memorization, influence, C-scores), `published`
  (the papers' score files), `comparison` (them side by side with ours);
- making collections: `collection` (the store, canonical blocks, the rules
  for flags versus the recorded config, and the one `train` loop, locally
  or on Ray), `image_data` (tfds, npz, MNIST), `mnist` (tfds MNIST or the
  embedded offline digits), `recipes` (training settings as data),
  `model_training` (one Sonnet model at a time, resumable, mixed
  precision), `model_blocks` (its block trainer: collections of any data and
  model), `training` (many subset MLPs at once), `hardware` (precision
  choice), `raycluster` (Ray connection and tasks, shared with
  `estimates.on_ray`);
- data quality: `noise` (noise kinds to inject), `signals`, `scores`,
  `detection`, `removal` (the removal ablation), `quality_figures`,
  `quality_scores` (the workflow: scores, detection, ablation and figures
  of any collection trained with signals); `report` (one browsable HTML
  page per collection);
- plumbing: `errors` (`HeldoutError`, the base of every input error),
  `npz` (the one hardened npz/npy reader), `files` (atomic writes, directory
  locks), `figures` (the PNG writer), `sizes`, `progress`, `cli`;
  `synthetic` (offline stand-ins for tests and benchmarks).
"""

import importlib

__version__ = "0.1.0"

__all__ = [
    "HeldoutError",
    "archive", "checkpoints", "cli", "collection", "comparison", "data",
    "detection", "errors", "estimates", "evaluation", "experiments",
    "exports", "figures", "files", "hardware", "image_data", "layout",
    "mnist", "model_blocks", "model_training", "models", "noise", "npz",
    "progress", "published", "quality_figures", "quality_scores",
    "raycluster", "recipes", "released", "removal", "report", "runs",
    "scores", "signals", "sizes", "synthetic",
    "training",
]

from heldout_tf.errors import HeldoutError  # noqa: E402  (no TensorFlow)


def __getattr__(name):
  """Imports submodules lazily: `heldout_tf.estimates` on first access."""
  if name in __all__:
    module = importlib.import_module(f"heldout_tf.{name}")
    globals()[name] = module
    return module
  raise AttributeError(f"module 'heldout_tf' has no attribute {name!r}")


def __dir__():
  return sorted(set(globals()) | set(__all__))
