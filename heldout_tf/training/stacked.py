"""The stacked engine: G MLPs trained as one, stacked weights and batched
matmuls.

  settings = TrainSettings(recipes.get("mnist-mlp"), "mlp", 0.7,
                           trainer="stacked")
  engine = StackedTrainer(settings, data, size=32)
  for result in engine.train(range(32)):
    engine.write(store, result)

For small models one model per step leaves the machine idle, so the G
models' weights are stacked (`[G, out, in]`: oneDNN's batched matmul runs
the first layer about 1.4x faster as `x @ w^T` than as `x @ w` in float32,
alike in bfloat16), each model gathers its own batch (`x[idx]`, `idx`
`[G, b]`) and every layer is one batched matmul.

A run means what it means in the group engine (`trainer.RunTrainer`):
- the same subset and per-epoch order (`heldout_tf.core.seeds`);
- the same initial weights: each run's `models.MLP` is built exactly as
  the group engine builds it (`run_plan.fresh_model`), then its variables
  are stacked;
- the same learning rate per step (`recipe.learning_rates`), loss
  (`steps.smoothed_cross_entropy`, label smoothing) and update rule
  (`steps.sgd_update`: momentum, Nesterov, weight decay; fused, one
  kernel per stacked variable), on the stack;
- the same rounding points as `models.MLP` under `models.precision_scope`
  (`forward`): in bfloat16 each layer casts its input and weights to
  bfloat16, runs the matmul, and adds the bias and applies the ReLU in
  float32; float32 master weights, momenta and loss.
So a run's final weights equal the group engine's up to float32
accumulation order (and, in bfloat16, the roundings that order moves
across a bfloat16 boundary): tests/test_training.py. A run is a pure
function of (settings, canonical block): the same block trains to the same
bytes.

What it cannot train (`settings.unsupported`: augmentation, float16,
signals, the second split, trajectories, other models) the settings
refuse. It keeps no partial checkpoints: a killed block retrains from its
start, to the same bits. A block in which a model's loss or weights went
non-finite stops after that epoch (`steps.DivergedError` naming the run),
checked as the group engine checks (a note set on the device per step, one
read per epoch).
"""

import dataclasses
from typing import Callable, List, Optional

import numpy as np
import tensorflow as tf

from heldout_tf.core import errors
from heldout_tf.core import seeds
from heldout_tf.training import settings as settings_lib
from heldout_tf.training import records
from heldout_tf.training import steps as steps_lib
from heldout_tf.training import run_plan


def forward(x, params, dtype):
  """Logits of G stacked MLPs, each on its own inputs.

  Args:
    x: `[G, b, in]` inputs (float32, or already `dtype`).
    params: `[w0, b0, w1, b1, ...]` float32, weights `[G, out, in]`,
      biases `[G, out]`.
    dtype: tf.float32 or tf.bfloat16, the dtype the matmuls run in.

  Returns:
    float32 `[G, b, classes]`. Each layer is `float32(matmul(dtype(x),
    dtype(w))) + b`, ReLU between layers (in float32): the rounding points
    of `models.MLP`; with float32 every cast is a no-op.
  """
  count = len(params) // 2
  for i in range(count):
    w, b = params[2 * i], params[2 * i + 1]
    y = tf.cast(tf.matmul(tf.cast(x, dtype), tf.cast(w, dtype),
                          transpose_b=True), tf.float32) + b[:, None, :]
    x = tf.nn.relu(y) if i + 1 < count else y
  return x


