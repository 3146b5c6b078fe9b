"""The architectures: the released SmallInception and ResNet-50, ResNet-9
and the MNIST MLP, as Sonnet 2 modules called `model(images,
is_training=False) -> logits [b, classes]`.

Saved as `tf.train.Checkpoint(model=model)`, SmallInception and ResNet-50
have exactly the variable keys and shapes of the released checkpoints
(tests/data/checkpoint_keys/*.tsv). The kit's own models also implement
`features_and_logits(images, is_training) -> (features [b, d], logits [b,
classes])`: the penultimate activations (the last linear layer's input)
and the logits, which the data-quality signals need.

Mixed precision: inside `precision_scope(tf.bfloat16 | tf.float16)` these
models run each convolution and linear layer in that dtype (inputs and
weights cast; the float32 variables stay the master copy), and everything
else (batch norm, ReLU inputs, logits) in float32. Outside a scope, or with
float32, the graph is the plain float32 one.
"""

import contextlib
import threading

import sonnet as snt
import tensorflow as tf

MLP_HIDDEN = (512, 256)
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
