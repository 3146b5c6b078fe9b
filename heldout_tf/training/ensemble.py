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

Precision (`TrainConfig.precision`): 'float32' computes everything in float32.
'bfloat16' is mixed precision, the standard recipe: the master weights, the
momentum, the update, the biases, the softmax and the loss stay float32; each
step casts the weights and each layer's input to bfloat16 and runs the
matmuls on them. oneDNN accumulates in float32 but `tf.matmul` on bfloat16
returns bfloat16 (there is no bfloat16 x bfloat16 -> float32 kernel), so each
matmul output is rounded to bfloat16 once, then cast to float32 for the bias
and the ReLU. Gradients flow back through the casts: the backward matmuls run
in bfloat16 too and every variable receives a float32 gradient. The rounding
points are spelled out once (`mlp_forward`, batched as `group_forward`) and
used by the ensemble step, `EnsembleTrainer.predict`,
`GroupView.features_and_logits` and `train_alone`,
so "a model trained in a group equals the same run trained alone" holds in
each precision to the same float32 tolerance: with the same rounding points
the two differ only where float32 accumulation order would push a value
across a bfloat16 rounding boundary. (Bias-adds are kept out of bfloat16 on
purpose: TensorFlow fuses a plain `matmul + bias` into one kernel that skips
the bfloat16 rounding in between, but not the batched one, so group and alone
would round differently.) bfloat16 runs differ from float32 runs of the same
seed by ~1e-2 in the weights and reach the same accuracy
(`benchmarks/RESULTS-train_many.md`).

Collections: `EnsembleBlocks` is the MLP block trainer of
`heldout_tf.collection.train` (a canonical block of runs trained as one
group, each run written with its float32 checkpoint and aux arrays).
"""

import dataclasses
import math
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import sonnet as snt
import tensorflow as tf

from heldout_tf.models import checkpoints
from heldout_tf.core import errors
from heldout_tf.core import hardware
from heldout_tf import models
from heldout_tf.core import sizes
from heldout_tf.collection import blocks
from heldout_tf.collection import options

# Independent random streams of one run: entropy [seed, run, stream, ...].
# SeedSequence zero-pads lists shorter than 4 words, so [seed, run, 0] is
# [seed, run]; anything else drawing from `seed` (e.g. mnist_example's label
# noise) must use a spawn_key or a list of 5+ words to stay independent.
_SUBSET_STREAM, _SHUFFLE_STREAM, _INIT_STREAM = 0, 1, 2
MAX_GROUP_SIZE = 32  # More models per step stops paying off on CPUs.
_EVAL_CHUNK = 1024


@dataclasses.dataclass(frozen=True)
class TrainConfig(options.RunSettings):
  """Everything a run's bits depend on besides its id and the data: the
  shared run settings (`collection.options.RunSettings`: ratio, epochs,
  batch size, learning rate, seed) and the MLP's own."""
  momentum: float = 0.9
  hidden: Tuple[int, ...] = models.MLP_HIDDEN
  num_classes: int = 10
  # 'float32' or 'bfloat16' (matmul inputs; master weights, momentum and the
  # loss stay float32). Resolve 'auto' with `collection.resolve_precision`.
  precision: str = "float32"

  def __post_init__(self):
    if self.precision not in hardware.PRECISIONS:
      raise errors.UsageError(
          f"precision must be one of {hardware.PRECISIONS}, got "
          f"{self.precision!r}")
    self.check()

  def subset_size(self, num_examples: int) -> int:
    return max(1, int(round(self.ratio * num_examples)))

  def steps_per_epoch(self, num_examples: int) -> int:
    return math.ceil(self.subset_size(num_examples) / self.batch_size)

  def layer_sizes(self, input_dim: int) -> List[Tuple[int, int]]:
    sizes = [input_dim] + list(self.hidden) + [self.num_classes]
    return list(zip(sizes[:-1], sizes[1:]))


