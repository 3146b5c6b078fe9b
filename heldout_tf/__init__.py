"""heldout_tf: use and reproduce the released held-out training checkpoints.

  import heldout_tf as ht
  exp = ht.released.get("cifar10-inception")
  runs = ht.estimates.load_runs(root, exp.name)

Modules, one concept each (imported on first use, so `import heldout_tf`
and the download path never load TensorFlow):

- get the archives: `released` (the three experiments), `archive` (stream,
  verify, extract), `download` (its command line);
- the collection on disk: `layout` (every file name, parsed in one place),
  `runs` (read/write `aux_arrays.npz`);
- models: `models` (Sonnet builders matching the checkpoints), `checkpoints`
  (strict, all-or-nothing restore; robust save), `exports` (ONNX,
  safetensors, npz);
- evaluation: `data`, `evaluation` (re-evaluate and cross-check many runs);
- estimates: `estimates` (memorization, influence, C-scores), `published`
  (the papers' score files, side by side with ours);
- data quality: `signals`, `scores`, `detection`;
- making collections: `collection` (the store, canonical blocks, the rules
  for flags versus the recorded config, and the one `train` loop, locally
  or on Ray), `training` (many subset MLPs at once), `hardware` (precision
  choice), `raycluster` (Ray connection and tasks, shared with
  `estimates.on_ray`);
- plumbing: `errors` (`HeldoutError`, the base of every input error),
  `sizes`, `progress`, `cli`; `synthetic` (offline stand-ins for tests
  and benchmarks).
"""

import importlib

__version__ = "0.1.0"

__all__ = [
    "HeldoutError",
    "archive", "checkpoints", "cli", "collection", "data", "detection",
    "errors", "estimates", "evaluation", "exports", "hardware", "layout",
    "models", "progress", "published", "raycluster", "released", "runs",
    "scores", "signals", "sizes", "synthetic", "training",
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
