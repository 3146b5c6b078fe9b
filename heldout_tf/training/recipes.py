"""Training recipes, written once as data.

A `Recipe` is everything a run's training depends on besides the data, the
model, the subset ratio and the run id: epochs, batch size, optimizer,
learning-rate schedule, regularisation and augmentation. `get(name)`
returns one of `RECIPES`; `Recipe.sources` says, per setting, where it
comes from ('paper: ...' or 'ours: ...'), so the docs can say which
settings are the papers' and which the kit's.

Recipes:
- 'mnist-mlp': the MNIST reproduction of the memorization paper (MLP
  784-512-256-10, SGD momentum 0.9, lr 0.1, batch 128, 10 epochs; the
  `mnist_example.train` paper preset).
- 'released': SmallInception on CIFAR, as far as the released runs and
  DESIGN.md state it (the data pipeline: `uint8 / 255`, pad-4 random crop,
  flip, evaluation batch 200) and SGD momentum 0.9 (Zhang et al. 2017);
  the rest is not in the released code and is the kit's own: a peak rate
  of 0.01 after the triangular warm-up (the global max-pool head feeds its
  linear layer features with |f|^2 in the thousands at initialization, so
  its step is ~lr * |f|^2: a peak of 0.1 leaves the model at chance), and
  batch-norm decay 0.9 (Sonnet's 0.99 lags the weights in short runs:
  0.824 against 0.910 test accuracy on the digits in 4 epochs).
  Measured in benchmarks/RESULTS-small_inception_recipe.md.
- 'resnet9': the datamodels ResNet-9 recipe (24 epochs, batch 512, SGD
  nesterov momentum 0.9, triangular lr peaking at 0.5 at epoch 5, weight
  decay 5e-4, label smoothing 0.1, flip + 2-pixel translate + cutout 4).
"""

import dataclasses
from typing import Dict, Optional

import numpy as np

from heldout_tf.core import errors
from heldout_tf.training import fields

SCHEDULES = ("constant", "triangular")


