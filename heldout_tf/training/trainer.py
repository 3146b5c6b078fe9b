"""The group engine's run trainer: any Sonnet model, one run at a time,
by a recipe; resumable.

  settings = TrainSettings(recipes.get("resnet9"), "resnet9", ratio=0.7)
  trainer = RunTrainer(settings, sources.load("cifar10"))
  trainer.train_and_write(store, run)   # or .train(run) for the model

A run is a pure function of (settings, data, run id), its randomness drawn
from the seed's streams (`heldout_tf.core.seeds`): its subset and
per-epoch orders; its initial weights, the model built under a seed of the
run (`fresh_model`); its augmentation, stateless ops seeded per step.
Everything else (momentum, batch-norm statistics, the float16 loss scale)
is state saved with the model. The step itself is `training.steps`.

Divergence: a step notes on the device when its loss is not finite; after
each epoch (before any checkpoint of it) the run's note and weights are
checked once, and a run that went non-finite stops with a
`steps.DivergedError` naming it and the epoch (`check_finite`), so it is
never written as finished.

Preemption: every `checkpoint_every` epochs the model, the optimizer state,
the loss scale and the epoch are saved into the run's partial area
(`<run>/partial/ckpt-<epoch>`); `train` resumes from the newest one, and
the resumed run ends with the same bits as an uninterrupted one (tested).

Precision: 'float32'; 'bfloat16' or 'float16' mixed precision (the kit's
models run convolutions and matmuls in that dtype, see `models.
precision_scope`; float32 master weights, optimizer, batch norm and loss),
float16 with dynamic loss scaling. The recorded correctness is what the
float32 checkpoint predicts (`records.Recorder`). With `settings.signals`
each epoch's per-example signals are summed (`records.SignalSums`), and
`settings.ssft_epochs` adds second-split forgetting (`second_split`).
"""

import glob
import os
import re
from typing import Callable, Optional

import numpy as np
import tensorflow as tf

from heldout_tf import models
from heldout_tf.core import errors
from heldout_tf.data import image_data
from heldout_tf.collection import checkpoints
from heldout_tf.training import records
from heldout_tf.training import run_plan
from heldout_tf.training.run_plan import fresh_model, subset_of
from heldout_tf.training import steps as steps_lib
from heldout_tf.training.settings import TrainSettings

