"""Model names, without TensorFlow: the built-in names, user modules, and
the rule for a name read back from a collection's config.

  names.check_name("small_inception")   # or 'my_nets:build'
  names.recorded_model(config["model"], given=args.model)

A model has one name everywhere: `--model`, a collection's config.json,
`Experiment.arch`, exports' metadata, `models.build_model`. Commands check
names here before TensorFlow loads.
"""

from typing import Optional

from heldout_tf.core import errors

# The built-in models (`registry.build_model` builds them).
MODEL_NAMES = ("small_inception", "resnet9", "mlp", "resnet50")
# Names earlier versions used: refused, with the name to use instead.
RENAMED = {"inception": "small_inception"}


def is_user_model(name: str) -> bool:
  """Whether `name` is a `module:function` import path."""
  return ":" in name


def check_name(name: str, flag: str = "--model") -> str:
  """`name` if it is a built-in model or a module:function path; a
  `UsageError` naming `flag` otherwise (an old name gets its new one)."""
  if not isinstance(name, str) or not name:
    raise errors.UsageError(f"{flag}: a model name is needed (one of "
                            f"{', '.join(MODEL_NAMES)} or module:function)")
  if is_user_model(name) or name in MODEL_NAMES:
    return name
  if name in RENAMED:
    raise errors.UsageError(f"{flag} {name!r}: this model is called "
                            f"{RENAMED[name]!r}; use that name")
  raise errors.UsageError(
      f"{flag} {name!r}: unknown; use one of {', '.join(MODEL_NAMES)} or "
      "an import path module:function")


def recorded_model(recorded, given: Optional[str] = None,
                   where: str = "config.json") -> str:
  """The model name to build for a collection whose config (`where`)
  records `recorded`, given `--model given` on this command line (None or
  '': not given).

  A built-in name is used as recorded (`given`, if any, must be the same).
  A user module ('pkg.mod:fn') is code: it is imported only when this
  invocation names it again (`given` equal to `recorded`), never because a
  file says so. `errors.ConfigError` otherwise, naming `where`.
  """
  if not isinstance(recorded, str) or not recorded:
    raise errors.ConfigError(f"{where}: key 'model' must be a model name, "
                             f"got {str(recorded)[:80]!r}")
  if is_user_model(recorded):
    if not given:
      raise errors.ConfigError(
          f"{where} records the user module {recorded!r} as its model; it "
          "is imported only when you name it: pass --model "
          f"{recorded} (no code is imported because a file names it)")
  elif recorded not in MODEL_NAMES:
    hint = (f" (an earlier name of {RENAMED[recorded]!r})"
            if recorded in RENAMED else "")
    raise errors.ConfigError(
        f"{where}: key 'model' {recorded[:80]!r} is not a built-in model "
        f"({', '.join(MODEL_NAMES)}) or a module:function path{hint}")
  if given and given != recorded:
    raise errors.ConfigError(
        f"--model {given} differs from the model {recorded!r} recorded in "
        f"{where}")
  return recorded