@dataclasses.dataclass(frozen=True)
class Recipe:
  """How every run of a collection trains.

  Attributes:
    name: the recipe's name.
    model: the model it is written for (a `models.build` name).
    epochs: training epochs.
    batch_size: examples per step (the last step of an epoch may be
      smaller).
    learning_rate: the constant rate, or the schedule's peak.
    schedule: 'constant', or 'triangular' (per step: linear from 0 at step 0
      to `learning_rate` at `peak_epoch`, then linear to 0 at the end).
    peak_epoch: where the triangular schedule peaks (in epochs).
    momentum: SGD momentum (0: plain SGD).
    nesterov: Nesterov momentum.
    weight_decay: L2 coefficient added to every gradient (`grad + wd * w`,
      PyTorch's SGD weight decay), 0 for none.
    label_smoothing: softmax cross-entropy label smoothing.
    flip: random left-right flips.
    translate: random translation by up to this many pixels (zero padding;
      pad-4-random-crop is `translate=4`).
    cutout: side of a zeroed random square (0: none).
    bn_decay: the models' batch-norm moving-average decay (None: the
      model's default).
    eval_batch_size: batch size of the recorded evaluation (a collection
      keeps the one it recorded: `training.workflow.make`).
    sources: per field, 'paper: ...' or 'ours: ...'.
  """
  name: str
  model: str
  epochs: int
  batch_size: int
  learning_rate: float
  schedule: str = "constant"
  peak_epoch: float = 0.0
  momentum: float = 0.9
  nesterov: bool = False
  weight_decay: float = 0.0
  label_smoothing: float = 0.0
  flip: bool = False
  translate: int = 0
  cutout: int = 0
  bn_decay: Optional[float] = None
  eval_batch_size: int = 200
  sources: Dict[str, str] = dataclasses.field(default_factory=dict,
                                               compare=False)

  def __post_init__(self):
    for key, field in RECIPE_FIELDS.items():
      if key == "bn_decay" and self.bn_decay is None:
        continue  # None: the model's own default.
      problem = field.problem(getattr(self, key))
      if problem:
        raise errors.UsageError(f"recipe {self.name}: {key} {problem}")

  @property
  def augments(self) -> bool:
    return bool(self.flip or self.translate or self.cutout)

  def steps_per_epoch(self, subset_size: int) -> int:
    return -(-int(subset_size) // self.batch_size)

  def learning_rates(self, subset_size: int) -> np.ndarray:
    """float32 `[epochs * steps_per_epoch]`: the rate of every step."""
    steps = self.steps_per_epoch(subset_size)
    total = self.epochs * steps
    if self.schedule == "constant":
      return np.full([total], self.learning_rate, np.float32)
    position = np.arange(total, dtype=np.float64) / steps  # In epochs.
    peak = min(float(self.peak_epoch), float(self.epochs))
    rates = np.interp(position, [0.0, peak, float(self.epochs)],
                      [0.0, self.learning_rate, 0.0])
    return rates.astype(np.float32)

  def config(self) -> dict:
    """The settings as JSON values (for a collection's recorded config)."""
    values = dataclasses.asdict(self)
    del values["sources"]
    return values

  def replace(self, **changes) -> "Recipe":
    """A copy with `changes` (e.g. fewer epochs for a quick run); changed
    settings are marked 'ours: changed from ...'.

    Other `epochs` squeeze (or stretch) a triangular schedule into the new
    length, its shape kept: `peak_epoch` scales with the epochs unless
    `changes` sets it too. A 40-epoch schedule peaking at epoch 8, run for
    2 epochs, peaks at 0.4 and decays to 0 at the end of epoch 2.
    """
    unknown = sorted(set(changes) - set(self.config()))
    if unknown:
      raise errors.UsageError(f"recipe {self.name}: no setting {unknown[0]!r}")
    epochs = changes.get("epochs", self.epochs)
    if (self.schedule == "triangular" and "peak_epoch" not in changes
        and isinstance(epochs, int) and epochs > 0 and epochs != self.epochs):
      changes["peak_epoch"] = self.peak_epoch * epochs / self.epochs
    sources = dict(self.sources)
    for key, value in changes.items():
      if value != getattr(self, key):
        sources[key] = f"ours: changed from {getattr(self, key)!r}"
    return dataclasses.replace(self, sources=sources, **changes)

  def describe(self) -> str:
    """The recipe in use, its settings grouped by where they come from
    (`sources`; 'kit default' where no source is named), e.g.

      Recipe mnist-mlp (written for mlp):
        paper: memorization paper's MNIST setup (DESIGN.md): epochs 10, ...
        kit default: schedule constant, ...
    """
    groups = {}
    for key, value in self.config().items():
      if key in ("name", "model"):
        continue
      shown = "none" if value is None else value
      source = self.sources.get(key, "kit default")
      groups.setdefault(source, []).append(f"{key} {shown}")
    lines = [f"Recipe {self.name} (written for {self.model}):"]
    lines += [f"  {source}: {', '.join(settings)}"
              for source, settings in groups.items()]
    return "\n".join(lines)


_Field = fields.Field
# Every recipe setting's type and range (flags, library values and
# recorded configs are all checked against it).
RECIPE_FIELDS = {
    "name": _Field("str"),
    "model": _Field("str"),
    "epochs": _Field("int", 1, fields.MAX_EPOCHS),
    "batch_size": _Field("int", 1, fields.MAX_BATCH_SIZE),
    "learning_rate": _Field("float", 0.0),
    "schedule": _Field("str", choices=SCHEDULES),
    "peak_epoch": _Field("float", 0.0, fields.MAX_EPOCHS),
    "momentum": _Field("float", 0.0, rule="in [0, 1)",
                       extra_check=lambda v: v < 1.0),
    "nesterov": _Field("bool"),
    "weight_decay": _Field("float", 0.0),
    "label_smoothing": _Field("float", 0.0, rule="in [0, 1)",
                              extra_check=lambda v: v < 1.0),
    "flip": _Field("bool"),
    "translate": _Field("int", 0, 64),
    "cutout": _Field("int", 0, 64),
    "bn_decay": _Field("float", 0.0, 1.0, rule="in (0, 1) or null",
                       extra_check=lambda v: 0.0 < v < 1.0),
    "eval_batch_size": _Field("int", 1, fields.MAX_BATCH_SIZE),
}


def from_config(recorded, where: str = "config.json") -> Recipe:
  """The `Recipe` a collection's config.json records under 'recipe' (every
  setting type- and range-checked: `errors.ConfigError` naming `where` and
  the key otherwise)."""
  if not isinstance(recorded, dict):
    raise errors.ConfigError(f"{where}: key 'recipe' must be a JSON object")
  unknown = sorted(set(recorded) - set(RECIPE_FIELDS))
  missing = sorted(k for k in ("name", "model", "epochs", "batch_size",
                               "learning_rate") if k not in recorded)
  if unknown or missing:
    what = (f"has no setting {unknown[0]!r}" if unknown
            else f"lacks {missing[0]!r}")
    raise errors.ConfigError(f"{where}: key 'recipe' {what}")
  for key, value in recorded.items():
    if key == "bn_decay" and value is None:
      continue
    problem = RECIPE_FIELDS[key].problem(value)
    if problem:
      raise errors.ConfigError(f"{where}: key 'recipe.{key}' {problem}")
  values = dict(recorded)
  for key in ("learning_rate", "peak_epoch", "momentum", "weight_decay",
              "label_smoothing"):
    if key in values:
      values[key] = float(values[key])
  return Recipe(**values)


_MNIST = "paper: memorization paper's MNIST setup (DESIGN.md)"
_DATAMODELS = "paper: datamodels ResNet-9 recipe (DESIGN.md)"
_RELEASED_DATA = "paper: released CIFAR pipeline (DESIGN.md)"
_OURS = "ours: not in the released code"
_ZHANG = "paper: Zhang et al. 2017 (SGD momentum 0.9)"
_EVAL_BATCH = ("ours: the MLP's float32 logits are the same at any batch "
               "here; 5000 records a run ~3x faster than 200 on CPUs")

RECIPES = {
    "mnist-mlp": Recipe(
        name="mnist-mlp", model="mlp", epochs=10, batch_size=128,
        learning_rate=0.1, momentum=0.9, eval_batch_size=5000,
        sources=dict(
            {k: _MNIST for k in ("model", "epochs", "batch_size",
                                 "learning_rate", "momentum")},
            eval_batch_size=_EVAL_BATCH)),
    "released": Recipe(
        name="released", model="small_inception", epochs=40, batch_size=128,
        learning_rate=0.01, schedule="triangular", peak_epoch=8,
        momentum=0.9, nesterov=True, weight_decay=5e-4, flip=True,
        translate=4, bn_decay=0.9,
        sources=dict(
            model=_RELEASED_DATA, flip=_RELEASED_DATA,
            translate=_RELEASED_DATA + " (pad 4, random 32x32 crop)",
            eval_batch_size=_RELEASED_DATA, momentum=_ZHANG,
            learning_rate=("ours: 0.1 (Zhang et al.) leaves it at chance "
                           "(its max-pool head; benchmarks/RESULTS-"
                           "small_inception_recipe.md)"),
            bn_decay=("ours: 0.99 (Sonnet's default) lags in short runs "
                      "(benchmarks/RESULTS-small_inception_recipe.md)"),
            **{k: _OURS for k in ("epochs", "batch_size", "schedule",
                                  "peak_epoch", "nesterov",
                                  "weight_decay")})),
    "resnet9": Recipe(
        name="resnet9", model="resnet9", epochs=24, batch_size=512,
        learning_rate=0.5, schedule="triangular", peak_epoch=5,
        momentum=0.9, nesterov=True, weight_decay=5e-4, label_smoothing=0.1,
        flip=True, translate=2, cutout=4, bn_decay=0.9,
        sources=dict(
            bn_decay="ours: PyTorch's default BatchNorm momentum 0.1",
            **{k: _DATAMODELS for k in (
                "model", "epochs", "batch_size", "learning_rate", "schedule",
                "peak_epoch", "momentum", "nesterov", "weight_decay",
                "label_smoothing", "flip", "translate", "cutout")})),
}


def get(name: str) -> Recipe:
  """The recipe called `name` (a `UsageError` naming --recipe otherwise)."""
  if name not in RECIPES:
    raise errors.UsageError(
        f"--recipe {name!r}: unknown; known: {', '.join(RECIPES)}")
  return RECIPES[name]


# The recipe each built-in model trains with when --recipe is not given.
DEFAULT_FOR = {"mlp": "mnist-mlp", "small_inception": "released",
               "resnet9": "resnet9", "resnet50": "resnet9"}
# One line per recipe, for the error that asks for --recipe.
SUMMARIES = {
    "mnist-mlp": "10 epochs, batch 128, lr 0.1 constant, no augmentation "
                 "(MLPs, small grey images)",
    "released": "40 epochs, batch 128, triangular lr, flips and crops "
                "(SmallInception on CIFAR)",
    "resnet9": "24 epochs, batch 512, triangular lr 0.5, flips, "
               "translations, cutout, label smoothing (ResNet-9 on CIFAR)",
}


def for_model(recipe: str, model: str) -> Recipe:
  """The recipe `--recipe recipe` names, else the built-in `model`'s own
  (`DEFAULT_FOR`; '' : resnet9's). A user module ('pkg.mod:fn') has no
  default: the kit cannot tell an MLP from a ResNet, and a wrong recipe
  trains to chance without a hint, so it needs --recipe (a `UsageError`
  listing them)."""
  if recipe:
    return get(recipe)
  if ":" in model:
    listed = "; ".join(f"{name}: {SUMMARIES[name]}" for name in RECIPES)
    raise errors.UsageError(
        f"--model {model} is your own module: pass --recipe, one of "
        f"{listed} (--epochs, --batch_size and --learning_rate adjust it)")
  return get(DEFAULT_FOR.get(model or "resnet9", "resnet9"))
