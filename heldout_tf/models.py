"""Sonnet 2 builders whose variables match the released checkpoints.

`build_model(arch, num_classes)` returns a module called as
`model(images, is_training=False) -> logits`. Saved as
`tf.train.Checkpoint(model=model)`, its variables have exactly the keys and
shapes of the released checkpoints (tests/data/checkpoint_keys/*.tsv).
"""

from typing import Optional

import sonnet as snt
import tensorflow as tf

from heldout_tf import errors

MLP_HIDDEN = (512, 256)
ARCHS = ("inception", "resnet50", "mlp")


class ConvBNReLU(snt.Module):
  """Bias-free SAME convolution, batch norm, ReLU."""

  def __init__(self, channels, kernel_size, stride=1, name=None):
    super().__init__(name=name)
    self.conv = snt.Conv2D(channels, kernel_size, stride=stride,
                           padding="SAME", with_bias=False)
    self.bn = snt.BatchNorm(create_scale=True, create_offset=True)

  def __call__(self, x, is_training):
    return tf.nn.relu(self.bn(self.conv(x), is_training=is_training))


class InceptionBlock(snt.Module):
  """Concatenation of a 1x1 and a 3x3 ConvBNReLU branch."""

  def __init__(self, ch1x1, ch3x3, name=None):
    super().__init__(name=name)
    self.conv1x1 = ConvBNReLU(ch1x1, 1)
    self.conv3x3 = ConvBNReLU(ch3x3, 3)

  def __call__(self, x, is_training):
    return tf.concat([self.conv1x1(x, is_training),
                      self.conv3x3(x, is_training)], axis=-1)


class InceptionStage(snt.Module):
  """Inception blocks, then an optional stride-2 ConvBNReLU."""

  def __init__(self, blocks, downsample_channels=None, name=None):
    super().__init__(name=name)
    self._body = [InceptionBlock(c1, c3) for c1, c3 in blocks]
    self._downsample = (ConvBNReLU(downsample_channels, 3, stride=2)
                        if downsample_channels else None)

  def __call__(self, x, is_training):
    for block in self._body:
      x = block(x, is_training)
    if self._downsample is not None:
      x = self._downsample(x, is_training)
    return x


class SmallInception(snt.Module):
  """The small-image Inception of Zhang et al. (2017), as released."""

  def __init__(self, num_classes, name=None):
    super().__init__(name=name)
    self.conv1 = ConvBNReLU(96, 3)
    self.stage1 = InceptionStage([(32, 32), (32, 48)], 160)
    self.stage2 = InceptionStage([(112, 48), (96, 64), (80, 80), (48, 96)],
                                 240)
    self.stage3 = InceptionStage([(176, 160), (176, 160)])
    self._pred = snt.Linear(num_classes)

  def __call__(self, images, is_training=False):
    x = self.conv1(images, is_training)
    for stage in (self.stage1, self.stage2, self.stage3):
      x = stage(x, is_training)
    return self._pred(tf.reduce_max(x, axis=[1, 2]))


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
    return self.net(snt.flatten(tf.convert_to_tensor(images)))


def build_model(arch: str, num_classes: int) -> snt.Module:
  """Builds `arch` ('inception', 'resnet50' or 'mlp') with `num_classes`."""
  if arch == "inception":
    return SmallInception(num_classes)
  if arch == "resnet50":
    return snt.nets.ResNet50(num_classes=num_classes)
  if arch == "mlp":
    return MLP(num_classes)
  raise errors.UsageError(f"Unknown architecture {arch!r}; known: {ARCHS}")


def input_shape(arch: str):
  """Per-example input shape the released models were trained on."""
  shapes = {"inception": (32, 32, 3), "resnet50": (224, 224, 3),
            "mlp": (28, 28, 1)}
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
  return None


def is_built(model: snt.Module) -> bool:
  """Whether every linear, convolution and batch-norm layer of `model` has
  created its variables (Sonnet creates them on the first call)."""
  layers = [m for m in (model,) + tuple(model.submodules)
            if isinstance(m, (snt.Linear, snt.Conv2D, snt.BatchNorm))]
  return all(hasattr(m, "scale" if isinstance(m, snt.BatchNorm) else "w")
             for m in layers)


def ensure_built(model: snt.Module, arch: Optional[str] = None) -> snt.Module:
  """Creates `model`'s variables by calling it once on zeros (in evaluation
  mode, so no value changes); does nothing when they exist already.

  `arch` defaults to `arch_of(model)`.
  """
  if is_built(model):
    return model
  arch = arch or arch_of(model)
  if arch is None:
    raise errors.UsageError(
        f"cannot build a {type(model).__name__}: not a heldout_tf.models "
        "architecture; call it once on a batch of inputs instead")
  model(tf.zeros((1,) + input_shape(arch)), is_training=False)
  return model