_PARTIAL_RE = re.compile(r"ckpt-(\d+)\.index")


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
    self.recorder = records.Recorder(settings, data)
    if tensors is None:
      tensors = (tf.constant(data.train_images),
                 tf.constant(data.train_labels.astype(np.int32)))
    self.tensors = tensors
    self._images, self._labels = tensors
    self.model = fresh_model(settings, data, 0)
    self._variables = self.model.trainable_variables
    self.state = steps_lib.TrainState(self._variables)
    self._dtype = tf.as_dtype(settings.precision)
    # Set (on the device) by a step whose loss is not finite; read once
    # per epoch (`check_finite`).
    self._nonfinite = tf.Variable(False, trainable=False)
    self._weights_finite = tf.function(
        lambda: steps_lib.all_finite(self.model.variables))
    self.compiled_step = tf.function(self.train_step, input_signature=[
        tf.TensorSpec([None], tf.int32), tf.TensorSpec([], tf.float32),
        tf.TensorSpec([2], tf.int64)], jit_compile=jit_compile)
    self._forward = tf.function(
        lambda x: models.features_and_logits(self.model, x),
        input_signature=[tf.TensorSpec((None,) + data.image_shape,
                                       tf.float32)])

  # -- building --

  def _start(self, run: int):
    fresh = fresh_model(self.settings, self.data, run)
    mine, theirs = self.model.variables, fresh.variables
    if [v.shape for v in mine] != [v.shape for v in theirs]:
      raise errors.UsageError(
          f"--model {self.settings.model}: builds different variables on "
          "each call; it must be deterministic in structure")
    for var, value in zip(mine, theirs):
      var.assign(value)
    self.state.reset()
    self._nonfinite.assign(False)

  # -- the step --

  def train_step(self, idx, learning_rate, seed):
    """One SGD step on the examples `idx` (int32 [b]) at `learning_rate`,
    augmented from the stateless `seed` (int64 [2]); the mean loss. Traced
    into `compiled_step` (and into a `GroupTrainer`'s step)."""
    recipe = self.recipe
    x = steps_lib.pixels(tf.gather(self._images, idx))
    y = tf.gather(self._labels, idx)
    if recipe.augments:
      x = steps_lib.augment(x, seed, recipe)
    float16 = self._dtype == tf.float16
    with tf.GradientTape() as tape:
      with models.precision_scope(self._dtype):
        logits = models.call(self.model, x, is_training=True)
      loss = steps_lib.smoothed_cross_entropy(
          y, tf.cast(logits, tf.float32), recipe.label_smoothing)
      scaled = loss * self.state.loss_scale if float16 else loss
    steps_lib.note_nonfinite(self._nonfinite, loss)
    grads = tape.gradient(scaled, self._variables)
    if float16:
      grads = [g / self.state.loss_scale for g in grads]
      finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g))
                              for g in grads])
    else:
      finite = tf.constant(True)

    def apply():
      steps_lib.sgd_update(self._variables, self.state.momenta, grads,
                           learning_rate, recipe)
      return tf.constant(True)

    if float16:
      tf.cond(finite, apply, lambda: tf.constant(False))
      steps_lib.update_loss_scale(self.state, finite)
    else:
      apply()
    return loss

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
    size = len(subset_of(self.settings, 0, self.data))
    return self.recipe.epochs * self.recipe.steps_per_epoch(size)

  def train(self, run: int, partial_dir: Optional[str] = None,
            on_step: Optional[Callable[[int, int], None]] = None,
            on_epoch_end: Optional[Callable[[int], None]] = None,
            trajectory_dir: Optional[str] = None) -> records.RunResult:
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
    return records.RunResult(run, self.model, plan.subset, plan.total,
                             plan.first_epoch or None, plan.signals)

  def begin(self, run: int, partial_dir: Optional[str] = None,
            subset: Optional[np.ndarray] = None,
            trajectory_dir: Optional[str] = None) -> "run_plan.Plan":
    """Starts run `run` (fresh weights, or the newest partial checkpoint in
    `partial_dir`) on its subset, or on `subset` (int64 sorted, e.g. a
    removal ablation's kept examples); returns what its steps are."""
    if subset is None:
      subset = subset_of(self.settings, run, self.data)
    self._start(run)
    first = 0
    if partial_dir is not None and os.path.isdir(partial_dir):
      first = self._resume(partial_dir) or 0
    plan = run_plan.Plan(self.settings, run, subset, first)
    plan.partial_dir, plan.trajectory_dir = partial_dir, trajectory_dir
    if self.settings.signals:
      plan.signals = records.SignalSums(len(subset))
      if first:
        plan.signals.load(os.path.join(partial_dir, f"signals-{first}.npz"))
    return plan

  def check_finite(self, plan: "run_plan.Plan", epoch: int, phase: str = ""):
    """`steps.DivergedError` naming the run and `epoch` when a step of the
    run's loss was not finite, or its weights are not (one host read)."""
    if bool(self._nonfinite.numpy()):
      what = "loss"
    elif not bool(self._weights_finite()):
      what = "weights"
    else:
      return
    raise steps_lib.diverged(self.settings, plan.run, epoch, plan.epochs,
                             what, phase)

  def end_epoch(self, plan: "run_plan.Plan", epoch: int):
    """Checks the run has not diverged (`check_finite`), records the
    epoch's signals (with `settings.signals`), then saves the partial
    checkpoint into the plan's partial area when one is due after `epoch`
    (signal sums first, so a partial checkpoint always has its sums), and
    the trajectory checkpoint `ckpt-<epoch + 1>` when the plan keeps one:
    no checkpoint of a diverged run is ever saved."""
    self.check_finite(plan, epoch)
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

  def second_split(self, plan: "run_plan.Plan") -> "run_plan.Plan":
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
    second = run_plan.Plan(self.settings, plan.run, sums.heldout, 0,
                   self.settings.ssft_recipe(),
                   epoch_offset=self.recipe.epochs)
    second.first_phase = plan
    return second

  def end_second_epoch(self, second: "run_plan.Plan", epoch: int):
    """Notes the first-split examples the model predicts right after the
    second phase's epoch `epoch` (evaluation mode, float32)."""
    from heldout_tf.collection import signals as signals_lib  # pylint: disable=g-import-not-at-top
    self.check_finite(second, epoch, phase="the second split's ")
    first = second.first_phase
    _, logits = self.features_and_logits(first.subset)
    right = signals_lib.margins(logits,
                                self.data.train_labels[first.subset]) > 0
    first.signals.last_correct[right] = epoch + 1

  def end_second_split(self, second: "run_plan.Plan"):
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

  def _record_signals(self, plan: "run_plan.Plan", epoch: int):
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

  def run_signals(self, plan_or_result):
    """The `collection.signals.RunSignals` of a finished run."""
    return self.recorder.run_signals(plan_or_result)

  def correctness(self, model=None, split: str = "train") -> np.ndarray:
    """bool [n]: what the float32 model (default: the trainer's) predicts
    right on `split` (`records.Recorder.correctness`)."""
    return self.recorder.correctness(model or self.model, split)

  def train_and_write(self, store, run: int,
                      on_step: Optional[Callable[[int, int], None]] = None
                      ) -> bool:
    """Trains run `run` into `store` (a `collection.Store`) unless it is
    finished: final checkpoint, then `aux_arrays.npz`, then the partial area
    is removed. Returns whether it trained."""
    if store.is_finished(run, need_checkpoint=True):
      return False
    partial = records.partial_dir(store, run)
    self.write(store, self.train(run, partial, on_step=on_step,
                                 trajectory_dir=records.trajectory_dir(
                                     self.settings, store, run)), partial)
    return True

  def write(self, store, result: records.RunResult,
            partial: Optional[str] = None):
    """Writes a trained run into `store` (`records.Recorder.write`)."""
    self.recorder.write(store, result, partial)
