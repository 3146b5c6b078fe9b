"""Sonnet 2 models: the released architectures, ResNet-9, user modules.

`build_model(arch, num_classes)` returns a module called as
`model(images, is_training=False) -> logits`. For the released
architectures ('inception', 'resnet50'), saved as
`tf.train.Checkpoint(model=model)`, its variables have exactly the keys and
shapes of the released checkpoints (tests/data/checkpoint_keys/*.tsv).

The kit's own models ('inception', 'resnet9', 'mlp') also implement
`features_and_logits(images, is_training) -> (features [b, d], logits [b,
classes])`, the penultimate activations (input of the last linear layer)
and the logits, which the data-quality signals need; `features_and_logits(
model, ...)` serves any module. A user's own module comes from
`load_user_model('pkg.mod:fn', num_classes)`; `build(name, ...)` accepts
the command-line model names and such paths alike.

Mixed precision: inside `precision_scope(tf.bfloat16 | tf.float16)` the
kit's models run each convolution and linear layer in that dtype (inputs and
weights cast; the float32 variables stay the master copy), and everything
else (batch norm, ReLU inputs, logits) in float32. Outside a scope, or with
float32, the graph is the plain float32 one.
"""

import contextlib
import importlib
import threading
from typing import Optional, Sequence

import sonnet as snt
import tensorflow as tf

from heldout_tf import errors

MLP_HIDDEN = (512, 256)
ARCHS = ("inception", "resnet50", "mlp", "resnet9")
# Command-line model names -> architecture.
MODEL_NAMES = {"small_inception": "inception", "resnet9": "resnet9",
               "mlp": "mlp", "resnet50": "resnet50"}
# BatchNorm decay of the released SmallInception module (Sonnet's default).
RELEASED_BN_DECAY = 0.999

_policy = threading.local()


@contextlib.contextmanager
def precision_scope(dtype):
  """Runs the kit's models' convolutions and matmuls in `dtype` while
  active (read when a function is traced or run eagerly)."""
  previous = getattr(_policy, "dtype", tf.float32)
  _policy.dtype = tf.as_dtype(dtype)
  try:
    yield
  finally:
    _policy.dtype = previous


def compute_dtype() -> tf.DType:
  """The dtype `precision_scope` set (float32 outside any scope)."""
  return getattr(_policy, "dtype", tf.float32)


def _apply(layer, x):
  """`layer(x)` (an `snt.Conv2D` or `snt.Linear`) with its input and weights
  cast to the compute dtype, the result (and the bias add) float32; exactly
  `layer(x)` in float32. Variables are created float32 (on a first float32
  call) whatever the dtype."""
  dtype = compute_dtype()
  if dtype == tf.float32:
    return layer(x)
  if not hasattr(layer, "w"):
    layer(tf.cast(x, tf.float32))  # Creates the float32 master variables.
  low_x, low_w = tf.cast(x, dtype), tf.cast(layer.w, dtype)
  if isinstance(layer, snt.Linear):
    y = tf.cast(tf.matmul(low_x, low_w), tf.float32)
  else:
    y = tf.cast(tf.nn.convolution(
        low_x, low_w, strides=layer.stride, padding=layer.conv_padding,
        dilations=layer.rate, data_format=layer.data_format), tf.float32)
  return y + layer.b if layer.with_bias else y


class ConvBNReLU(snt.Module):
  """Bias-free SAME convolution, batch norm, ReLU."""

  def __init__(self, channels, kernel_size, stride=1,
               bn_decay=RELEASED_BN_DECAY, name=None):
    super().__init__(name=name)
    self.conv = snt.Conv2D(channels, kernel_size, stride=stride,
                           padding="SAME", with_bias=False)
    self.bn = snt.BatchNorm(create_scale=True, create_offset=True,
                            decay_rate=bn_decay)

  def __call__(self, x, is_training):
    return tf.nn.relu(self.bn(_apply(self.conv, x), is_training=is_training))


class InceptionBlock(snt.Module):
  """Concatenation of a 1x1 and a 3x3 ConvBNReLU branch."""

  def __init__(self, ch1x1, ch3x3, bn_decay=RELEASED_BN_DECAY, name=None):
    super().__init__(name=name)
    self.conv1x1 = ConvBNReLU(ch1x1, 1, bn_decay=bn_decay)
    self.conv3x3 = ConvBNReLU(ch3x3, 3, bn_decay=bn_decay)

  def __call__(self, x, is_training):
    return tf.concat([self.conv1x1(x, is_training),
                      self.conv3x3(x, is_training)], axis=-1)


class InceptionStage(snt.Module):
  """Inception blocks, then an optional stride-2 ConvBNReLU."""

  def __init__(self, blocks, downsample_channels=None,
               bn_decay=RELEASED_BN_DECAY, name=None):
    super().__init__(name=name)
    self._body = [InceptionBlock(c1, c3, bn_decay) for c1, c3 in blocks]
    self._downsample = (ConvBNReLU(downsample_channels, 3, stride=2,
                                   bn_decay=bn_decay)
                        if downsample_channels else None)

  def __call__(self, x, is_training):
    for block in self._body:
      x = block(x, is_training)
    if self._downsample is not None:
      x = self._downsample(x, is_training)
    return x