def _rng(config: TrainConfig, run: int, *stream) -> np.random.Generator:
  if run < 0:
    raise errors.UsageError(f"run ids must be >= 0, got {run}")
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
  so `heldout_tf.models.checkpoints.save / restore` work on it unchanged.
  """
  module = models.MLP(config.num_classes, hidden=config.hidden)
  module(tf.zeros([1, input_dim]))
  set_params(module, params)
  return module


def set_params(module: snt.Module, params: Sequence[np.ndarray]):
  """Assigns `[w0, b0, w1, b1, ...]` to a built `heldout_tf.models.MLP`."""
  layers = module.layers
  if len(params) != 2 * len(layers):
    raise errors.UsageError(f"Expected {2 * len(layers)} parameter arrays, got "
                     f"{len(params)}")
  for i, layer in enumerate(layers):
    layer.w.assign(params[2 * i])
    layer.b.assign(params[2 * i + 1])


def module_params(module: snt.Module) -> List[np.ndarray]:
  """`[w0, b0, w1, b1, ...]` of a `heldout_tf.models.MLP`."""
  return [v.numpy() for layer in module.layers for v in (layer.w, layer.b)]


def compute_dtype(precision: str) -> tf.DType:
  """The dtype matmuls run in: tf.bfloat16 for 'bfloat16', else tf.float32."""
  return tf.bfloat16 if precision == "bfloat16" else tf.float32


def mlp_forward(x, layers, matmul, dtype):
  """Penultimate activations and logits of an MLP: the rounding points.

  Each layer: `relu(float32(matmul(x, dtype(w))) + b)`, then cast to `dtype`
  as the next layer's input; the last layer has no ReLU and stays float32.

  Args:
    x: layer-0 input, already in `dtype`.
    layers: `[(w, b), ...]` float32 weights and biases, the biases already
      broadcastable against the layer outputs.
    matmul: `matmul(x, w)` for one layer (batched or not, any layout).
    dtype: tf.float32 or tf.bfloat16, the dtype the matmuls run in.

  Returns:
    `(penultimate, logits)`: the last hidden layer's ReLU output (in `dtype`)
    and float32 logits. With float32 every cast is a no-op, so the graph is
    the plain float32 one.
  """
  for w, b in layers[:-1]:
    x = tf.cast(tf.nn.relu(
        tf.cast(matmul(x, tf.cast(w, dtype)), tf.float32) + b), dtype)
  w, b = layers[-1]
  return x, tf.cast(matmul(x, tf.cast(w, dtype)), tf.float32) + b


def train_alone(images, labels, config: TrainConfig, run: int) -> snt.Module:
  """Trains run `run` by itself: the reference per-model semantics.

  A plain sonnet loop: `models.MLP`, mean softmax cross-entropy,
  `snt.optimizers.Momentum`, one compiled step per batch. In float32 the
  step calls the module; in bfloat16 it runs the module's own float32
  variables through the mixed-precision forward of the ensemble step
  (`mlp_forward`: same casts, same rounding points, unbatched matmuls).
  """
  images = np.asarray(images, np.float32).reshape(len(images), -1)
  labels = np.asarray(labels, np.int64)
  module = build_module(config, init_params(config, run, images.shape[1]),
                        images.shape[1])
  optimizer = snt.optimizers.Momentum(config.learning_rate, config.momentum)
  dtype = compute_dtype(config.precision)

  def logits_of(x):
    if dtype == tf.float32:
      return module(x)
    layers = [(layer.w, layer.b) for layer in module.layers]
    return mlp_forward(tf.cast(x, dtype), layers, tf.matmul, dtype)[1]

  @tf.function
  def step(x, y):
    with tf.GradientTape() as tape:
      loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
          y, logits_of(x)))
    variables = module.trainable_variables
    optimizer.apply(tape.gradient(loss, variables), variables)
    return loss

  for idx in batches(config, run, len(images)):
    step(images[idx], labels[idx])
  return module


def to_step_layout(params):
  """`[w0, b0, ...]` with weights `[G, in, out]` <-> `[G, out, in]`."""
  return [np.swapaxes(p, 1, 2) if p.ndim == 3 else p for p in params]


def _batched_matmul(x, w):
  return tf.matmul(x, w, transpose_b=True)


def group_forward(x, params, dtype=tf.float32):
  """`(penultimate, logits)` of G stacked MLPs, each on its own inputs.

  The one MLP forward pass of the kit (training steps, predictions,
  per-epoch signals), rounding as `mlp_forward`.

  Args:
    x: `[G, n, in]` inputs, any float dtype.
    params: `[w0, b0, ...]` float32, weights in the step layout
      `[G, out, in]` (`to_step_layout`), biases `[G, out]`.
    dtype: tf.float32 or tf.bfloat16, the dtype the matmuls run in.
  """
  layers = [(params[i], params[i + 1][:, None, :])
            for i in range(0, len(params), 2)]
  return mlp_forward(tf.cast(x, dtype), layers, _batched_matmul, dtype)


class _Group(tf.Module):
  """Stacked variables and the compiled step of G models.

  Weights are stored `[G, out, in]` and layers compute `x @ w^T`: oneDNN's
  batched matmul runs the first layer about 1.4x faster that way than as
  `x @ w` with `[G, in, out]` weights (the whole step about 5 % faster) in
  float32; in bfloat16 both layouts run alike. Variables are float32 in both
  precisions (master weights and momentum).
  """

  def __init__(self, config, group_size, input_dim, jit_compile):
    super().__init__()
    self._config = config
    self.dtype = compute_dtype(config.precision)
    self.params = []
    for fan_in, fan_out in config.layer_sizes(input_dim):
      self.params += [tf.Variable(tf.zeros([group_size, fan_out, fan_in])),
                      tf.Variable(tf.zeros([group_size, fan_out]))]
    self.momenta = [tf.Variable(tf.zeros_like(p)) for p in self.params]
    self.step = tf.function(self._step, jit_compile=jit_compile)
    self.logits = tf.function(self._logits, jit_compile=jit_compile)
    self.features_and_logits = tf.function(self._features_and_logits,
                                           jit_compile=jit_compile)

  def _forward(self, x, params):
    """`(penultimate, logits)` of every model; `x` `[G, n, in]` any float."""
    return group_forward(x, params, self.dtype)

  def _step(self, images, labels, idx):
    """One momentum-SGD step of every model on its own batch `idx[g]`."""
    x, y = tf.gather(images, idx), tf.gather(labels, idx)
    with tf.GradientTape() as tape:
      _, logits = self._forward(x, self.params)
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
      # snt.optimizers.Momentum rule, in one pass over memory (float32).
      tf.raw_ops.ResourceApplyMomentum(
          var=param.handle, accum=momentum.handle, lr=lr, grad=grad,
          momentum=mu)
    return per_model

  def _logits(self, x):
    """Float32 logits `[G, n, classes]` of every model on the batch `x`."""
    return self._forward(x[None], self.params)[1]

  def _features_and_logits(self, x):
    """Float32 `([G, n, h_last], [G, n, classes])` on the batch `x`."""
    features, logits = self._forward(x[None], self.params)
    return tf.cast(features, tf.float32), logits

  def assign(self, stacked_params):
    """Sets the weights (`[G, in, out]` layout) and zeroes the momentum."""
    for var, value in zip(self.params, to_step_layout(stacked_params)):
      var.assign(value)
    for var in self.momenta:
      var.assign(tf.zeros_like(var))

  def read(self) -> List[np.ndarray]:
    """The current weights, stacked `[G, in, out]`, as float32 numpy."""
    return [np.ascontiguousarray(p)
            for p in to_step_layout([v.numpy() for v in self.params])]

  def evaluate(self, fn, images) -> List[np.ndarray]:
    """`fn` on `images` `[n, ...]`, chunk by chunk: `fn`'s output per chunk."""
    images = np.asarray(images, np.float32)
    images = images.reshape(len(images), int(np.prod(images.shape[1:])))
    chunks = [fn(tf.constant(images[start:start + _EVAL_CHUNK]))
              for start in range(0, len(images), _EVAL_CHUNK)]
    return chunks


