"""Every setting of a collection, declared once with its type and range.

A setting reaches the kit three ways: as a flag (`--epochs 3`), as a
library argument (`workflow.Options(epochs=3)`, `Recipe(...)`), and read
back from a collection's recorded `config.json`. All three are checked by
the same `Field`, so a value the flag refuses is refused in a file too:

  fields.check("epochs", 3)                     # 3, or UsageError naming --epochs
  fields.check_recorded(config, "…/config.json")  # ConfigError naming the key

Ranges are generous but bounded: a recorded `group_size: 1000000` or
`epochs: 1e9` is refused before it allocates anything. No TensorFlow.
"""

import dataclasses
import math
import re
from typing import Any, Optional, Sequence

from heldout_tf.core import errors
from heldout_tf.core import hardware

MAX_EPOCHS = 10_000
MAX_BATCH_SIZE = 1 << 16
MAX_GROUP_SIZE = 256
MAX_RUNS = 10_000_000
MAX_CLASSES = 1_000_000
MAX_SEED = (1 << 63) - 1


@dataclasses.dataclass(frozen=True)
class Field:
  """One setting: its kind ('int', 'float', 'bool', 'str'), its range, and
  the flag it is given with (`None`: library and file only)."""
  kind: str
  minimum: Optional[float] = None
  maximum: Optional[float] = None
  choices: Optional[Sequence[Any]] = None
  flag: Optional[str] = None
  # What the range means to a person, when it is not just minimum..maximum
  # (e.g. "0 (all) or >= 2").
  rule: Optional[str] = None
  extra_check: Any = None  # value -> bool, beyond the range.

  def problem(self, value) -> Optional[str]:
    """Why `value` is not valid ('must be ...'), or None."""
    if self.kind == "int":
      if isinstance(value, bool) or not isinstance(value, int):
        return f"must be an integer, got {_shown(value)}"
    elif self.kind == "float":
      if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"must be a number, got {_shown(value)}"
      if not math.isfinite(value):
        return f"must be a finite number, got {_shown(value)}"
    elif self.kind == "bool":
      if not isinstance(value, bool):
        return f"must be true or false, got {_shown(value)}"
    elif self.kind == "str":
      if not isinstance(value, str):
        return f"must be a string, got {_shown(value)}"
    if self.choices is not None and value not in self.choices:
      return (f"must be one of {', '.join(map(str, self.choices))}, got "
              f"{_shown(value)}")
    low_ok = self.minimum is None or value >= self.minimum
    high_ok = self.maximum is None or value <= self.maximum
    extra_ok = self.extra_check is None or self.extra_check(value)
    if not (low_ok and high_ok and extra_ok):
      return f"must be {self.describe()}, got {_shown(value)}"
    return None

  def describe(self) -> str:
    if self.rule:
      return self.rule
    if self.minimum is not None and self.maximum is not None:
      return f"in [{_num(self.minimum)}, {_num(self.maximum)}]"
    if self.minimum is not None:
      return f">= {_num(self.minimum)}"
    return f"<= {_num(self.maximum)}"


def _num(x) -> str:
  return f"{x:g}" if isinstance(x, float) else str(x)


def _shown(value) -> str:
  text = repr(value)
  return text if len(text) <= 60 else text[:57] + "..."


def _positive_ratio(value) -> bool:
  return 0.0 < value <= 1.0


# The flags (and `workflow.Options` fields) that say how a collection is
# made. 0 means "the recipe's" for epochs, batch_size and learning_rate,
# "the recorded one, else the trainer's default" for group_size.
FIELDS = {
    "seed": Field("int", 0, MAX_SEED, flag="--seed"),
    "epochs": Field("int", 0, MAX_EPOCHS, flag="--epochs",
                    rule=f"0 (the recipe's) or 1..{MAX_EPOCHS}"),
    "batch_size": Field("int", 0, MAX_BATCH_SIZE, flag="--batch_size",
                        rule=f"0 (the recipe's) or 1..{MAX_BATCH_SIZE}"),
    "learning_rate": Field("float", 0.0, flag="--learning_rate",
                           rule="0 (the recipe's) or a finite number > 0"),
    "group_size": Field("int", 0, MAX_GROUP_SIZE, flag="--group_size",
                        rule=f"0 (the recorded one, else the trainer's "
                        f"default) or 1..{MAX_GROUP_SIZE}"),
    "checkpoint_every": Field("int", 0, MAX_EPOCHS,
                              flag="--checkpoint_every"),
    "ssft_epochs": Field("int", 0, MAX_EPOCHS, flag="--ssft_epochs"),
    "trajectory_runs": Field("int", -1, MAX_RUNS, flag="--trajectory_runs",
                             rule="-1 (all), 0 (none) or a run count"),
    "train_size": Field("int", 0, extra_check=lambda v: v != 1,
                        flag="--train_size",
                        rule="0 (all) or >= 2: a run must train on some "
                        "examples and hold others out"),
    "test_size": Field("int", 0, flag="--test_size", rule=">= 0 (0: all)"),
    "num_runs": Field("int", 1, MAX_RUNS, flag="--num_runs"),
    "ratio": Field("float", extra_check=_positive_ratio, flag="--ratios",
                   rule="in (0, 1]"),
}

