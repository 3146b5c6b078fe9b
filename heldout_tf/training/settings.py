"""`TrainSettings`: everything a run depends on besides the data and its id.

  settings = TrainSettings(recipes.get("resnet9"), "resnet9", ratio=0.7)
  settings = from_config(config, "…/config.json")  # a collection's own

One value, picklable, checked when made (`errors.UsageError` naming the
flag at fault); `config()` is what a collection records of it, and
`from_config` reads it back.
"""

import dataclasses
from typing import Optional

from heldout_tf import models
from heldout_tf.core import errors
from heldout_tf.core import hardware
from heldout_tf.training import fields
from heldout_tf.training import recipes as recipes_lib

# The engines (`training.engines`): their names, and what each can train.
GROUP, STACKED = "group", "stacked"
ENGINES = (GROUP, STACKED)
STACKED_PRECISIONS = ("float32", "bfloat16")


def stacked_limits(settings):
  """What of `settings` the stacked engine cannot train (words)."""
  limits = []
  if settings.model != "mlp":
    limits.append(f"model {settings.model!r} (only 'mlp')")
  if settings.recipe.augments:
    limits.append("augmentation")
  if settings.precision not in STACKED_PRECISIONS:
    limits.append(f"precision {settings.precision}")
  if settings.signals or settings.ssft_epochs:
    limits.append("signals")
  if settings.trajectory_runs:
    limits.append("trajectories")
  return limits


def unsupported(name: str, settings) -> Optional[str]:
  """Why engine `name` cannot train `settings` (a `TrainSettings`, or
  anything with its fields), or None when it can."""
  if name not in ENGINES:
    return f"engine must be one of {', '.join(ENGINES)}, got {name!r}"
  limits = stacked_limits(settings) if name == STACKED else []
  if not limits:
    return None
  return (f"the {STACKED} engine trains MLPs only, without augmentation, "
          f"float16, signals or trajectories; these settings have "
          f"{', '.join(limits)} (use the {GROUP} engine)")


@dataclasses.dataclass(frozen=True)
class TrainSettings:
  """Everything a run depends on besides the data and its id (picklable).

  Attributes:
    recipe: how to train.
    model: a `models.build` name ('resnet9', 'small_inception', 'mlp',
      'pkg.mod:fn').
    ratio: the share of the training set each run trains on.
    seed: the collection's seed (`heldout_tf.core.seeds`).
    precision: one of `hardware.PRECISIONS` (resolve 'auto' with
      `hardware.resolve_precision` first).
    model_options: keyword arguments of the model's constructor (e.g.
      `{'width': 0.25}` for a small ResNet-9).
    checkpoint_every: save the partial state every this many epochs (0:
      never; the group engine's, see `training.engines`).
    signals: also write each run's per-epoch signals.npz.
    ssft_epochs: second-split epochs after training (with signals).
    trajectory_runs: runs 0..K-1 keep every epoch's checkpoint (-1: all).
    trainer: the engine that trains the runs (one of `ENGINES`,
      `--trainer`; settings it cannot train are refused,
      `unsupported`).
  """
  recipe: recipes_lib.Recipe
  model: str
  ratio: float
  seed: int = 0
  precision: str = "float32"
  model_options: tuple = ()  # Sorted (key, value) pairs.
  checkpoint_every: int = 1
  signals: bool = False
  ssft_epochs: int = 0
  trajectory_runs: int = 0
  trainer: str = "group"

  def __post_init__(self):
    if self.precision not in hardware.PRECISIONS:
      raise errors.UsageError(
          f"--precision must be one of {', '.join(hardware.CHOICES)} "
          f"(resolve 'auto' first), got {self.precision!r}")
    if not 0.0 < self.ratio <= 1.0:
      raise errors.UsageError(f"ratio must be in (0, 1], got {self.ratio}")
    for name in ("seed", "checkpoint_every", "ssft_epochs",
                 "trajectory_runs"):
      fields.check(name, getattr(self, name))
    if self.ssft_epochs and not self.signals:
      raise errors.UsageError("--ssft_epochs needs --signals (second-split "
                              "forgetting is one of the signals)")
    if self.ssft_epochs and self.ratio >= 1.0:
      raise errors.UsageError("--ssft_epochs needs a ratio below 1 (the "
                              "second split is the held-out examples)")
    if isinstance(self.model_options, dict):
      object.__setattr__(self, "model_options",
                         tuple(sorted(self.model_options.items())))
    problem = unsupported(self.trainer, self)
    if problem:
      raise errors.UsageError(problem)

  @property
  def options(self) -> dict:
    """The model's constructor options (with the recipe's `bn_decay`)."""
    options = dict(self.model_options)
    if (self.recipe.bn_decay is not None
        and self.model in ("small_inception", "resnet9")
        and "bn_decay" not in options):
      options["bn_decay"] = self.recipe.bn_decay
    return options

  def config(self) -> dict:
    """JSON values recorded with a collection (all that fixes its runs;
    `ssft_epochs` only when there is a second phase, `trainer` only when
    it is not 'group', so collections made before engines keep
    resuming)."""
    config = {"recipe": self.recipe.config(), "model": self.model,
              "model_options": dict(self.model_options), "ratio": self.ratio,
              "seed": self.seed, "precision": self.precision,
              "checkpoint_every": self.checkpoint_every,
              "signals": self.signals}
    if self.ssft_epochs:
      config["ssft_epochs"] = self.ssft_epochs
    if self.trainer != GROUP:
      config["trainer"] = self.trainer
    return config

  def ssft_recipe(self) -> recipes_lib.Recipe:
    """The second phase's recipe: this recipe's schedule squeezed into
    `ssft_epochs` epochs (same peak rate, batch, optimizer, augmentation;
    the kit's choice, see `RunTrainer.second_split`)."""
    return self.recipe.replace(epochs=self.ssft_epochs)

  def keeps_trajectory(self, run: int) -> bool:
    """Whether run `run` keeps a checkpoint of every epoch."""
    return self.trajectory_runs < 0 or run < self.trajectory_runs


def from_config(config: dict, where: str = "config.json",
                model: str = "") -> TrainSettings:
  """The `TrainSettings` a collection's config.json (`where`) records: its
  recipe, model and options, ratio, seed, precision, signals and trainer
  (every value checked: `errors.ConfigError` naming `where` and the key).

  `model`: --model as given on this command line. A recorded user module
  is imported only when `model` names it (`models.recorded_model`).

  Raises:
    errors.ConfigError: no recipe or model recorded (e.g. a collection
      made by `python -m mnist_example.train`), a bad value, or a user
      module `model` does not name.
  """
  fields.check_recorded(config, where)
  if not isinstance(config.get("recipe"), dict) or not isinstance(
      config.get("model"), str):
    raise errors.ConfigError(
        f"{where}: no 'recipe' and 'model' recorded (collections made by "
        "`heldout train` or `heldout quality --num_runs` record them)")
  try:
    return TrainSettings(
        recipes_lib.from_config(config["recipe"], where),
        models.recorded_model(config["model"], model, where),
        float(config.get("ratio", 1.0)), seed=int(config.get("seed", 0)),
        precision=str(config.get("precision", "float32")),
        model_options=dict(config.get("model_options") or {}),
        signals=bool(config.get("signals", False)),
        ssft_epochs=int(config.get("ssft_epochs", 0)),
        trainer=str(config.get("trainer", GROUP)))
  except errors.UsageError as e:
    raise errors.ConfigError(f"{where}: {e}") from None
