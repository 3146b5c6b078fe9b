"""Trains any Sonnet model, one run at a time, by a recipe; resumable.

  settings = TrainSettings(recipes.get("resnet9"), "resnet9", ratio=0.7)
  trainer = RunTrainer(settings, sources.load("cifar10"))
  trainer.train_and_write(store, run)   # or .train(run) for the model

A run is a pure function of (settings, data, run id):
- its subset is `heldout_tf.training.ensemble.subset_indices` (the rule every kit
  collection uses) and its per-epoch order `ensemble.epoch_order`, both
  drawn from `(settings.seed, run)`;
- its initial weights come from building the model under
  `tf.random.set_seed(init_seed(settings, run))`;
- its augmentation at step s of epoch e uses stateless random ops seeded by
  `(seed, run, e, s)`;
- everything else (momentum, batch-norm statistics, the float16 loss scale)
  is state saved with the model.

Preemption: every `checkpoint_every` epochs the model, the optimizer state,
the loss scale and the epoch are saved into the run's partial area
(`<run>/partial/ckpt-<epoch>`); `train` resumes from the newest one, and
the resumed run ends with the same bits as an uninterrupted one (tested).

Precision: 'float32'; 'bfloat16' or 'float16' mixed precision (the kit's
models run convolutions and matmuls in that dtype, see `models.
precision_scope`; float32 master weights, optimizer, batch norm and loss),
float16 with dynamic loss scaling; 'auto' picks per device
(`resolve_precision`). The recorded correctness is always what the float32
checkpoint predicts in evaluation mode (`heldout_tf.collection.evaluation.evaluate`,
the code the restore-and-cross-check runs), whatever the training precision.
"""

import dataclasses
import glob
import os
import re
import shutil
from typing import Callable, Optional

import numpy as np
import tensorflow as tf

from heldout_tf.models import checkpoints
from heldout_tf.core import errors
from heldout_tf.collection import evaluation
from heldout_tf.core import hardware
from heldout_tf.data import image_data
from heldout_tf.data import pipelines
from heldout_tf.collection import layout
from heldout_tf import models
from heldout_tf.training import recipes as recipes_lib
from heldout_tf.training import ensemble

PRECISIONS = ("float32", "bfloat16", "float16")
CHOICES = PRECISIONS + ("auto",)
PARTIAL_DIRNAME = "partial"
# Streams of a run's randomness beside heldout_tf.training.ensemble's (subset 0,
# shuffle 1, MLP init 2): entropy [seed, run, stream, ...].
_MODEL_INIT_STREAM, _AUGMENT_STREAM = 4, 3
_INITIAL_LOSS_SCALE = 2.0**15
_LOSS_SCALE_GROWTH_STEPS = 2000
_PARTIAL_RE = re.compile(r"ckpt-(\d+)\.index")


