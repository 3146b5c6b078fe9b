"""Calling any model the same way: the kit's, Sonnet's, or a user's own.

  logits = calls.call(model, images, is_training=True)
  features, logits = calls.features_and_logits(model, images)
  calls.check_output(model, "--model my_nets:build", (28, 28, 1), 10)

Every place that runs a model (the trainers, the evaluation's compiled
forward pass, the checks below, exports) calls it through `call`, which
passes `is_training` only when the module's `__call__` names such a
parameter: `snt.Sequential([snt.Flatten(), snt.Linear(64), tf.nn.relu,
snt.Linear(10)])`, Keras-style code and most Sonnet modules take only the
images; the kit's models and `snt.nets.ResNet50` take `is_training` (batch
norm). A `**kwargs` catch-all is not a named parameter: `snt.Sequential`
would hand it to its first layer.

Features (the last linear layer's input, for the last-layer TracIn signal):
a module's own `features_and_logits(images[, is_training]) -> (features
[b, d], logits [b, classes])` method, else, for an `snt.Sequential` ending
in an `snt.Linear`, the output of the layers before it. Other modules have
none (`has_features`); the signals refuse them in one line saying what to
add (`check_output(..., features=True)`).
"""

import inspect
from typing import Optional, Sequence

import numpy as np
import sonnet as snt
import tensorflow as tf

from heldout_tf.core import errors

# class -> whether its __call__ names `is_training`.
_TAKES_IS_TRAINING = {}

FEATURES_HINT = (
    "give the module a method features_and_logits(images, is_training) "
    "returning (features [b, d], logits [b, classes]), the features being "
    "its last linear layer's input, or make it an snt.Sequential ending in "
    "an snt.Linear (its features are then that layer's input)")


def _original(fn):
  """The function a Sonnet method decorator wraps (Sonnet's
  `utils.decorator` keeps it in its closure as `f`, without
  `__wrapped__`); `fn` itself otherwise."""
  for _ in range(8):  # Decorators nest a few levels at most.
    inner = getattr(fn, "__wrapped__", None)
    code, closure = getattr(fn, "__code__", None), getattr(fn, "__closure__",
                                                           None)
    if inner is None and code is not None and closure and (
        "f" in code.co_freevars):
      inner = closure[code.co_freevars.index("f")].cell_contents
    if inner is None or not callable(inner):
      return fn
    fn = inner
  return fn


def _names_is_training(fn) -> bool:
  """Whether `fn`'s signature has a parameter called `is_training` that
  can be passed by keyword."""
  try:
    parameters = inspect.signature(_original(fn)).parameters
  except (TypeError, ValueError):  # Builtins without a signature.
    return False
  parameter = parameters.get("is_training")
  return parameter is not None and parameter.kind in (
      inspect.Parameter.POSITIONAL_OR_KEYWORD,
      inspect.Parameter.KEYWORD_ONLY)


def takes_is_training(model) -> bool:
  """Whether calling `model` takes `is_training=` (its class's `__call__`
  names the parameter; a plain function's signature does)."""
  if inspect.isfunction(model) or inspect.ismethod(model):
    return _names_is_training(model)
  cls = type(model)
  if cls not in _TAKES_IS_TRAINING:
    _TAKES_IS_TRAINING[cls] = _names_is_training(
        getattr(cls, "__call__", None))
  return _TAKES_IS_TRAINING[cls]


def call(model, images, is_training: bool = False):
  """`model(images, is_training=is_training)` when the model takes
  `is_training`, else `model(images)`."""
  if takes_is_training(model):
    return model(images, is_training=is_training)
  return model(images)


def _sequential_head(model) -> Optional[Sequence]:
  """`(layers before the last, last snt.Linear)` of an `snt.Sequential`
  whose last layer is an `snt.Linear`, else None."""
  if not isinstance(model, snt.Sequential):
    return None
  layers = list(model._layers)  # pylint: disable=protected-access
  if len(layers) < 2 or not isinstance(layers[-1], snt.Linear):
    return None
  return layers[:-1], layers[-1]


def has_features(model) -> bool:
  """Whether `features_and_logits` can give `model`'s features."""
  return (callable(getattr(model, "features_and_logits", None)) or
          _sequential_head(model) is not None)


def features_and_logits(model, images, is_training: bool = False):
  """float32 `(features [b, d], logits [b, classes])` of `model` on
  `images`: the module's own `features_and_logits`, or the input of an
  `snt.Sequential`'s last `snt.Linear`.

  Raises:
    errors.UsageError: the module exposes no features (`FEATURES_HINT`).
  """
  method = getattr(model, "features_and_logits", None)
  if callable(method):
    if _names_is_training(method):
      features, logits = method(images, is_training=is_training)
    else:
      features, logits = method(images)
  else:
    head = _sequential_head(model)
    if head is None:
      raise errors.UsageError(f"a {type(model).__name__} exposes no "
                              f"features: {FEATURES_HINT}")
    features = images
    for layer in head[0]:
      features = layer(features)
    logits = head[1](features)
  return tf.cast(features, tf.float32), tf.cast(logits, tf.float32)


def _what(value) -> str:
  """A returned value in a few words (never its contents)."""
  if isinstance(value, (tuple, list)):
    return f"a {type(value).__name__} of {len(value)}"
  if isinstance(value, np.ndarray):
    return f"a numpy array {value.dtype}{list(value.shape)}"
  return f"a {type(value).__name__}"


def check_output(model, name: str, image_shape, num_classes: int,
                 features: bool = False):
  """Builds `model` on two zero images and checks it: floating point
  logits `[2, num_classes]` as one `tf.Tensor`, trainable variables, and
  with `features` the features the signals need. A `UsageError` naming
  `name` (e.g. '--model my_nets:build') otherwise; returns `model`."""
  images = tf.zeros((2,) + tuple(image_shape))
  try:
    out = call(model, images, is_training=False)
  except (tf.errors.OpError, ValueError, TypeError) as e:
    text = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
    raise errors.UsageError(
        f"{name}: calling it on images {list(image_shape)} failed: "
        f"{type(e).__name__}: {text}") from e
  expected = f"logits [2, {num_classes}] (one float tf.Tensor)"
  if not isinstance(out, (tf.Tensor, tf.Variable)):
    raise errors.UsageError(f"{name}: returns {_what(out)} for 2 images; "
                            f"expected {expected}")
  if not out.dtype.is_floating:
    raise errors.UsageError(f"{name}: returns {out.dtype.name} logits; "
                            f"expected {expected}")
  if list(out.shape) != [2, num_classes]:
    raise errors.UsageError(f"{name}: returns {out.dtype.name}"
                            f"{list(out.shape)} for 2 images; expected "
                            f"{expected}")
  try:
    trainable = model.trainable_variables
  except ValueError:  # Sonnet's "does not currently contain any".
    trainable = ()
  if not trainable:
    raise errors.UsageError(f"{name}: has no trainable variables after a "
                            "call: there is nothing to train")
  if features:
    if not has_features(model):
      raise errors.UsageError(
          f"{name}: the signals (--signals) need the model's features for "
          f"last-layer TracIn: {FEATURES_HINT}")
    got, _ = features_and_logits(model, images)
    if got.shape.rank != 2 or got.shape[0] != 2:
      raise errors.UsageError(
          f"{name}: features_and_logits returns features "
          f"{list(got.shape)} for 2 images; expected [2, d]")
  return model