@dataclasses.dataclass
class GroupResult:
  """Trained parameters of a group of runs."""
  runs: List[int]
  params: List[np.ndarray]  # [w0, b0, ...], each stacked [G, ...]
  subsets: np.ndarray  # int64 [G, subset_size]

  def model_params(self, g: int) -> List[np.ndarray]:
    return [p[g] for p in self.params]


class GroupView:
  """The models of a group at their current weights (in `on_epoch_end`).

  Valid only during the callback: training goes on afterwards.
  """

  def __init__(self, group: _Group, runs: List[int]):
    self._group = group
    self.runs = runs

  def params(self) -> List[np.ndarray]:
    """`[w0, b0, ...]` float32 numpy, stacked `[G, in, out]` / `[G, out]`."""
    return self._group.read()

  def features_and_logits(self, images) -> Tuple[np.ndarray, np.ndarray]:
    """Every model on `images` `[n, ...]`, in the group's precision.

    Returns:
      `(penultimate, logits)`: float32 `[G, n, h_last]` (the last hidden
      layer's ReLU output, the input of the final linear layer) and float32
      `[G, n, classes]`.
    """
    chunks = self._group.evaluate(self._group.features_and_logits, images)
    if not chunks:
      g = len(self.runs)
      return (np.zeros([g, 0, self._group.params[-4].shape[1]], np.float32),
              np.zeros([g, 0, self._group.params[-1].shape[1]], np.float32))
    return tuple(np.concatenate([c[i].numpy() for c in chunks], axis=1)
                 for i in range(2))