@dataclasses.dataclass(frozen=True)
class TrainSettings:
  """Everything a run depends on besides the data and its id (picklable).

  Attributes:
    recipe: how to train.
    model: a `models.build` name ('resnet9', 'small_inception', 'mlp',
      'pkg.mod:fn').
    ratio: the share of the training set each run trains on.
    seed: the collection's seed.
    precision: 'float32', 'bfloat16' or 'float16' (resolve 'auto' with
      `resolve_precision` first).
    model_options: keyword arguments of the model's constructor (e.g.
      `{'width': 0.25}` for a small ResNet-9).
    checkpoint_every: save the partial state every this many epochs (0:
      never).
  """
  recipe: recipes_lib.Recipe
  model: str
  ratio: float
  seed: int = 0
  precision: str = "float32"
  model_options: tuple = ()  # Sorted (key, value) pairs.
  checkpoint_every: int = 1
  signals: bool = False  # Also write each run's per-epoch signals.npz.
  ssft_epochs: int = 0  # Second-split epochs after training (with signals).
  trajectory_runs: int = 0  # Runs 0..K-1 keep every epoch's checkpoint.

  def __post_init__(self):
    if self.precision not in PRECISIONS:
      raise errors.UsageError(
          f"--precision must be one of {', '.join(CHOICES)} (resolve 'auto' "
          f"first), got {self.precision!r}")
    if not 0.0 < self.ratio <= 1.0:
      raise errors.UsageError(f"ratio must be in (0, 1], got {self.ratio}")
    if self.seed < 0:
      raise errors.UsageError(f"--seed must be >= 0, got {self.seed}")
    if self.checkpoint_every < 0:
      raise errors.UsageError(
          f"--checkpoint_every must be >= 0, got {self.checkpoint_every}")
    if self.ssft_epochs < 0:
      raise errors.UsageError(
          f"--ssft_epochs must be >= 0, got {self.ssft_epochs}")
    if self.ssft_epochs and not self.signals:
      raise errors.UsageError("--ssft_epochs needs --signals (second-split "
                              "forgetting is one of the signals)")
    if self.ssft_epochs and self.ratio >= 1.0:
      raise errors.UsageError("--ssft_epochs needs a ratio below 1 (the "
                              "second split is the held-out examples)")
    if self.trajectory_runs < -1:
      raise errors.UsageError(
          f"--trajectory_runs must be >= -1, got {self.trajectory_runs}")
    if isinstance(self.model_options, dict):
      object.__setattr__(self, "model_options",
                         tuple(sorted(self.model_options.items())))

  @property
  def options(self) -> dict:
    """The model's constructor options (with the recipe's `bn_decay`)."""
    options = dict(self.model_options)
    arch = models.MODEL_NAMES.get(self.model, self.model)
    if (self.recipe.bn_decay is not None and arch in ("inception", "resnet9")
        and "bn_decay" not in options):
      options["bn_decay"] = self.recipe.bn_decay
    return options

  def subset_config(self) -> ensemble.TrainConfig:
    """The `ensemble.TrainConfig` whose subset and order rules runs use."""
    return ensemble.TrainConfig(ratio=self.ratio, seed=self.seed,
                                batch_size=self.recipe.batch_size)

  def config(self) -> dict:
    """JSON values recorded with a collection (all that fixes its runs;
    `ssft_epochs` only when there is a second phase)."""
    config = {"recipe": self.recipe.config(), "model": self.model,
              "model_options": dict(self.model_options), "ratio": self.ratio,
              "seed": self.seed, "precision": self.precision,
              "checkpoint_every": self.checkpoint_every,
              "signals": self.signals}
    if self.ssft_epochs:
      config["ssft_epochs"] = self.ssft_epochs
    return config

  def ssft_recipe(self) -> recipes_lib.Recipe:
    """The second phase's recipe: this recipe's schedule squeezed into
    `ssft_epochs` epochs (same peak rate, batch, optimizer, augmentation;
    the kit's choice, see `RunTrainer.second_split`)."""
    recipe = self.recipe
    return recipe.replace(epochs=self.ssft_epochs,
                          peak_epoch=recipe.peak_epoch * self.ssft_epochs /
                          recipe.epochs)

  def keeps_trajectory(self, run: int) -> bool:
    """Whether run `run` keeps a checkpoint of every epoch."""
    return self.trajectory_runs < 0 or run < self.trajectory_runs


def resolve_precision(requested: str) -> hardware.Precision:
  """'float32' | 'bfloat16' | 'float16' | 'auto' -> what to train in.

  'auto': bfloat16 where the device has fast bfloat16 units (see
  `heldout_tf.core.hardware`), float16 on a GPU of compute capability 7.x (fast
  float16, no bfloat16), else float32.
  """
  if requested not in CHOICES:
    raise errors.UsageError(
        f"--precision must be one of {', '.join(CHOICES)}, got {requested!r}")
  if requested == "float16":
    return hardware.Precision("float16", "requested")
  chosen = hardware.resolve_precision(requested)
  if requested == "auto" and chosen.name == "float32":
    for gpu in tf.config.list_physical_devices("GPU"):
      details = tf.config.experimental.get_device_details(gpu)
      if tuple(details.get("compute_capability", (0, 0))) >= (7, 0):
        return hardware.Precision("float16", "auto: GPU with float16 units")
  return chosen


def subset_indices(settings: TrainSettings, run: int, n: int) -> np.ndarray:
  """int64, sorted: the training examples run `run` trains on."""
  return ensemble.subset_indices(settings.subset_config(), run, n)


def init_seed(settings: TrainSettings, run: int) -> int:
  """The global TensorFlow seed run `run`'s model is built under."""
  return int(np.random.SeedSequence(
      [settings.seed, int(run), _MODEL_INIT_STREAM]).generate_state(1)[0])