class _Stack(tf.Module):
  """The stacked variables, momenta and compiled step of G models."""

  def __init__(self, shapes, size: int, trainer: "StackedTrainer",
               jit_compile: bool):
    super().__init__(name="stack")
    self.params = [tf.Variable(tf.zeros([size] + list(shape)))
                   for shape in shapes]
    self.state = steps_lib.TrainState(self.params)
    # Per model: a step's loss was not finite (set on the device).
    self.nonfinite = tf.Variable(tf.zeros([size], tf.bool), trainable=False)
    self._trainer = trainer
    self.step = tf.function(self._step, input_signature=[
        tf.TensorSpec([size, None], tf.int32), tf.TensorSpec([], tf.float32)],
                            jit_compile=jit_compile)
    self.finite = tf.function(self._finite)

  def _step(self, idx, learning_rate):
    """One SGD step of every model on its own batch `idx[g]`; the models'
    mean losses `[G]`."""
    trainer = self._trainer
    recipe = trainer.settings.recipe
    x = tf.gather(trainer.images, idx)
    y = tf.gather(trainer.labels, idx)
    with tf.GradientTape() as tape:
      losses = steps_lib.smoothed_cross_entropy(
          y, forward(x, self.params, trainer.dtype), recipe.label_smoothing)
      # Models share no parameters: the gradient of the sum with respect to
      # model g's parameters is the gradient of model g's own mean loss.
      total = tf.reduce_sum(losses)
    grads = tape.gradient(total, self.params)
    steps_lib.sgd_update(self.params, self.state.momenta, grads,
                         learning_rate, recipe, fused=True)
    steps_lib.note_nonfinite(self.nonfinite, losses)
    return losses

  def _finite(self):
    """`(loss_finite, weights_finite)`, bool `[G]` each: per model, every
    step's loss so far, and every weight now."""
    size = self.nonfinite.shape[0]
    weights = tf.reduce_all(tf.stack(
        [tf.reduce_all(tf.math.is_finite(tf.reshape(p, [size, -1])), axis=1)
         for p in self.params]), axis=0)
    return tf.logical_not(self.nonfinite), weights

  def assign(self, stacked: List[np.ndarray]):
    """Sets the weights (step layout), zeroes the momenta and the models'
    non-finite notes."""
    for var, value in zip(self.params, stacked):
      var.assign(value)
    self.state.reset()
    self.nonfinite.assign(tf.zeros_like(self.nonfinite))