class EnsembleTrainer:
  """Trains groups of runs on one in-memory dataset."""

  def __init__(self, images, labels, config: TrainConfig,
               jit_compile: bool = False):
    images = np.asarray(images, np.float32)
    self.images_np = images.reshape(len(images), -1)
    self.num_examples, self.input_dim = self.images_np.shape
    self.labels_np = np.asarray(labels, np.int32)
    if self.labels_np.shape != (self.num_examples,):
      raise errors.UsageError(
          f"labels must have shape ({self.num_examples},), got "
          f"{self.labels_np.shape}")
    self.config = config
    # Stored in the compute dtype: the step gathers bfloat16 batches
    # directly (the same values as casting each float32 batch).
    self._images = tf.cast(tf.constant(self.images_np),
                           compute_dtype(config.precision))
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

  def _check_subsets(self, subsets, num_runs) -> np.ndarray:
    subsets = np.asarray(subsets)
    if (subsets.ndim != 2 or subsets.shape[0] != num_runs
        or subsets.shape[1] < 1 or not np.issubdtype(subsets.dtype,
                                                     np.integer)):
      raise errors.UsageError(
          f"subsets must be integer [{num_runs}, m] with m >= 1 (one row per "
          f"run), got {subsets.dtype} {list(subsets.shape)}")
    if subsets.min() < 0 or subsets.max() >= self.num_examples:
      raise errors.UsageError(
          f"subsets must index the {self.num_examples} training examples, "
          f"got values in [{subsets.min()}, {subsets.max()}]")
    return subsets.astype(np.int64)

  def _check_init(self, init, num_runs) -> List[np.ndarray]:
    params = init.params if isinstance(init, GroupResult) else list(init)
    expected = []
    for fan_in, fan_out in self.config.layer_sizes(self.input_dim):
      expected += [(num_runs, fan_in, fan_out), (num_runs, fan_out)]
    shapes = [tuple(np.shape(p)) for p in params]
    if shapes != expected:
      raise errors.UsageError(
          f"init must be stacked [w0, b0, ...] of shapes {expected} "
          f"([G, in, out] weights), got {shapes}")
    return [np.asarray(p, np.float32) for p in params]

  def train(self, runs: Sequence[int],
            on_step: Optional[Callable[[int, int], None]] = None,
            on_epoch_end: Optional[Callable[[int, GroupView], None]] = None,
            subsets=None, init=None, first_epoch: int = 0,
            epochs: Optional[int] = None) -> GroupResult:
    """Trains `runs` together.

    With the defaults every run trains `config.epochs` epochs on its own
    `subset_indices` from `init_params`. The other arguments let a caller
    run phases (e.g. second-split training) and record signals per epoch.

    Args:
      runs: distinct run ids, G of them.
      on_step: `on_step(done, total)` after every step.
      on_epoch_end: `on_epoch_end(epoch, view)` after every epoch; `view` is
        a `GroupView` of the models at their current weights.
      subsets: int `[G, m]`, the examples each run trains on instead of its
        `subset_indices` (m may differ from the default subset size).
      init: a `GroupResult` or stacked `[w0, b0, ...]` (`[G, in, out]`
        weights) to start from instead of `init_params`; the momentum starts
        at zero either way.
      first_epoch: the first epoch's number: epoch e visits the subset in the
        order `epoch_order(config, run, e, subset)`, so a second phase with
        `first_epoch=config.epochs` draws fresh shuffles.
      epochs: how many epochs (default `config.epochs`).

    Returns:
      The runs' final weights and the subsets they trained on.
    """
    runs = [int(r) for r in runs]
    if len(set(runs)) != len(runs) or not runs:
      raise errors.UsageError(
          f"runs must be distinct and non-empty, got {runs}")
    config = self.config
    epochs = config.epochs if epochs is None else int(epochs)
    if epochs < 1 or first_epoch < 0:
      raise errors.UsageError(f"need epochs >= 1 and first_epoch >= 0, got "
                              f"epochs={epochs}, first_epoch={first_epoch}")
    if subsets is None:
      subsets = np.stack([subset_indices(config, r, self.num_examples)
                          for r in runs])
    else:
      subsets = self._check_subsets(subsets, len(runs))
    if init is None:
      inits = [init_params(config, r, self.input_dim) for r in runs]
      init = [np.stack(layer) for layer in zip(*inits)]
    else:
      init = self._check_init(init, len(runs))
    group = self._group(len(runs))
    group.assign(init)
    view = GroupView(group, runs)
    total = epochs * math.ceil(subsets.shape[1] / config.batch_size)
    done = 0
    for epoch in range(first_epoch, first_epoch + epochs):
      order = np.stack([epoch_order(config, r, epoch, s)
                        for r, s in zip(runs, subsets)]).astype(np.int32)
      for start in range(0, order.shape[1], config.batch_size):
        group.step(self._images, self._labels,
                   tf.constant(order[:, start:start + config.batch_size]))
        done += 1
        if on_step is not None:
          on_step(done, total)
      if on_epoch_end is not None:
        on_epoch_end(epoch, view)
    return GroupResult(runs, group.read(), subsets)

  def predict(self, result: GroupResult, images) -> np.ndarray:
    """Predicted classes `[G, n]` of each model of `result` on `images`.

    Evaluated in the trainer's precision (bfloat16 matmuls for 'bfloat16').
    """
    group = self._group(len(result.runs))
    group.assign(result.params)
    chunks = group.evaluate(group.logits, images)
    out = [tf.argmax(c, axis=-1, output_type=tf.int32).numpy()
           for c in chunks]
    return np.concatenate(out, axis=1) if out else np.zeros(
        [len(result.runs), 0], np.int32)