def augment_seed(settings: TrainSettings, run: int, epoch: int,
                 step: int) -> np.ndarray:
  """int64 [2]: the stateless seed of step `step` of epoch `epoch`."""
  return np.random.SeedSequence(
      [settings.seed, int(run), _AUGMENT_STREAM, int(epoch), int(step)]
  ).generate_state(2).astype(np.int64)


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
  definition: `(1 - e) * nll + e * mean_k(-log p_k)`)."""
  logp = tf.nn.log_softmax(logits)
  nll = -tf.gather(logp, labels, axis=1, batch_dims=1)
  if smoothing:
    nll = (1.0 - smoothing) * nll + smoothing * -tf.reduce_mean(logp, -1)
  return tf.reduce_mean(nll)


class TrainState(tf.Module):
  """The optimizer and loss-scale state of one run (saved for resuming).

  SGD as PyTorch's: `g += wd * w; buf = mu * buf + g; w -= lr * (g + mu *
  buf if nesterov else buf)`.
  """

  def __init__(self, variables):
    super().__init__(name="train_state")
    self.momenta = [tf.Variable(tf.zeros_like(v), trainable=False)
                    for v in variables]
    self.loss_scale = tf.Variable(_INITIAL_LOSS_SCALE, trainable=False)
    self.good_steps = tf.Variable(0, dtype=tf.int64, trainable=False)

  def reset(self):
    for m in self.momenta:
      m.assign(tf.zeros_like(m))
    self.loss_scale.assign(_INITIAL_LOSS_SCALE)
    self.good_steps.assign(0)


@dataclasses.dataclass
class RunResult:
  """One trained run: the trainer's model (valid until the next run)."""
  run: int
  model: object  # snt.Module at the run's final weights.
  subset: np.ndarray  # int64 [k]
  global_step: int
  resumed_from: Optional[int]  # The epoch a partial checkpoint gave, or None.
  signals: Optional["_SignalSums"] = None  # With `settings.signals`.


class _SignalSums:
  """A run's per-example signal sums over its epochs so far."""

  def __init__(self, m: int):
    self.margin_sum = np.zeros([m])
    self.correct_epochs = np.zeros([m], np.int32)
    self.tracin_sum = np.zeros([m])
    self.heldout = self.heldout_probs = None  # After the last epoch.
    self.final_correct = None  # bool [m]: right after the last epoch.
    # Second split: the last second-phase epoch each example was right at
    # (0: the end of the first phase, -1: never), then `forget_epoch`.
    self.last_correct = self.forget_epoch = None

  def save(self, path: str):
    from heldout_tf.core import files  # pylint: disable=g-import-not-at-top
    files.save_npz(path, margin_sum=self.margin_sum,
                   correct_epochs=self.correct_epochs,
                   tracin_sum=self.tracin_sum)

  def load(self, path: str):
    """The sums saved beside a partial checkpoint (written by `save`)."""
    try:
      with np.load(path, allow_pickle=False) as f:
        values = {k: f[k] for k in ("margin_sum", "correct_epochs",
                                    "tracin_sum")}
    except (OSError, KeyError, ValueError) as e:
      raise checkpoints.CheckpointCorruptError(
          f"{path}: cannot resume the run's signals ({e}); remove "
          f"{os.path.dirname(path)} to restart the run") from e
    for key, value in values.items():
      if value.shape != getattr(self, key).shape:
        raise checkpoints.CheckpointCorruptError(
            f"{path}: {key} has shape {list(value.shape)}, expected "
            f"{list(getattr(self, key).shape)}")
      setattr(self, key, value.astype(getattr(self, key).dtype))


class _Plan:
  """The steps of one phase of a run: batches, rates, augmentation seeds.

  The first phase trains on the run's subset with the recipe; a second
  phase (`RunTrainer.second_split`) on its held-out complement with
  `recipe`, its epochs numbered on from the first's (`epoch_offset`) so
  its orders and augmentation draws are new ones.
  """

  def __init__(self, settings: TrainSettings, run: int, subset, first_epoch,
               recipe: Optional[recipes_lib.Recipe] = None,
               epoch_offset: int = 0):
    recipe = recipe or settings.recipe
    self.settings, self.run, self.subset = settings, run, subset
    self.first_epoch, self.epochs = first_epoch, recipe.epochs
    self.epoch_offset = epoch_offset
    self.steps = recipe.steps_per_epoch(len(subset))
    self.total = recipe.epochs * self.steps
    self._rates = recipe.learning_rates(len(subset))
    self._config = settings.subset_config()
    self._order = {}
    self.signals = None  # A _SignalSums with `settings.signals`.
    self.partial_dir = None  # The run's partial area (resume checkpoints).
    self.trajectory_dir = None  # Where every epoch's checkpoint goes.

  def rate(self, step: int) -> float:
    """The learning rate of step `step` (counted over the whole phase)."""
    return self._rates[step]

  def step_inputs(self, epoch: int, step: int):
    """`(batch indices, learning rate, augmentation seed)` tensors of step
    `step` of the phase's epoch `epoch`."""
    absolute = self.epoch_offset + epoch
    if absolute not in self._order:
      self._order = {absolute: ensemble.epoch_order(
          self._config, self.run, absolute, self.subset)}
    b = self.settings.recipe.batch_size
    idx = self._order[absolute][step * b:(step + 1) * b].astype(np.int32)
    return (tf.constant(idx), tf.constant(self._rates[epoch * self.steps
                                                      + step]),
            tf.constant(augment_seed(self.settings, self.run, absolute,
                                     step)))


class RunTrainer:
  """Trains runs of one collection on in-memory data, one at a time.

  One model and one compiled step serve every run: a run starts by copying
  into it the variables of a freshly built model (seeded by the run).
  """

  def __init__(self, settings: TrainSettings, data: image_data.ImageData,
               jit_compile: bool = False, tensors=None):
    """`jit_compile`: compile the step with XLA (for GPUs); `tensors`: the
    `(images, labels)` tensors of another trainer on the same data, to
    share them."""
    self.settings = settings
    self.data = data
    self.recipe = settings.recipe
    if tensors is None:
      tensors = (tf.constant(data.train_images),
                 tf.constant(data.train_labels.astype(np.int32)))
    self.tensors = tensors
    self._images, self._labels = tensors
    self.model = self._fresh_model(0)
    self._variables = self.model.trainable_variables
    self.state = TrainState(self._variables)
    self._dtype = tf.as_dtype(settings.precision)
    self.compiled_step = tf.function(self.train_step, input_signature=[
        tf.TensorSpec([None], tf.int32), tf.TensorSpec([], tf.float32),
        tf.TensorSpec([2], tf.int64)], jit_compile=jit_compile)
    self._eval = None
    self._forward = tf.function(
        lambda x: models.features_and_logits(self.model, x),
        input_signature=[tf.TensorSpec((None,) + data.image_shape,
                                       tf.float32)])

  # -- building --

  def _fresh_model(self, run: int):
    """The model run `run` starts from (built, float32)."""
    tf.random.set_seed(init_seed(self.settings, run))
    model = models.build(self.settings.model, self.data.num_classes,
                         **self.settings.options)
    models.check_output(model, self.settings.model, self.data.image_shape,
                        self.data.num_classes)
    return model

  def _start(self, run: int):
    fresh = self._fresh_model(run)
    mine, theirs = self.model.variables, fresh.variables
    if [v.shape for v in mine] != [v.shape for v in theirs]:
      raise errors.UsageError(
          f"--model {self.settings.model}: builds different variables on "
          "each call; it must be deterministic in structure")
    for var, value in zip(mine, theirs):
      var.assign(value)
    self.state.reset()

  # -- the step --

  def train_step(self, idx, learning_rate, seed):
    """One SGD step on the examples `idx` (int32 [b]) at `learning_rate`,
    augmented from the stateless `seed` (int64 [2]); the mean loss. Traced
    into `compiled_step` (and into a `GroupTrainer`'s step)."""
    recipe = self.recipe
    x = tf.cast(tf.gather(self._images, idx), tf.float32) / 255.0
    y = tf.gather(self._labels, idx)
    if recipe.augments:
      x = augment(x, seed, recipe)
    float16 = self._dtype == tf.float16
    with tf.GradientTape() as tape:
      with models.precision_scope(self._dtype):
        logits = self.model(x, is_training=True)
      loss = smoothed_cross_entropy(y, tf.cast(logits, tf.float32),
                                    recipe.label_smoothing)
      scaled = loss * self.state.loss_scale if float16 else loss
    grads = tape.gradient(scaled, self._variables)
    if float16:
      grads = [g / self.state.loss_scale for g in grads]
      finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g))
                              for g in grads])
    else:
      finite = tf.constant(True)
    mu = tf.constant(recipe.momentum, tf.float32)
    wd = tf.constant(recipe.weight_decay, tf.float32)

    def apply():
      for var, buf, g in zip(self._variables, self.state.momenta, grads):
        if recipe.weight_decay:
          g = g + wd * var
        buf.assign(mu * buf + g)
        update = g + mu * buf if recipe.nesterov else buf
        var.assign_sub(learning_rate * update)
      return tf.constant(True)

    if float16:
      tf.cond(finite, apply, lambda: tf.constant(False))
      self._update_loss_scale(finite)
    else:
      apply()
    return loss

  def _update_loss_scale(self, finite):
    """Dynamic loss scaling: halve on overflow, double after a stretch of
    finite steps."""
    state = self.state
    good = tf.where(finite, state.good_steps + 1, 0)
    grow = good >= _LOSS_SCALE_GROWTH_STEPS
    scale = tf.where(finite, tf.where(grow, state.loss_scale * 2.0,
                                      state.loss_scale),
                     tf.maximum(state.loss_scale / 2.0, 1.0))
    state.loss_scale.assign(scale)
    state.good_steps.assign(tf.where(grow, tf.zeros_like(good), good))

  # -- partial checkpoints --

  def _checkpoint(self, epoch=0, global_step=0):
    return tf.train.Checkpoint(
        model=self.model, train_state=self.state,
        epoch=tf.Variable(epoch, dtype=tf.int64),
        global_step=tf.Variable(global_step, dtype=tf.int64))

  def _resume(self, partial_dir: str) -> Optional[int]:
    """Restores the newest partial checkpoint; its epoch, or None."""
    found = sorted(int(m.group(1)) for m in (
        _PARTIAL_RE.fullmatch(os.path.basename(f)) for f in glob.glob(
            os.path.join(glob.escape(partial_dir), "ckpt-*.index"))) if m)
    if not found:
      return None
    prefix = os.path.join(partial_dir, f"ckpt-{found[-1]}")
    ckpt = self._checkpoint()
    try:
      ckpt.read(prefix).assert_consumed()
    except (tf.errors.OpError, AssertionError, ValueError) as e:
      raise checkpoints.CheckpointCorruptError(
          f"{prefix}: cannot resume from this partial checkpoint "
          f"({str(e).splitlines()[0][:200]}); remove {partial_dir} to "
          "restart the run") from e
    return int(ckpt.epoch.numpy())

  def _save_partial(self, partial_dir, epoch, global_step):
    checkpoints.save(self.model, partial_dir, step=epoch, epoch=epoch,
                     global_step=global_step, train_state=self.state)
    for f in glob.glob(os.path.join(glob.escape(partial_dir), "*-*")):
      m = re.fullmatch(r"(?:ckpt|signals)-(\d+)\..*", os.path.basename(f))
      if m and int(m.group(1)) < epoch:
        os.remove(f)

  # -- training --

  def total_steps(self) -> int:
    size = len(subset_indices(self.settings, 0, len(self.data.train_labels)))
    return self.recipe.epochs * self.recipe.steps_per_epoch(size)

  def train(self, run: int, partial_dir: Optional[str] = None,
            on_step: Optional[Callable[[int, int], None]] = None,
            on_epoch_end: Optional[Callable[[int], None]] = None,
            trajectory_dir: Optional[str] = None) -> RunResult:
    """Trains run `run` (resuming from `partial_dir` when it holds a partial
    checkpoint, saving there every `checkpoint_every` epochs), then its
    second split when `settings.ssft_epochs`.

    Args:
      run: the run id.
      partial_dir: the run's partial area; None: no checkpoints.
      on_step: `on_step(done, total)` after every step.
      on_epoch_end: `on_epoch_end(epoch)` after each epoch (and its partial
        checkpoint).
      trajectory_dir: where to keep a checkpoint of every epoch (None:
        nowhere).

    Returns:
      The model at the run's final weights (the trainer's own module).
    """
    plan = self.begin(run, partial_dir, trajectory_dir=trajectory_dir)
    for epoch in range(plan.first_epoch, self.recipe.epochs):
      for s in range(plan.steps):
        self.compiled_step(*plan.step_inputs(epoch, s))
        if on_step is not None:
          on_step(epoch * plan.steps + s + 1, plan.total)
      self.end_epoch(plan, epoch)
      if on_epoch_end is not None:
        on_epoch_end(epoch)
    if self.settings.ssft_epochs:
      second = self.second_split(plan)
      for epoch in range(second.epochs):
        for s in range(second.steps):
          self.compiled_step(*second.step_inputs(epoch, s))
        self.end_second_epoch(second, epoch)
      self.end_second_split(second)
    return RunResult(run, self.model, plan.subset, plan.total,
                     plan.first_epoch or None, plan.signals)

  def begin(self, run: int, partial_dir: Optional[str] = None,
            subset: Optional[np.ndarray] = None,
            trajectory_dir: Optional[str] = None) -> "_Plan":
    """Starts run `run` (fresh weights, or the newest partial checkpoint in
    `partial_dir`) on its subset, or on `subset` (int64 sorted, e.g. a
    removal ablation's kept examples); returns what its steps are."""
    if subset is None:
      subset = subset_indices(self.settings, run,
                              len(self.data.train_labels))
    self._start(run)
    first = 0
    if partial_dir is not None and os.path.isdir(partial_dir):
      first = self._resume(partial_dir) or 0
    plan = _Plan(self.settings, run, subset, first)
    plan.partial_dir, plan.trajectory_dir = partial_dir, trajectory_dir
    if self.settings.signals:
      plan.signals = _SignalSums(len(subset))
      if first:
        plan.signals.load(os.path.join(partial_dir, f"signals-{first}.npz"))
    return plan

  def end_epoch(self, plan: "_Plan", epoch: int):
    """Records the epoch's signals (with `settings.signals`), then saves the
    partial checkpoint into the plan's partial area when one is due after
    `epoch` (signal sums first, so a partial checkpoint always has its
    sums), and the trajectory checkpoint `ckpt-<epoch + 1>` when the plan
    keeps one."""
    partial_dir = plan.partial_dir
    if plan.signals is not None:
      self._record_signals(plan, epoch)
    if plan.trajectory_dir is not None:
      checkpoints.save(self.model, plan.trajectory_dir, step=epoch + 1,
                       epoch=epoch + 1, global_step=(epoch + 1) * plan.steps)
    every = self.settings.checkpoint_every
    if (partial_dir is not None and every and (epoch + 1) % every == 0
        and epoch + 1 < self.recipe.epochs):
      if plan.signals is not None:
        plan.signals.save(os.path.join(partial_dir,
                                       f"signals-{epoch + 1}.npz"))
      self._save_partial(partial_dir, epoch + 1, (epoch + 1) * plan.steps)

  # -- second-split forgetting --

  def second_split(self, plan: "_Plan") -> "_Plan":
    """Starts the second phase of a run whose first phase `plan` has just
    ended (with signals): training goes on, with a fresh optimizer state,
    on the run's held-out complement by `settings.ssft_recipe()`, and after
    every epoch `end_second_epoch` notes which first-split examples the
    model still predicts right (Maini et al. 2022, second-split
    forgetting). `end_second_split` puts the first phase's weights back,
    so the run's checkpoint and recorded correctness are the first
    phase's. Returns the phase's plan."""
    sums = plan.signals
    sums.last_correct = np.where(sums.final_correct, 0, -1).astype(np.int32)
    self._first_phase_values = [v.numpy() for v in self.model.variables]
    self.state.reset()
    second = _Plan(self.settings, plan.run, sums.heldout, 0,
                   self.settings.ssft_recipe(),
                   epoch_offset=self.recipe.epochs)
    second.first_phase = plan
    return second

  def end_second_epoch(self, second: "_Plan", epoch: int):
    """Notes the first-split examples the model predicts right after the
    second phase's epoch `epoch` (evaluation mode, float32)."""
    from heldout_tf.collection import signals as signals_lib  # pylint: disable=g-import-not-at-top
    first = second.first_phase
    _, logits = self.features_and_logits(first.subset)
    right = signals_lib.margins(logits,
                                self.data.train_labels[first.subset]) > 0
    first.signals.last_correct[right] = epoch + 1

  def end_second_split(self, second: "_Plan"):
    """Fills in the forgetting epochs (1 + the last second-phase epoch an
    example was right at; 0: wrong after the first phase; ssft_epochs + 1:
    never forgotten) and restores the first phase's weights."""
    sums = second.first_phase.signals
    sums.forget_epoch = (sums.last_correct + 1).astype(np.int32)
    for var, value in zip(self.model.variables, self._first_phase_values):
      var.assign(value)
    self._first_phase_values = None

  def features_and_logits(self, idx: np.ndarray, chunk: int = 512):
    """float32 `(features [k, d], logits [k, classes])` of the model in
    evaluation mode on the training examples `idx`."""
    out = [self._forward(tf.constant(image_data.as_float(
        self.data.train_images[idx[i:i + chunk]])))
           for i in range(0, len(idx), chunk)]
    if not out:
      return np.zeros([0, 0], np.float32), np.zeros(
          [0, self.data.num_classes], np.float32)
    return tuple(np.concatenate([o[k].numpy() for o in out])
                 for k in range(2))

  def _record_signals(self, plan: "_Plan", epoch: int):
    """Adds this epoch's margin, correctness and last-layer TracIn term of
    every training example of the run (evaluation mode, float32); after the
    last epoch also keeps the softmax on its held-out examples."""
    from heldout_tf.collection import signals as signals_lib  # pylint: disable=g-import-not-at-top
    labels = self.data.train_labels
    features, logits = self.features_and_logits(plan.subset)
    margin = signals_lib.margins(logits, labels[plan.subset])
    sums = plan.signals
    sums.margin_sum += margin
    sums.correct_epochs += margin > 0
    rate = float(plan.rate((epoch + 1) * plan.steps - 1))
    sums.tracin_sum += signals_lib.tracin_terms(
        features, logits, labels[plan.subset], rate)
    if epoch + 1 == self.recipe.epochs:
      sums.final_correct = margin > 0
      heldout = np.setdiff1d(np.arange(len(labels)), plan.subset)
      _, logits = self.features_and_logits(heldout)
      sums.heldout = heldout
      sums.heldout_probs = signals_lib.softmax(logits).astype(np.float32)

  def run_signals(self, plan_or_result) -> "object":
    """The `signals.RunSignals` of a finished run."""
    from heldout_tf.collection import signals as signals_lib  # pylint: disable=g-import-not-at-top
    sums = plan_or_result.signals
    return signals_lib.RunSignals(
        n_train=len(self.data.train_labels),
        num_classes=self.data.num_classes, epochs=self.recipe.epochs,
        learning_rate=float(self.recipe.learning_rate),
        subset=plan_or_result.subset, margin_sum=sums.margin_sum,
        correct_epochs=sums.correct_epochs, tracin_sum=sums.tracin_sum,
        heldout=sums.heldout, heldout_probs=sums.heldout_probs,
        ssft_epochs=(self.settings.ssft_epochs
                     if sums.forget_epoch is not None else 0),
        forget_epoch=sums.forget_epoch)

  def correctness(self, model=None, split: str = "train") -> np.ndarray:
    """bool [n]: what the float32 model predicts right in evaluation mode,
    computed by `heldout_tf.collection.evaluation.evaluate` (as a cross-check would)."""
    if self._eval is None:
      self._eval = pipelines.in_memory_dataset(
          self.data.name, self.data.images, self.data.labels)
    result = evaluation.evaluate(model or self.model, self._eval, split,
                                 self.recipe.eval_batch_size, progress=False)
    return result.correct

  def train_and_write(self, store, run: int,
                      on_step: Optional[Callable[[int, int], None]] = None
                      ) -> bool:
    """Trains run `run` into `store` (a `collection.Store`) unless it is
    finished: final checkpoint, then `aux_arrays.npz`, then the partial area
    is removed. Returns whether it trained."""
    if store.is_finished(run, need_checkpoint=True):
      return False
    partial = partial_dir(store, run)
    self.write(store, self.train(run, partial, on_step=on_step,
                                 trajectory_dir=trajectory_dir(
                                     self.settings, store, run)), partial)
    return True

  def write(self, store, result: RunResult, partial: Optional[str] = None,
            save_checkpoint: bool = True):
    """Writes a trained run into `store`: its float32 checkpoint
    (`checkpoints/ckpt-<epochs>`; not with `save_checkpoint=False`), then
    `aux_arrays.npz` with the correctness that checkpoint predicts; then
    removes `partial`."""
    if result.signals is not None:  # Before the aux arrays mark it done.
      from heldout_tf.collection import signals as signals_lib  # pylint: disable=g-import-not-at-top
      self.run_signals(result).save(
          signals_lib.signals_path(store.run_dir(result.run)))
    correct_train = self.correctness(result.model, "train")
    correct_test = self.correctness(result.model, "test")
    epochs = self.recipe.epochs
    store.write_run(
        result.run, subset=result.subset, correct_train=correct_train,
        correct_test=correct_test,
        save_checkpoint=(lambda directory: checkpoints.save(
            result.model, directory, step=epochs, epoch=epochs,
            global_step=result.global_step)) if save_checkpoint else None)
    if partial is not None:
      shutil.rmtree(partial, ignore_errors=True)


def partial_dir(store, run: int) -> str:
  """Run `run`'s partial area in `store`: `<run>/partial/`."""
  return os.path.join(store.run_dir(run), PARTIAL_DIRNAME)


def trajectory_dir(settings: TrainSettings, store, run: int
                   ) -> Optional[str]:
  """`<run>/trajectory/` when run `run` keeps every epoch's checkpoint
  (`settings.trajectory_runs`), else None."""
  if not settings.keeps_trajectory(run):
    return None
  return os.path.join(store.run_dir(run), layout.TRAJECTORY_DIRNAME)


class GroupTrainer:
  """Trains several runs side by side: one compiled step runs every
  member's own step (the same ops as `RunTrainer`, one model each), so a
  GPU gets several models' work per launch. Members share the data."""

  def __init__(self, settings: TrainSettings, data: image_data.ImageData,
               size: int, jit_compile: bool = False):
    if size < 1:
      raise errors.UsageError(f"group size must be >= 1, got {size}")
    first = RunTrainer(settings, data, jit_compile)
    self.members = [first] + [
        RunTrainer(settings, data, jit_compile, tensors=first.tensors)
        for _ in range(size - 1)]
    self.recipe = settings.recipe
    spec = [tf.TensorSpec([size, None], tf.int32),
            tf.TensorSpec([size], tf.float32), tf.TensorSpec([size, 2],
                                                             tf.int64)]
    self.compiled_step = tf.function(self._group_step, input_signature=spec,
                             jit_compile=jit_compile)

  def _group_step(self, idx, rates, seeds):
    return tf.stack([m.train_step(idx[k], rates[k], seeds[k])
                     for k, m in enumerate(self.members)])

  def train(self, runs, partial_dirs=None,
            on_step: Optional[Callable[[int, int], None]] = None,
            subsets=None, trajectory_dirs=None):
    """Trains `runs` (at most the group size), each then through its second
    split when `settings.ssft_epochs`; returns their `RunResult`s (each
    valid until the next `train`). Members resumed from different epochs
    first catch up alone.

    Args:
      runs: run ids.
      partial_dirs: per run, its partial area (None: no checkpoints).
      on_step: `on_step(done, total)` after every side-by-side step.
      subsets: per run, the examples it trains on instead of its subset
        (e.g. a removal ablation's kept examples; equal lengths).
      trajectory_dirs: per run, where to keep every epoch's checkpoint.
    """
    runs = list(runs)
    if not 0 < len(runs) <= len(self.members):
      raise errors.UsageError(f"1 to {len(self.members)} runs per group, "
                              f"got {len(runs)}")
    partial_dirs = partial_dirs or [None] * len(runs)
    subsets = [None] * len(runs) if subsets is None else list(subsets)
    trajectory_dirs = trajectory_dirs or [None] * len(runs)
    members = self.members[:len(runs)]
    plans = [m.begin(r, p, subset=s, trajectory_dir=t) for m, r, p, s, t in
             zip(members, runs, partial_dirs, subsets, trajectory_dirs)]
    start = max(p.first_epoch for p in plans)
    end_epoch = lambda m, p, e: m.end_epoch(p, e)
    for m, plan in zip(members, plans):
      self._epochs([m], [plan], plan.first_epoch, start, end_epoch)
    self._epochs(members, plans, start, self.recipe.epochs, end_epoch,
                 on_step)
    if members[0].settings.ssft_epochs:
      seconds = [m.second_split(p) for m, p in zip(members, plans)]
      self._epochs(members, seconds, 0, seconds[0].epochs,
                   lambda m, p, e: m.end_second_epoch(p, e))
      for m, second in zip(members, seconds):
        m.end_second_split(second)
    return [RunResult(r, m.model, p.subset, p.total, p.first_epoch or None,
                      p.signals) for r, m, p in zip(runs, members, plans)]

  def _epochs(self, members, plans, first: int, last: int, end_epoch,
              on_step=None):
    """Epochs `first..last-1` of every member's `plans` (one compiled step
    for all when the group is full and the plans have equal steps, else
    each alone), `end_epoch(member, plan, epoch)` after each."""
    together = (len(members) == len(self.members) and
                len({p.steps for p in plans}) == 1)
    if not together:
      for m, plan in zip(members, plans):
        for epoch in range(first, last):
          for s in range(plan.steps):
            m.compiled_step(*plan.step_inputs(epoch, s))
          end_epoch(m, plan, epoch)
      return
    steps = plans[0].steps
    for epoch in range(first, last):
      for s in range(steps):
        inputs = [p.step_inputs(epoch, s) for p in plans]
        self.compiled_step(*[tf.stack([x[i] for x in inputs])
                             for i in range(3)])
        if on_step is not None:
          on_step(epoch * steps + s + 1, plans[0].total)
      for m, plan in zip(members, plans):
        end_epoch(m, plan, epoch)
