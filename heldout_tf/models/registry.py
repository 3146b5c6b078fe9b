"""Models by name: the one builder, user modules, and helpers any module
needs.

  model = registry.build("resnet9", num_classes=10, width=0.5)
  model = registry.build("my_nets:build", 10)   # a user's own module

`build(name, num_classes, **options)` accepts the built-in names
(`MODEL_NAMES`) and `module:function` import paths; a user module is
imported only when this invocation names it (`recorded_model` is the rule
for names read back from a collection's config).
"""

import importlib
from typing import Optional, Sequence

import sonnet as snt
import tensorflow as tf

from heldout_tf.core import errors
from heldout_tf.models.architectures import MLP
from heldout_tf.models.architectures import ResNet9
from heldout_tf.models.architectures import SmallInception

ARCHS = ("inception", "resnet50", "mlp", "resnet9")
# Command-line model names -> architecture.
MODEL_NAMES = {"small_inception": "inception", "resnet9": "resnet9",
               "mlp": "mlp", "resnet50": "resnet50"}


def build_model(arch: str, num_classes: int, **options) -> snt.Module:
  """Builds `arch` ('inception', 'resnet50', 'mlp' or 'resnet9') with
  `num_classes`; `options` go to the module's constructor (e.g. `width` of
  ResNet-9, `bn_decay`)."""
  if arch not in ARCHS:
    raise errors.UsageError(f"Unknown architecture {arch!r}; known: {ARCHS}")
  try:
    if arch == "inception":
      return SmallInception(num_classes, **options)
    if arch == "resnet50":
      return snt.nets.ResNet50(num_classes=num_classes, **options)
    if arch == "mlp":
      return MLP(num_classes, **options)
    return ResNet9(num_classes, **options)
  except TypeError as e:
    raise errors.UsageError(f"model {arch!r}: bad options {options} "
                            f"({e})") from None


def input_shape(arch: str):
  """Per-example input shape the released models were trained on."""
  shapes = {"inception": (32, 32, 3), "resnet50": (224, 224, 3),
            "mlp": (28, 28, 1), "resnet9": (32, 32, 3)}
  if arch not in shapes:
    raise errors.UsageError(f"Unknown architecture {arch!r}; known: {ARCHS}")
  return shapes[arch]


def arch_of(model: snt.Module) -> Optional[str]:
  """The architecture `build_model` makes `model` for, or None (other
  modules)."""
  if isinstance(model, SmallInception):
    return "inception"
  if isinstance(model, snt.nets.ResNet50):
    return "resnet50"
  if isinstance(model, MLP):
    return "mlp"
  if isinstance(model, ResNet9):
    return "resnet9"
  return None


def is_built(model: snt.Module) -> bool:
  """Whether every linear, convolution and batch-norm layer of `model` has
  created its variables (Sonnet creates them on the first call)."""
  layers = [m for m in (model,) + tuple(model.submodules)
            if isinstance(m, (snt.Linear, snt.Conv2D, snt.BatchNorm))]
  return all(hasattr(m, "scale" if isinstance(m, snt.BatchNorm) else "w")
             for m in layers)


def ensure_built(model: snt.Module, arch: Optional[str] = None,
                 shape: Optional[Sequence[int]] = None) -> snt.Module:
  """Creates `model`'s variables by calling it once on zeros (in evaluation
  mode, so no value changes); does nothing when they exist already.

  `arch` defaults to `arch_of(model)`; `shape` (one image's `(h, w, c)`)
  to `input_shape(arch)`. Any module is built when `shape` is given.
  """
  if is_built(model):
    return model
  if shape is None:
    arch = arch or arch_of(model)
    if arch is None:
      raise errors.UsageError(
          f"cannot build a {type(model).__name__}: not a heldout_tf.models "
          "architecture; call it once on a batch of inputs instead")
    shape = input_shape(arch)
  model(tf.zeros((1,) + tuple(shape)), is_training=False)
  return model


def features_and_logits(model: snt.Module, images, is_training=False):
  """`(features [b, d], logits [b, classes])` of any module, float32.

  Uses the module's own `features_and_logits` when it has one; for other
  modules the features are the logits themselves (the last-layer signals
  then see the logits as that layer's input).
  """
  method = getattr(model, "features_and_logits", None)
  if method is not None:
    features, logits = method(images, is_training=is_training)
  else:
    logits = model(images, is_training=is_training)
    features = logits
  return tf.cast(features, tf.float32), tf.cast(logits, tf.float32)