def bytes_per_model(config: TrainConfig, input_dim: int = 784) -> int:
  """Rough memory one model of a group needs while training or evaluating."""
  num_params = sum(i * o + o for i, o in config.layer_sizes(input_dim))
  widths = input_dim + sum(config.hidden) + config.num_classes
  activations = 4 * config.batch_size * widths  # Forward + backward copies.
  evaluation = _EVAL_CHUNK * (sum(config.hidden) + config.num_classes)
  # Weights, momentum, gradient and temporaries in float32; bfloat16 adds a
  # half-size copy of the weights and of the gradient.
  words = 6 * num_params + (num_params
                            if config.precision == "bfloat16" else 0)
  return 4 * (words + activations + evaluation)


def auto_group_size(config: TrainConfig, input_dim: int = 784,
                    cap: int = MAX_GROUP_SIZE, memory_fraction: float = 0.25
                    ) -> int:
  """How many models to train at once: what `memory_fraction` of the
  available memory (`sizes.available_memory()`) holds, at most `cap`."""
  available = sizes.available_memory() * memory_fraction
  return int(max(1, min(cap, available // bytes_per_model(config, input_dim))))


def float32_evaluator(trainer: EnsembleTrainer) -> EnsembleTrainer:
  """`trainer` if it trains in float32, else a float32 twin for `predict`.

  A checkpoint holds float32 weights; recorded correctness must be what
  those weights predict in float32, not the bfloat16 training forward pass.
  """
  if trainer.config.precision == "float32":
    return trainer
  return EnsembleTrainer(trainer.images_np, trainer.labels_np,
                         dataclasses.replace(trainer.config,
                                             precision="float32"))


@dataclasses.dataclass
class BlockData:
  """The arrays a collection's runs are trained and recorded on."""
  train_images: np.ndarray  # [n_train, ...]
  train_labels: np.ndarray  # int [n_train]
  test_images: np.ndarray  # [n_test, ...]
  test_labels: np.ndarray  # int [n_test]


class EnsembleBlocks:
  """MLP ensembles as a block trainer (`heldout_tf.collection` protocol).

  Each canonical block of G runs is trained as one group by an
  `EnsembleTrainer` (so a run's bits depend on G and its slot: hence the
  canonical blocks); each unfinished run is written with its float32
  checkpoint (`checkpoints/ckpt-<epochs>`) and its aux arrays, the
  correctness recorded as the float32 checkpoint predicts whatever the
  training precision.

  Pass the data, or subclass and override `load_data` (called once, on the
  first block, so a driver's planning copy never loads it).
  """

  def __init__(self, config: TrainConfig, group_size: int,
               save_checkpoints: bool = True,
               data: Optional[BlockData] = None):
    blocks.check_group_size(group_size)
    self.config = config
    self.group_size = int(group_size)
    self.save_checkpoints = save_checkpoints
    self._data = data
    self._trainer = self._evaluator = self._module = None

  def load_data(self) -> BlockData:
    """The runs' data (override to load it lazily)."""
    if self._data is None:
      raise NotImplementedError("pass data= or override load_data")
    return self._data

  @property
  def data(self) -> BlockData:
    if self._data is None:
      self._data = self.load_data()
    return self._data

  @property
  def trainer(self) -> EnsembleTrainer:
    """The `EnsembleTrainer` on the training data (built on first use)."""
    if self._trainer is None:
      self._trainer = EnsembleTrainer(self.data.train_images,
                                      self.data.train_labels, self.config)
      self._evaluator = float32_evaluator(self._trainer)
    return self._trainer

  def module(self, params: Sequence[np.ndarray]) -> snt.Module:
    """One `models.MLP` (built once) holding `params`."""
    if self._module is None:
      self._module = build_module(self.config, params, self.trainer.input_dim)
    else:
      set_params(self._module, params)
    return self._module

  def is_done(self, store, run: int) -> bool:
    """Finished: aux arrays, and a checkpoint if checkpoints are saved."""
    return store.is_finished(run, need_checkpoint=self.save_checkpoints)

  def train_block(self, store, runs: Sequence[int]) -> List[int]:
    """Trains the canonical block holding `runs`; writes its runs of `runs`
    that are not done. Returns the ids written."""
    runs = sorted(set(int(r) for r in runs))
    if not runs:
      return []
    members = blocks.block_of(runs, self.group_size)
    todo = [r for r in runs if not self.is_done(store, r)]
    if not todo:
      return []
    trainer, data = self.trainer, self.data
    result = trainer.train(members)
    correct_train = self._evaluator.predict(
        result, data.train_images) == np.asarray(data.train_labels)[None]
    correct_test = self._evaluator.predict(
        result, data.test_images) == np.asarray(data.test_labels)[None]
    for run in todo:
      g = members.index(run)
      save = None
      if self.save_checkpoints:
        module = self.module(result.model_params(g))
        save = lambda directory, m=module: checkpoints.save(
            m, directory, step=self.config.epochs, epoch=self.config.epochs,
            global_step=trainer.total_steps())
      store.write_run(run, subset=result.subsets[g],
                      correct_train=correct_train[g],
                      correct_test=correct_test[g], save_checkpoint=save)
    return todo
