"""What one training step does, written once for every engine.

- `pixels`: a uint8 batch as the models see it (`uint8 / 255`, float32);
- `augment`: the recipe's augmentation, drawn from a stateless seed;
- `smoothed_cross_entropy`: the loss (label smoothing), one model's or a
  stack of models' (leading axes);
- `sgd_update` and `TrainState`: the SGD rule (momentum, Nesterov, weight
  decay, as PyTorch's; elementwise ops, or one fused kernel per variable)
  and the state it keeps; float16 dynamic loss scaling
  (`update_loss_scale`).

The group engine (`training.trainer`, `training.group`) runs them on one
model at a time, the stacked engine (`training.stacked`) on G MLPs' stacked
weights.

Divergence: each engine's step also notes, on the device, whether its loss
was non-finite (`note_nonfinite`: no host sync per step); once per epoch
the engine reads that note and checks its weights are finite
(`all_finite`), and a run that failed either is stopped
(`DivergedError`, `diverged`) before anything of it is written.
"""

import tensorflow as tf

from heldout_tf.core import errors
from heldout_tf.training import recipes as recipes_lib

INITIAL_LOSS_SCALE = 2.0**15
LOSS_SCALE_GROWTH_STEPS = 2000


def pixels(images):
  """float32 `uint8 images / 255` (any shape)."""
  return tf.cast(images, tf.float32) / 255.0


def augment(images, seed, recipe: recipes_lib.Recipe):
  """The recipe's augmentation of a float batch `[b, h, w, c]`: flips,
  translations (zero padding), cutout; every draw from the stateless `seed`
  (int [2]), so the same seed gives the same batch."""
  b, h, w = tf.shape(images)[0], images.shape[1], images.shape[2]
  seeds = tf.random.experimental.stateless_split(seed, 5)
  if recipe.flip:
    flip = tf.random.stateless_uniform([b], seeds[0]) < 0.5
    images = tf.where(flip[:, None, None, None], images[:, :, ::-1],
                      images)
  t = int(recipe.translate)
  if t:
    padded = tf.pad(images, [[0, 0], [t, t], [t, t], [0, 0]])
    dy = tf.random.stateless_uniform([b], seeds[1], 0, 2 * t + 1, tf.int32)
    dx = tf.random.stateless_uniform([b], seeds[2], 0, 2 * t + 1, tf.int32)
    rows = dy[:, None] + tf.range(h)[None]
    cols = dx[:, None] + tf.range(w)[None]
    images = tf.gather(padded, rows, axis=1, batch_dims=1)
    images = tf.gather(images, cols, axis=2, batch_dims=1)
  s = int(recipe.cutout)
  if s:
    cy = tf.random.stateless_uniform([b], seeds[3], 0, h, tf.int32)
    cx = tf.random.stateless_uniform([b], seeds[4], 0, w, tf.int32)
    y0, x0 = cy - s // 2, cx - s // 2
    in_rows = ((tf.range(h)[None] >= y0[:, None]) &
               (tf.range(h)[None] < y0[:, None] + s))
    in_cols = ((tf.range(w)[None] >= x0[:, None]) &
               (tf.range(w)[None] < x0[:, None] + s))
    hole = in_rows[:, :, None] & in_cols[:, None, :]
    images = tf.where(hole[..., None], tf.zeros_like(images), images)
  return images


def smoothed_cross_entropy(labels, logits, smoothing: float):
  """Mean softmax cross-entropy with label smoothing (PyTorch's
  definition: `(1 - e) * nll + e * mean_k(-log p_k)`).

  Args:
    labels: int `[..., b]`.
    logits: float32 `[..., b, classes]`.
    smoothing: e.

  Returns:
    float32 `[...]`: the mean over the batch axis (a scalar for one
    model's `[b]` labels; `[G]` for G stacked models').
  """
  logp = tf.nn.log_softmax(logits)
  nll = -tf.gather(logp, labels, axis=-1, batch_dims=labels.shape.rank)
  if smoothing:
    nll = (1.0 - smoothing) * nll + smoothing * -tf.reduce_mean(logp, -1)
  return tf.reduce_mean(nll, axis=-1)