# ----------------------------------------------------------- user modules --


def is_user_model(name: str) -> bool:
  """Whether `name` is a `module:function` import path."""
  return ":" in name


def load_user_model(path: str, num_classes: int, **options) -> snt.Module:
  """Calls the function at `path` ('pkg.mod:fn') as `fn(num_classes,
  **options)`; it must return an `snt.Module` called as `module(images,
  is_training)`. Errors are `errors.UsageError` naming `--model`."""
  module_name, _, function_name = path.partition(":")
  if not module_name or not function_name or ":" in function_name:
    names = ", ".join(MODEL_NAMES)
    raise errors.UsageError(
        f"--model {path!r}: expected a built-in name ({names}) or an import "
        "path module:function")
  try:
    module = importlib.import_module(module_name)
  except ModuleNotFoundError as e:
    raise errors.UsageError(
        f"--model {path}: cannot import module {module_name!r} ({e}); is "
        "its directory on PYTHONPATH?") from None
  except Exception as e:  # pylint: disable=broad-except
    raise errors.UsageError(
        f"--model {path}: importing {module_name!r} failed: "
        f"{type(e).__name__}: {e}") from e
  fn = getattr(module, function_name, None)
  if fn is None or not callable(fn):
    what = "no attribute" if fn is None else "a non-callable"
    raise errors.UsageError(
        f"--model {path}: module {module_name!r} has {what} "
        f"{function_name!r}; expected a function num_classes -> snt.Module")
  try:
    model = fn(num_classes, **options)
  except TypeError as e:
    raise errors.UsageError(
        f"--model {path}: calling {function_name}({num_classes}) failed: "
        f"{e}") from e
  if not isinstance(model, snt.Module):
    raise errors.UsageError(
        f"--model {path}: {function_name}({num_classes}) returned a "
        f"{type(model).__name__}, not an snt.Module")
  return model


def recorded_model(recorded, given: Optional[str] = None,
                   where: str = "config.json") -> str:
  """The model name to build for a collection whose config (`where`)
  records `recorded`, given `--model given` on this command line (None or
  '': not given).

  A built-in name is used as recorded (`given`, if any, must name the same
  architecture). A user module ('pkg.mod:fn') is code: it is imported only
  when this invocation names it again (`given` equal to `recorded`), never
  because a file says so. `errors.ConfigError` otherwise, naming `where`.
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
    if given != recorded:
      raise errors.ConfigError(
          f"--model {given} differs from the model {recorded!r} recorded in "
          f"{where}")
    return recorded
  if recorded not in MODEL_NAMES and recorded not in ARCHS:
    raise errors.ConfigError(
        f"{where}: key 'model' {recorded[:80]!r} is not a built-in model "
        f"({', '.join(MODEL_NAMES)}) or a module:function path")
  if given and MODEL_NAMES.get(given, given) != MODEL_NAMES.get(recorded,
                                                                recorded):
    raise errors.ConfigError(
        f"--model {given} differs from the model {recorded!r} recorded in "
        f"{where}")
  return recorded


def build(name: str, num_classes: int, **options) -> snt.Module:
  """A model by command-line name ('small_inception', 'resnet9', 'mlp', an
  architecture name, or 'pkg.mod:fn')."""
  if is_user_model(name):
    return load_user_model(name, num_classes, **options)
  arch = MODEL_NAMES.get(name, name)
  if arch not in ARCHS:
    raise errors.UsageError(
        f"--model {name!r}: unknown; use one of {', '.join(MODEL_NAMES)} or "
        "an import path module:function")
  return build_model(arch, num_classes, **options)


def check_output(model: snt.Module, name: str, image_shape, num_classes):
  """Builds `model` on two zero images and checks its logits are `[2,
  num_classes]` (a `UsageError` naming `--model` otherwise)."""
  try:
    out = model(tf.zeros((2,) + tuple(image_shape)), is_training=False)
  except (tf.errors.OpError, ValueError, TypeError) as e:
    raise errors.UsageError(
        f"--model {name}: calling it on images {list(image_shape)} failed: "
        f"{type(e).__name__}: {str(e).splitlines()[0][:200]}") from e
  shape = getattr(out, "shape", None)
  if shape is None or list(shape) != [2, num_classes]:
    raise errors.UsageError(
        f"--model {name}: returns {list(shape) if shape is not None else out!r}"
        f" for 2 images; expected logits [2, {num_classes}]")
  return model