# A collection's recorded config.json: the keys the kit reads back, each
# checked on read (unknown keys are kept as they are). `model_options` is
# checked by `check_recorded` itself, `recipe` by `recipes.from_config`.
RECORDED = {
    "model": Field("str"),
    "ratio": FIELDS["ratio"],
    "seed": FIELDS["seed"],
    "precision": Field("str", choices=hardware.PRECISIONS),
    "group_size": Field("int", 1, MAX_GROUP_SIZE),
    "trainer": Field("str", choices=("group", "stacked")),
    "signals": Field("bool"),
    "ssft_epochs": FIELDS["ssft_epochs"],
    "dataset": Field("str"),
    "source": Field("str"),
    "noise": Field("str"),
    "num_classes": Field("int", 2, MAX_CLASSES),
    "n_train": Field("int", 1),
    "n_test": Field("int", 1),
    "train_size": FIELDS["train_size"],
    "test_size": FIELDS["test_size"],
    "data_fingerprint": Field(
        "str", extra_check=lambda v: re.fullmatch(r"[0-9a-f]{16}", v),
        rule="16 hex digits"),
    "image_shape": None,  # Checked below: [h, w, c] of positive ints.
    "model_variables": None,  # Checked below: {path: shape}.
}


def check(name: str, value, where: Optional[str] = None):
  """`value` if it is valid for setting `name`; else `errors.UsageError`
  naming its flag (or `where`)."""
  field = FIELDS[name]
  problem = field.problem(value)
  if problem:
    raise errors.UsageError(f"{where or field.flag or name} {problem}")
  return value


def _config_error(where: str, key: str, problem: str):
  return errors.ConfigError(f"{where}: key {key!r} {problem}")


def check_recorded(config, where: str) -> dict:
  """`config` (a recorded config.json, parsed) if every key the kit reads
  back has the type and range its flag has; else `errors.ConfigError`
  naming `where` and the key. The recorded recipe is the recipe's own to
  check (`recipes.from_config`, which builds on this module)."""
  if not isinstance(config, dict):
    raise errors.ConfigError(f"{where}: not a JSON object")
  for key, field in RECORDED.items():
    if key not in config or field is None:
      continue
    problem = field.problem(config[key])
    if problem:
      raise _config_error(where, key, problem)
  shape = config.get("image_shape")
  if shape is not None and not (
      isinstance(shape, list) and len(shape) == 3 and
      all(isinstance(d, int) and not isinstance(d, bool) and 1 <= d <= 1 << 16
          for d in shape)):
    raise _config_error(where, "image_shape",
                        f"must be [height, width, channels] of positive "
                        f"integers, got {_shown(shape)}")
  variables = config.get("model_variables")
  if variables is not None and not (
      isinstance(variables, dict) and all(
          isinstance(shape, str) and re.fullmatch(r"scalar|\d+(x\d+)*", shape)
          for shape in variables.values())):
    raise _config_error(where, "model_variables",
                        "must map each variable's path to its shape ('784x512'"
                        f" or 'scalar'), got {_shown(variables)}")
  if "model_options" in config:
    check_model_options(config["model_options"],
                        f"{where}: key 'model_options'", error=errors.ConfigError)
  return config


def check_model_options(options, where: str = "--model_options",
                        error=errors.UsageError) -> dict:
  """`options` if it is a JSON object of plain values (strings, booleans,
  finite numbers, lists of them) with string keys; else `error`."""
  if not isinstance(options, dict):
    raise error(f"{where} must be a JSON object, got {_shown(options)}")

  def plain(value) -> bool:
    if isinstance(value, float):
      return math.isfinite(value)
    if isinstance(value, (bool, int, str)) or value is None:
      return True
    if isinstance(value, list):
      return all(plain(v) for v in value)
    return False

  for key, value in options.items():
    if not isinstance(key, str) or not plain(value):
      raise error(f"{where}: {key!r} must be a string, boolean, finite "
                  f"number or a list of them, got {_shown(value)}")
  return options