class SmallInception(snt.Module):
  """The small-image Inception of Zhang et al. (2017), as released.

  `bn_decay` (the batch-norm moving-average decay) is no variable: any
  value restores the released checkpoints.
  """

  def __init__(self, num_classes, bn_decay=RELEASED_BN_DECAY, name=None):
    super().__init__(name=name)
    self.conv1 = ConvBNReLU(96, 3, bn_decay=bn_decay)
    self.stage1 = InceptionStage([(32, 32), (32, 48)], 160, bn_decay)
    self.stage2 = InceptionStage([(112, 48), (96, 64), (80, 80), (48, 96)],
                                 240, bn_decay)
    self.stage3 = InceptionStage([(176, 160), (176, 160)], None, bn_decay)
    self._pred = snt.Linear(num_classes)

  def features_and_logits(self, images, is_training=False):
    """`(features [b, 336], logits [b, classes])`, both float32."""
    x = self.conv1(images, is_training)
    for stage in (self.stage1, self.stage2, self.stage3):
      x = stage(x, is_training)
    features = tf.reduce_max(x, axis=[1, 2])
    return features, _apply(self._pred, features)

  def __call__(self, images, is_training=False):
    return self.features_and_logits(images, is_training)[1]


class Residual(snt.Module):
  """`x + f(f(x))` with two ConvBNReLU 3x3 of x's width."""

  def __init__(self, channels, bn_decay, name=None):
    super().__init__(name=name)
    self.conv1 = ConvBNReLU(channels, 3, bn_decay=bn_decay)
    self.conv2 = ConvBNReLU(channels, 3, bn_decay=bn_decay)

  def __call__(self, x, is_training):
    return x + self.conv2(self.conv1(x, is_training), is_training)


def _max_pool(x):
  return tf.nn.max_pool2d(x, 2, 2, "VALID")


class ResNet9(snt.Module):
  """The fast CIFAR ResNet-9 (Page's DAWNBench net, as in datamodels and
  airbench): prep 64; layer1 128 + residual; layer2 256; layer3 512 +
  residual; each layer conv-BN-ReLU then 2x2 max pool; global max pool;
  bias-free linear head scaled by `scale`.

  Args:
    num_classes: logits per example.
    width: multiplies every channel count (1.0: 64/128/256/512; tests use
      small widths).
    bn_decay: batch-norm moving-average decay (0.9: PyTorch's momentum 0.1).
    scale: the logits' multiplier (0.125 in the original).
  """

  def __init__(self, num_classes, width=1.0, bn_decay=0.9, scale=0.125,
               name=None):
    super().__init__(name=name)
    ch = lambda c: max(1, int(round(c * width)))
    self._scale = float(scale)
    self.prep = ConvBNReLU(ch(64), 3, bn_decay=bn_decay)
    self.layer1 = ConvBNReLU(ch(128), 3, bn_decay=bn_decay)
    self.res1 = Residual(ch(128), bn_decay)
    self.layer2 = ConvBNReLU(ch(256), 3, bn_decay=bn_decay)
    self.layer3 = ConvBNReLU(ch(512), 3, bn_decay=bn_decay)
    self.res3 = Residual(ch(512), bn_decay)
    self.head = snt.Linear(num_classes, with_bias=False)

  def features_and_logits(self, images, is_training=False):
    """`(features [b, 512 * width], logits [b, classes])`, float32."""
    x = self.prep(images, is_training)
    x = self.res1(_max_pool(self.layer1(x, is_training)), is_training)
    x = _max_pool(self.layer2(x, is_training))
    x = self.res3(_max_pool(self.layer3(x, is_training)), is_training)
    features = tf.reduce_max(x, axis=[1, 2])
    return features, _apply(self.head, features) * self._scale

  def __call__(self, images, is_training=False):
    return self.features_and_logits(images, is_training)[1]


class MLP(snt.Module):
  """784-512-256-classes ReLU MLP of the MNIST reproduction."""

  def __init__(self, num_classes, hidden=MLP_HIDDEN, name=None):
    super().__init__(name=name)
    self.net = snt.nets.MLP(list(hidden) + [num_classes])

  @property
  def layers(self):
    """The `snt.Linear` layers, input to output."""
    return self.net._layers  # pylint: disable=protected-access

  def __call__(self, images, is_training=False):
    del is_training  # No batch norm or dropout.
    x = snt.flatten(tf.convert_to_tensor(images))
    if compute_dtype() == tf.float32:
      return self.net(x)
    return self.features_and_logits(x)[1]

  def features_and_logits(self, images, is_training=False):
    """`(last hidden ReLU output [b, hidden[-1]], logits [b, classes])`."""
    del is_training
    x = snt.flatten(tf.convert_to_tensor(images))
    layers = self.layers
    for layer in layers[:-1]:
      x = tf.nn.relu(_apply(layer, x))
    return x, _apply(layers[-1], x)


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