class TrainState(tf.Module):
  """The optimizer and loss-scale state of one run, or of a stack of runs
  (momenta shaped as the variables; saved for resuming)."""

  def __init__(self, variables):
    super().__init__(name="train_state")
    self.momenta = [tf.Variable(tf.zeros_like(v), trainable=False)
                    for v in variables]
    self.loss_scale = tf.Variable(INITIAL_LOSS_SCALE, trainable=False)
    self.good_steps = tf.Variable(0, dtype=tf.int64, trainable=False)

  def reset(self):
    for m in self.momenta:
      m.assign(tf.zeros_like(m))
    self.loss_scale.assign(INITIAL_LOSS_SCALE)
    self.good_steps.assign(0)


def sgd_update(variables, momenta, grads, learning_rate,
               recipe: recipes_lib.Recipe, fused: bool = False):
  """One SGD step as PyTorch's: `g += wd * w; buf = mu * buf + g; w -= lr *
  (g + mu * buf if nesterov else buf)`.

  Args:
    variables: the float32 variables.
    momenta: their momentum buffers (`TrainState.momenta`).
    grads: their gradients.
    learning_rate: float32 scalar tensor.
    recipe: momentum, nesterov, weight_decay.
    fused: run the momentum and the update as one kernel per variable
      (`ResourceApplyMomentum`: one pass over memory instead of four; the
      same rule, rounded in another order: with Nesterov `w -= lr * g + lr
      * mu * buf`). Without, elementwise ops in the order written above
      (the group engine's, which its recorded bits depend on).
  """
  mu = tf.constant(recipe.momentum, tf.float32)
  wd = tf.constant(recipe.weight_decay, tf.float32)
  for var, buf, g in zip(variables, momenta, grads):
    if recipe.weight_decay:
      g = g + wd * var
    if fused:
      tf.raw_ops.ResourceApplyMomentum(
          var=var.handle, accum=buf.handle, lr=learning_rate, grad=g,
          momentum=mu, use_nesterov=recipe.nesterov)
      continue
    buf.assign(mu * buf + g)
    update = g + mu * buf if recipe.nesterov else buf
    var.assign_sub(learning_rate * update)


def update_loss_scale(state: TrainState, finite):
  """Dynamic loss scaling (float16): halve on overflow, double after a
  stretch of finite steps."""
  good = tf.where(finite, state.good_steps + 1, 0)
  grow = good >= LOSS_SCALE_GROWTH_STEPS
  scale = tf.where(finite, tf.where(grow, state.loss_scale * 2.0,
                                    state.loss_scale),
                   tf.maximum(state.loss_scale / 2.0, 1.0))
  state.loss_scale.assign(scale)
  state.good_steps.assign(tf.where(grow, tf.zeros_like(good), good))


class DivergedError(errors.HeldoutError, ArithmeticError):
  """A run's loss or weights became non-finite: it is not recorded."""


def diverged(settings, run: int, epoch: int, epochs: int, what: str,
             phase: str = "") -> DivergedError:
  """The error of run `run` (of a `TrainSettings`) that went non-finite in
  (0-based) `epoch` of `epochs`: names the run, the epoch, what went wrong
  and what to change (the learning rate; the precision unless float32)."""
  recipe = settings.recipe
  hints = [f"a lower --learning_rate (this run's is "
           f"{recipe.learning_rate:g})"]
  if settings.precision != "float32":
    hints.append(f"--precision float32 (this run trains in "
                 f"{settings.precision})")
  return DivergedError(
      f"run {run} diverged in {phase}epoch {epoch + 1} of {epochs}: its "
      f"{what} became non-finite (NaN or infinite), so it is not recorded; "
      f"try {' or '.join(hints)}")


def note_nonfinite(flag: tf.Variable, loss):
  """Sets the bool `flag` (shaped as `loss`: a run's scalar, or `[G]` for
  G stacked runs) where `loss` is not finite; on the device, in the step."""
  flag.assign(tf.logical_or(flag, tf.logical_not(tf.math.is_finite(loss))))


def all_finite(variables) -> tf.Tensor:
  """bool scalar: every value of every floating-point variable is finite
  (integer ones, e.g. batch-norm counters, always are)."""
  return tf.reduce_all([tf.reduce_all(tf.math.is_finite(v))
                        for v in variables if v.dtype.is_floating] +
                       [tf.constant(True)])
