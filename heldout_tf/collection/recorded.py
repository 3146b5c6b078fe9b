"""A kit-made collection's recorded model and data: what the commands that
restore its runs (`heldout evaluate`, `heldout export`) rebuild from its
config.json.

  found = recorded.of_ratio(root, "my_digits-mlp", 0.7, model="")
  found.model, found.num_classes, found.image_shape   # 'mlp', 10, (8, 8, 1)
  model = found.build()            # built: the checkpoints restore into it
  data, noisy = found.load_data()  # the data the runs trained on

`heldout train` records the model's name and constructor options, the
data's source, noise, cut, classes, image shape and fingerprint. The model
is rebuilt by `models.recorded_model`'s rule: a built-in name as recorded,
a user module ('pkg.mod:fn') only when the caller names it again (`model`,
the command's --model), never because the file says so. The data comes
back through `provenance.load_recorded` (fingerprint checked). Released
runs have no config.json: `of_ratio` and `of_run_dir` return None for
them, and the experiments registry describes them.
"""

import dataclasses
import os
from typing import Optional, Tuple

from heldout_tf.collection import layout
from heldout_tf.collection import provenance
from heldout_tf.collection.store import Store
from heldout_tf.core import errors
from heldout_tf.models import names

# How the kit feeds images to a model (`data.pipelines.array_split`).
PREPROCESSING = "uint8 image / 255.0, values in [0, 1], float32 [h, w, c]"
MAX_CLASSES = 1_000_000


@dataclasses.dataclass(frozen=True)
class RecordedModel:
  """The model and data a kit collection's config.json records."""
  where: str  # The config.json it was read from.
  model: str  # A `models.MODEL_NAMES` name or 'pkg.mod:fn'.
  options: Tuple  # Sorted (key, value) constructor options.
  num_classes: int
  image_shape: Tuple[int, ...]  # One image, (h, w, c).
  dataset: str  # The recorded source (a `--dataset` value).
  config: dict = dataclasses.field(compare=False, repr=False)

  def build(self):
    """The recorded model, built (its variables exist) on the recorded
    image shape, ready for `checkpoints.restore`."""
    from heldout_tf import models  # pylint: disable=g-import-not-at-top
    model = models.build_model(self.model, self.num_classes,
                               **dict(self.options))
    return models.ensure_built(model, shape=self.image_shape)

  def export_spec(self, experiment: str):
    """The `collection.exports.ModelSpec` of the runs of `experiment`."""
    from heldout_tf.collection import exports  # pylint: disable=g-import-not-at-top
    shape = exports.exported_shape(self.model, self.image_shape)
    how = PREPROCESSING + (", flattened row-major" if len(shape) == 1
                           else "")
    return exports.ModelSpec(experiment, self.model, self.num_classes,
                             str(self.config.get("dataset", self.dataset)),
                             shape, how, self.options)

  def load_data(self, dataset: str = "", data_dir: Optional[str] = None):
    """`(data, noisy)`: the data the runs trained on (recorded noise
    applied, fingerprint checked); `dataset` replaces the recorded source
    (e.g. a moved npz file). See `provenance.load_recorded`."""
    return provenance.load_recorded(self.config, self.where, dataset,
                                    data_dir)


def _positive_ints(value, length: Optional[int] = None) -> bool:
  return (isinstance(value, list) and (length is None or len(value) == length)
          and all(isinstance(v, int) and not isinstance(v, bool) and v > 0
                  for v in value))


def from_config(config: dict, where: str, model: str = "") -> RecordedModel:
  """The `RecordedModel` of a config.json's values (`where` names it in
  errors); `model` is the command's --model ('' : not given)."""
  name = names.recorded_model(config.get("model"), model or None, where)
  options = config.get("model_options", {})
  if not isinstance(options, dict):
    raise errors.ConfigError(f"{where}: key 'model_options' must be a JSON "
                             "object")
  num_classes = config.get("num_classes")
  if (not isinstance(num_classes, int) or isinstance(num_classes, bool)
      or not 2 <= num_classes <= MAX_CLASSES):
    raise errors.ConfigError(f"{where}: key 'num_classes' must be an integer "
                             f"in 2..{MAX_CLASSES}, got {num_classes!r}")
  shape = config.get("image_shape")
  if not _positive_ints(shape, 3):
    raise errors.ConfigError(f"{where}: key 'image_shape' must be [h, w, c] "
                             f"positive integers, got {str(shape)[:40]}")
  return RecordedModel(where, name, tuple(sorted(options.items())),
                       num_classes, tuple(shape),
                       provenance.recorded_dataset(config, where), config)


def of_ratio(root: str, experiment: str, ratio, model: str = ""
             ) -> Optional[RecordedModel]:
  """The recorded model of `<root>/<experiment>/<ratio>`, or None when
  there is no config.json (released runs)."""
  store = Store(root, experiment, ratio)
  config = store.recorded_config()
  if config is None:
    return None
  return from_config(config, store.config_path, model)


def ratio_dir_of(run_dir: str) -> str:
  """The `<ratio>` directory of a run directory, its `checkpoints/`
  directory or a `ckpt-<N>` prefix in it."""
  path = os.path.normpath(os.path.abspath(run_dir))
  if os.path.basename(path).startswith("ckpt-"):
    path = os.path.dirname(path)
  if os.path.basename(path) == layout.CHECKPOINTS_DIRNAME:
    path = os.path.dirname(path)
  return os.path.dirname(path)


def of_run_dir(run_dir: str, model: str = "") -> Optional[RecordedModel]:
  """The recorded model of the collection `run_dir` belongs to (see
  `ratio_dir_of`), or None when there is no config.json beside it."""
  ratio_dir = ratio_dir_of(run_dir)
  ratio = layout.parse_ratio(os.path.basename(ratio_dir))
  experiment_dir = os.path.dirname(ratio_dir)
  if ratio is None:
    return None
  return of_ratio(os.path.dirname(experiment_dir),
                  os.path.basename(experiment_dir), ratio, model)
