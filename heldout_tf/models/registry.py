"""Models by name: the one builder, user modules, and helpers any module
needs.

  model = registry.build_model("resnet9", num_classes=10, width=0.5)
  model = registry.build_model("my_nets:build", 10)   # a user's own module

A model has one name everywhere: on the command line (`--model`), in a
collection's config.json, in the experiments registry (`Experiment.arch`),
in exports' metadata and here: `MODEL_NAMES`, or a `module:function`
import path. `build_model(name, num_classes, **options)` is the one
builder; a user module is imported only when this invocation names it
(`names.recorded_model` is the rule for names read back from a
collection's config). Calling any module is `heldout_tf.models.calls`.
"""

import importlib
import os
import sys
from typing import Optional, Sequence

import sonnet as snt
import tensorflow as tf

from heldout_tf.core import errors
from heldout_tf.models import calls
from heldout_tf.models.names import check_name
from heldout_tf.models.names import is_user_model
from heldout_tf.models.names import MODEL_NAMES
from heldout_tf.models.architectures import MLP
from heldout_tf.models.architectures import ResNet9
from heldout_tf.models.architectures import SmallInception

# The built-in models (`MODEL_NAMES`): name -> (class, input shape the
# released or reference runs use).
_BUILT_IN = {
    "small_inception": (SmallInception, (32, 32, 3)),
    "resnet9": (ResNet9, (32, 32, 3)),
    "mlp": (MLP, (28, 28, 1)),
    "resnet50": (snt.nets.ResNet50, (224, 224, 3)),
}
# Constructor options checked before a module is built: name -> (rule,
# check of the value).
_OPTION_RULES = {
    "bn_decay": ("a number in (0, 1)",
                 lambda v: _number(v) and 0.0 < v < 1.0),
    "width": ("a number in (0, 16]", lambda v: _number(v) and 0 < v <= 16),
    "scale": ("a finite number", lambda v: _number(v) and abs(v) < 1e6),
    "hidden": ("a list of layer widths (integers 1..65536)",
               lambda v: isinstance(v, (list, tuple)) and all(
                   isinstance(h, int) and not isinstance(h, bool) and
                   1 <= h <= 65536 for h in v)),
}


def _number(value) -> bool:
  return (isinstance(value, (int, float)) and not isinstance(value, bool)
          and value == value)


def build_model(name: str, num_classes: int, **options) -> snt.Module:
  """The model called `name` (one of `MODEL_NAMES`, or 'pkg.mod:fn', see
  `load_user_model`) with `num_classes` logits; `options` go to its
  constructor (e.g. `width` of ResNet-9, `bn_decay`). Bad options are a
  `UsageError` naming --model_options."""
  check_name(name)
  if is_user_model(name):
    return load_user_model(name, num_classes, **options)
  for key, value in options.items():
    rule = _OPTION_RULES.get(key)
    if rule is not None and not rule[1](value):
      raise errors.UsageError(f"--model_options: {key!r} must be {rule[0]}, "
                              f"got {str(value)[:40]}")
  cls = _BUILT_IN[name][0]
  try:
    if cls is snt.nets.ResNet50:
      return cls(num_classes=num_classes, **options)
    return cls(num_classes, **options)
  except TypeError as e:
    raise errors.UsageError(f"--model_options for {name}: {e}") from None


def input_shape(name: str):
  """Per-example input shape a built-in model's reference runs use."""
  check_name(name)
  if name not in _BUILT_IN:
    raise errors.UsageError(f"model {name!r}: a user module has no known "
                            "input shape; pass the images' shape")
  return _BUILT_IN[name][1]


def arch_of(model: snt.Module) -> Optional[str]:
  """The built-in name `build_model` makes `model` for, or None (other
  modules)."""
  for name, (cls, _) in _BUILT_IN.items():
    if type(model) is cls:  # pylint: disable=unidiomatic-typecheck
      return name
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

  `arch` (a built-in name) defaults to `arch_of(model)`; `shape` (one
  image's `(h, w, c)`) to `input_shape(arch)`. Any module is built when
  `shape` is given.
  """
  if is_built(model):
    return model
  if shape is None:
    arch = arch or arch_of(model)
    if arch is None or is_user_model(arch):
      raise errors.UsageError(
          f"cannot build a {type(model).__name__}: not a heldout_tf.models "
          "architecture; call it once on a batch of inputs instead")
    shape = input_shape(arch)
  calls.call(model, tf.zeros((1,) + tuple(shape)), is_training=False)
  return model


# ----------------------------------------------------------- user modules --


def _import(module_name: str):
  """Imports `module_name` as `python -m` does from the current directory:
  with that directory first on `sys.path` while importing (so `--model
  my_nets:build` finds `./my_nets.py`)."""
  here = os.getcwd()
  added = here not in sys.path and "" not in sys.path
  if added:
    sys.path.insert(0, here)
  try:
    return importlib.import_module(module_name)
  finally:
    if added and here in sys.path:
      sys.path.remove(here)


def load_user_model(path: str, num_classes: int, **options) -> snt.Module:
  """Calls the function at `path` ('pkg.mod:fn') as `fn(num_classes,
  **options)`; it must return an `snt.Module` called as `module(images)`
  or `module(images, is_training)` (see `heldout_tf.models.calls`). The
  module is looked for in the current directory first, then on
  `sys.path`. Errors are `errors.UsageError` naming `--model`."""
  module_name, _, function_name = path.partition(":")
  if not module_name or not function_name or ":" in function_name:
    raise errors.UsageError(
        f"--model {path!r}: expected a built-in name "
        f"({', '.join(MODEL_NAMES)}) or an import path module:function")
  try:
    module = _import(module_name)
  except ModuleNotFoundError as e:
    raise errors.UsageError(
        f"--model {path}: cannot import module {module_name!r} ({e}); it "
        f"is looked for in the current directory ({os.getcwd()}) and on "
        "PYTHONPATH") from None
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
