"""Trains many MLPs at once, each on its own random subset of the data.

The held-out method trains hundreds of models, each on a random subset of the
training set. For small models one model per step wastes the machine, so
`EnsembleTrainer` trains a group of G models in one compiled step: weights are
stacked (`[G, out, in]` inside the step, `[G, in, out]` in results), each
model gathers its own batch (`x[idx]` with `idx` of shape `[G, B]`) and the
layers are batched matmuls.

Everything a model sees is a pure function of `(config.seed, run)`: its subset
(`subset_indices`), its per-epoch shuffles (`epoch_order`) and its
initialisation (`init_params`). Grouping therefore does not change what a model
learns: a model trained in a group equals the same run trained alone by
`train_alone` (a plain sonnet model + `snt.optimizers.Momentum` loop), up to
float rounding.
"""

import dataclasses
import math
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import psutil
import sonnet as snt
import tensorflow as tf

from heldout_tf import hardware
from heldout_tf import models

# Independent random streams of one run: entropy [seed, run, stream, ...].
# SeedSequence zero-pads lists shorter than 4 words, so [seed, run, 0] is
# [seed, run]; anything else drawing from `seed` (e.g. mnist_example's label
# noise) must use a spawn_key or a list of 5+ words to stay independent.
_SUBSET_STREAM, _SHUFFLE_STREAM, _INIT_STREAM = 0, 1, 2
MAX_GROUP_SIZE = 32  # More models per step stops paying off on CPUs.
_EVAL_CHUNK = 1024


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Hyper-parameters shared by every run (MNIST reference defaults)."""
  ratio: float = 0.7
  epochs: int = 10
  batch_size: int = 128
  learning_rate: float = 0.1
  momentum: float = 0.9
  seed: int = 0
  hidden: Tuple[int, ...] = models.MLP_HIDDEN
  num_classes: int = 10
  # 'float32' or 'bfloat16' (matmul inputs; master weights, momentum and the
  # loss stay float32). Resolve 'auto' with `hardware.resolve_precision`.
  precision: str = "float32"

  def __post_init__(self):
    if self.precision not in hardware.PRECISIONS:
      raise ValueError(f"precision must be one of {hardware.PRECISIONS}, "
                       f"got {self.precision!r}")
    if not 0.0 < self.ratio <= 1.0:
      raise ValueError(f"ratio must be in (0, 1], got {self.ratio}")
    for name in ("epochs", "batch_size"):
      if getattr(self, name) < 1:
        raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
    if self.seed < 0:
      raise ValueError(f"seed must be >= 0, got {self.seed}")

  def subset_size(self, num_examples: int) -> int:
    return max(1, int(round(self.ratio * num_examples)))

  def steps_per_epoch(self, num_examples: int) -> int:
    return math.ceil(self.subset_size(num_examples) / self.batch_size)

  def layer_sizes(self, input_dim: int) -> List[Tuple[int, int]]:
    sizes = [input_dim] + list(self.hidden) + [self.num_classes]
    return list(zip(sizes[:-1], sizes[1:]))


def _rng(config: TrainConfig, run: int, *stream) -> np.random.Generator:
  if run < 0:
    raise ValueError(f"run ids must be >= 0, got {run}")
  return np.random.default_rng([config.seed, int(run), *stream])


def subset_indices(config: TrainConfig, run: int,
                   num_examples: int) -> np.ndarray:
  """The sorted training examples run `run` trains on."""
  chosen = _rng(config, run, _SUBSET_STREAM).choice(
      num_examples, config.subset_size(num_examples), replace=False)
  return np.sort(chosen).astype(np.int64)


def epoch_order(config: TrainConfig, run: int, epoch: int,
                subset: np.ndarray) -> np.ndarray:
  """The order in which run `run` visits its `subset` during `epoch`."""
  perm = _rng(config, run, _SHUFFLE_STREAM, epoch).permutation(len(subset))
  return subset[perm]


def batches(config: TrainConfig, run: int, num_examples: int):
  """Yields the example indices of each training step of run `run`."""
  subset = subset_indices(config, run, num_examples)
  for epoch in range(config.epochs):
    order = epoch_order(config, run, epoch, subset)
    for start in range(0, len(order), config.batch_size):
      yield order[start:start + config.batch_size]


def init_params(config: TrainConfig, run: int,
                input_dim: int) -> List[np.ndarray]:
  """Initial `[w0, b0, w1, b1, ...]` of run `run`.

  Same distribution as `snt.Linear`: w ~ TruncatedNormal(0, 1/sqrt(fan_in)),
  b = 0; drawn with stateless random ops seeded by `(seed, run, layer)`.
  """
  params = []
  for layer, (fan_in, fan_out) in enumerate(config.layer_sizes(input_dim)):
    seed = np.random.SeedSequence(
        [config.seed, int(run), _INIT_STREAM, layer]).generate_state(2)
    w = tf.random.stateless_truncated_normal(
        [fan_in, fan_out], seed=seed.astype(np.int64),
        stddev=1.0 / math.sqrt(fan_in))
    params += [w.numpy(), np.zeros([fan_out], np.float32)]
  return params


def build_module(config: TrainConfig, params: Sequence[np.ndarray],
                 input_dim: int = 784) -> snt.Module:
  """A `heldout_tf.models.MLP` holding one model's `params`.

  With the default hidden sizes this is `build_model('mlp', num_classes)`,
  so `heldout_tf.checkpoints.save / restore` work on it unchanged.
  """
  module = models.MLP(config.num_classes, hidden=config.hidden)
  module(tf.zeros([1, input_dim]))
  set_params(module, params)
  return module


def set_params(module: snt.Module, params: Sequence[np.ndarray]):
  """Assigns `[w0, b0, w1, b1, ...]` to a built `heldout_tf.models.MLP`."""
  layers = module.layers
  if len(params) != 2 * len(layers):
    raise ValueError(f"Expected {2 * len(layers)} parameter arrays, got "
                     f"{len(params)}")
  for i, layer in enumerate(layers):
    layer.w.assign(params[2 * i])
    layer.b.assign(params[2 * i + 1])


def module_params(module: snt.Module) -> List[np.ndarray]:
  """`[w0, b0, w1, b1, ...]` of a `heldout_tf.models.MLP`."""
  return [v.numpy() for layer in module.layers for v in (layer.w, layer.b)]


def train_alone(images, labels, config: TrainConfig, run: int) -> snt.Module:
  """Trains run `run` by itself: the reference per-model semantics.

  A plain sonnet loop: `models.MLP`, mean softmax cross-entropy,
  `snt.optimizers.Momentum`, one compiled step per batch.
  """
  images = np.asarray(images, np.float32).reshape(len(images), -1)
  labels = np.asarray(labels, np.int64)
  module = build_module(config, init_params(config, run, images.shape[1]),
                        images.shape[1])
  optimizer = snt.optimizers.Momentum(config.learning_rate, config.momentum)

  @tf.function
  def step(x, y):
    with tf.GradientTape() as tape:
      loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
          y, module(x)))
    variables = module.trainable_variables
    optimizer.apply(tape.gradient(loss, variables), variables)
    return loss

  for idx in batches(config, run, len(images)):
    step(images[idx], labels[idx])
  return module


def _to_step_layout(params):
  """`[w0, b0, ...]` with weights `[G, in, out]` <-> `[G, out, in]`."""
  return [np.swapaxes(p, 1, 2) if p.ndim == 3 else p for p in params]


class _Group(tf.Module):
  """Stacked variables and the compiled step of G models.

  Weights are stored `[G, out, in]` and layers compute `x @ w^T`: oneDNN's
  batched matmul runs the first layer about 1.4x faster that way than as
  `x @ w` with `[G, in, out]` weights (the whole step about 5 % faster).
  """

  def __init__(self, config, group_size, input_dim, jit_compile):
    super().__init__()
    self._config = config
    self.params = []
    for fan_in, fan_out in config.layer_sizes(input_dim):
      self.params += [tf.Variable(tf.zeros([group_size, fan_out, fan_in])),
                      tf.Variable(tf.zeros([group_size, fan_out]))]
    self.momenta = [tf.Variable(tf.zeros_like(p)) for p in self.params]
    self.step = tf.function(self._step, jit_compile=jit_compile)
    self.logits = tf.function(self._logits, jit_compile=jit_compile)

  def _forward(self, x, params):
    num_layers = len(params) // 2
    for i in range(num_layers):
      w, b = params[2 * i], params[2 * i + 1]
      x = tf.matmul(x, w, transpose_b=True) + b[:, None, :]
      if i < num_layers - 1:
        x = tf.nn.relu(x)
    return x

  def _step(self, images, labels, idx):
    """One momentum-SGD step of every model on its own batch `idx[g]`."""
    x, y = tf.gather(images, idx), tf.gather(labels, idx)
    with tf.GradientTape() as tape:
      logits = self._forward(x, self.params)
      per_model = tf.reduce_mean(
          tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits), axis=1)
      # Models share no parameters: the gradient of the sum with respect to
      # model g's parameters is the gradient of model g's own mean loss.
      loss = tf.reduce_sum(per_model)
    grads = tape.gradient(loss, self.params)
    lr = tf.constant(self._config.learning_rate, tf.float32)
    mu = tf.constant(self._config.momentum, tf.float32)
    for param, momentum, grad in zip(self.params, self.momenta, grads):
      # Fused `momentum = mu * momentum + grad; param -= lr * momentum`, the
      # snt.optimizers.Momentum rule, in one pass over memory.
      tf.raw_ops.ResourceApplyMomentum(
          var=param.handle, accum=momentum.handle, lr=lr, grad=grad,
          momentum=mu)
    return per_model

  def _logits(self, x):
    """Logits `[G, n, classes]` of every model on the shared batch `x`."""
    return self._forward(x[None], self.params)


@dataclasses.dataclass
class GroupResult:
  """Trained parameters of a group of runs."""
  runs: List[int]
  params: List[np.ndarray]  # [w0, b0, ...], each stacked [G, ...]
  subsets: np.ndarray  # int64 [G, subset_size]

  def model_params(self, g: int) -> List[np.ndarray]:
    return [p[g] for p in self.params]


class EnsembleTrainer:
  """Trains groups of runs on one in-memory dataset."""

  def __init__(self, images, labels, config: TrainConfig,
               jit_compile: bool = False):
    images = np.asarray(images, np.float32)
    self.images_np = images.reshape(len(images), -1)
    self.num_examples, self.input_dim = self.images_np.shape
    self.labels_np = np.asarray(labels, np.int32)
    if self.labels_np.shape != (self.num_examples,):
      raise ValueError(f"labels must have shape ({self.num_examples},), "
                       f"got {self.labels_np.shape}")
    self.config = config
    self._images = tf.constant(self.images_np)
    self._labels = tf.constant(self.labels_np)
    self._jit_compile = jit_compile
    self._groups = {}

  def _group(self, size):
    if size not in self._groups:
      self._groups[size] = _Group(self.config, size, self.input_dim,
                                  self._jit_compile)
    return self._groups[size]

  def total_steps(self) -> int:
    return self.config.epochs * self.config.steps_per_epoch(self.num_examples)

  def train(self, runs: Sequence[int],
            on_step: Optional[Callable[[int, int], None]] = None
            ) -> GroupResult:
    """Trains `runs` together; `on_step(done, total)` is called each step."""
    runs = [int(r) for r in runs]
    if len(set(runs)) != len(runs) or not runs:
      raise ValueError(f"runs must be distinct and non-empty, got {runs}")
    config = self.config
    group = self._group(len(runs))
    inits = [init_params(config, r, self.input_dim) for r in runs]
    stacked = [np.stack(layer) for layer in zip(*inits)]
    for var, value in zip(group.params, _to_step_layout(stacked)):
      var.assign(value)
    for var in group.momenta:
      var.assign(tf.zeros_like(var))
    subsets = np.stack([subset_indices(config, r, self.num_examples)
                        for r in runs])
    total, done = self.total_steps(), 0
    for epoch in range(config.epochs):
      order = np.stack([epoch_order(config, r, epoch, s)
                        for r, s in zip(runs, subsets)]).astype(np.int32)
      for start in range(0, order.shape[1], config.batch_size):
        group.step(self._images, self._labels,
                   tf.constant(order[:, start:start + config.batch_size]))
        done += 1
        if on_step is not None:
          on_step(done, total)
    params = _to_step_layout([v.numpy() for v in group.params])
    return GroupResult(runs, [np.ascontiguousarray(p) for p in params],
                       subsets)

  def predict(self, result: GroupResult, images) -> np.ndarray:
    """Predicted classes `[G, n]` of each model of `result` on `images`."""
    images = np.asarray(images, np.float32)
    images = images.reshape(len(images), -1)
    group = self._group(len(result.runs))
    for var, value in zip(group.params, _to_step_layout(result.params)):
      var.assign(value)
    out = []
    for start in range(0, len(images), _EVAL_CHUNK):
      logits = group.logits(tf.constant(images[start:start + _EVAL_CHUNK]))
      out.append(tf.argmax(logits, axis=-1, output_type=tf.int32).numpy())
    return np.concatenate(out, axis=1) if out else np.zeros(
        [len(result.runs), 0], np.int32)


def bytes_per_model(config: TrainConfig, input_dim: int = 784) -> int:
  """Rough memory one model of a group needs while training or evaluating."""
  num_params = sum(i * o + o for i, o in config.layer_sizes(input_dim))
  widths = input_dim + sum(config.hidden) + config.num_classes
  activations = 4 * config.batch_size * widths  # Forward + backward copies.
  evaluation = _EVAL_CHUNK * (sum(config.hidden) + config.num_classes)
  return 4 * (6 * num_params + activations + evaluation)


def auto_group_size(config: TrainConfig, input_dim: int = 784,
                    cap: int = MAX_GROUP_SIZE, memory_fraction: float = 0.25
                    ) -> int:
  """How many models to train at once: what a quarter of available memory
  holds, at most `cap`."""
  available = psutil.virtual_memory().available * memory_fraction
  return int(max(1, min(cap, available // bytes_per_model(config, input_dim))))