class StackedTrainer:
  """Trains up to `size` MLP runs at once (the engine interface of
  `training.engines`)."""

  def __init__(self, settings, data, size: int, jit_compile: bool = False):
    if settings.trainer != settings_lib.STACKED:
      raise errors.UsageError(
          "StackedTrainer trains settings of engine "
          f"{settings_lib.STACKED!r}, "
          f"got {settings.trainer!r}")
    if size < 1:
      raise errors.UsageError(f"group size must be >= 1, got {size}")
    self.settings, self.data, self.size = settings, data, int(size)
    self.recorder = records.Recorder(settings, data)
    self.dtype = tf.as_dtype(settings.precision)
    n = len(data.train_labels)
    # Stored flattened in the compute dtype: a gathered batch holds what
    # `models.MLP` casts its flattened float32 input to.
    self.images = tf.cast(tf.reshape(steps_lib.pixels(tf.constant(
        data.train_images)), [n, -1]), self.dtype)
    self.labels = tf.constant(data.train_labels.astype(np.int32))
    self._jit = jit_compile
    self._stacks = {}
    self._modules = []  # Per slot: a models.MLP holding its run's result.
    # The one module every write and correctness pass evaluates (a run's
    # weights copied in first): one traced forward for all runs.
    self._writer = None

  def _stack(self, shapes, size: int) -> _Stack:
    if size not in self._stacks:
      self._stacks[size] = _Stack(shapes, size, self, self._jit)
    return self._stacks[size]

  def _subsets(self, runs, subsets) -> List[np.ndarray]:
    if subsets is None:
      return [run_plan.subset_of(self.settings, r, self.data)
              for r in runs]
    subsets = [np.asarray(s, np.int64) for s in subsets]
    if len(subsets) != len(runs) or len({len(s) for s in subsets}) != 1:
      raise errors.UsageError(
          f"the {settings_lib.STACKED} engine needs one subset per run, "
          "all of "
          f"one length; got lengths {[len(s) for s in subsets]} for "
          f"{len(runs)} runs")
    return subsets

  def train(self, runs, partial_dirs=None,
            on_step: Optional[Callable[[int, int], None]] = None,
            subsets=None, trajectory_dirs=None) -> List[records.RunResult]:
    """Trains `runs` (at most `size`) together; their `RunResult`s (each
    valid until the next `train`).

    Args:
      runs: run ids.
      partial_dirs: per run, its partial area: none is kept (a killed
        block retrains from its start), `write` removes it.
      on_step: `on_step(done, total)` after every step.
      subsets: per run, the examples it trains on instead of its subset
        (e.g. a removal ablation's kept examples; equal lengths).
      trajectory_dirs: must be None or all None (no trajectories).
    """
    del partial_dirs  # Nothing to resume from.
    runs = [int(r) for r in runs]
    if not 0 < len(runs) <= self.size:
      raise errors.UsageError(f"1 to {self.size} runs per group, got "
                              f"{len(runs)}")
    if trajectory_dirs is not None and any(trajectory_dirs):
      raise errors.UsageError(f"the {settings_lib.STACKED} engine keeps no "
                              "trajectories")
    subsets = self._subsets(runs, subsets)
    fresh = [run_plan.fresh_model(self.settings, self.data, r)
             for r in runs]
    while len(self._modules) < len(runs):
      self._modules.append(fresh[len(self._modules)])
    initial = [np.stack(v) for v in zip(*[_step_layout(m) for m in fresh])]
    stack = self._stack([v.shape[1:] for v in initial], len(runs))
    stack.assign(initial)
    recipe, seed = self.settings.recipe, self.settings.seed
    size, batch = len(subsets[0]), recipe.batch_size
    steps = recipe.steps_per_epoch(size)
    rates = recipe.learning_rates(size)
    total = recipe.epochs * steps
    for epoch in range(recipe.epochs):
      order = np.stack([seeds.epoch_order(seed, r, epoch, s)
                        for r, s in zip(runs, subsets)]).astype(np.int32)
      for s in range(steps):
        stack.step(tf.constant(order[:, s * batch:(s + 1) * batch]),
                   tf.constant(rates[epoch * steps + s]))
        if on_step is not None:
          on_step(epoch * steps + s + 1, total)
      self._check_finite(stack, runs, epoch)
    final = [v.numpy() for v in stack.params]
    results = []
    for g, (run, subset) in enumerate(zip(runs, subsets)):
      module = self._modules[g]
      for layer, k in zip(module.layers, range(0, len(final), 2)):
        layer.w.assign(final[k][g].T)
        layer.b.assign(final[k + 1][g])
      results.append(records.RunResult(run, module, subset, total, None))
    return results

  def _in_writer(self, result: records.RunResult) -> records.RunResult:
    """`result` with its weights copied into the one module that every
    write and correctness pass evaluates, so one traced forward serves all
    runs (a module per slot would trace a forward per slot)."""
    if self._writer is None:
      self._writer = run_plan.fresh_model(self.settings, self.data,
                                             result.run)
    for mine, theirs in zip(self._writer.variables, result.model.variables):
      mine.assign(theirs)
    return dataclasses.replace(result, model=self._writer)

  def _check_finite(self, stack: _Stack, runs, epoch: int):
    """`steps.DivergedError` naming the first run of `runs` whose loss or
    weights went non-finite by the end of `epoch` (one host read)."""
    loss_ok, weights_ok = (t.numpy() for t in stack.finite())
    for g, run in enumerate(runs):
      if not (loss_ok[g] and weights_ok[g]):
        raise steps_lib.diverged(self.settings, run, epoch,
                                 self.settings.recipe.epochs,
                                 "loss" if not loss_ok[g] else "weights")

  def write(self, store, result: records.RunResult,
            partial: Optional[str] = None, save_checkpoint: bool = True):
    """Writes a trained run into `store` (`records.Recorder.write`)."""
    self.recorder.write(store, self._in_writer(result), partial,
                        save_checkpoint)

  def correctness(self, result: records.RunResult, split: str) -> np.ndarray:
    """bool [n]: what `result`'s float32 model predicts right on `split`
    (`records.Recorder.correctness`)."""
    return self.recorder.correctness(self._in_writer(result).model, split)


def _step_layout(model) -> List[np.ndarray]:
  """`[w0, b0, ...]` of a `models.MLP`, weights `[out, in]`."""
  values = []
  for layer in model.layers:
    values += [layer.w.numpy().T, layer.b.numpy()]
  return values
