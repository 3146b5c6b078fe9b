"""What a trained run leaves behind, whichever engine trained it.

`RunResult` is one trained run; `Recorder.write` puts it into a collection
(float32 checkpoint, signals.npz if any, margins.npz, then the aux arrays),
then removes the run's partial area. The correctness and the margins come
from one evaluation pass per split, `heldout_tf.collection.evaluation.
evaluate` on the float32 model (the code a restore-and-cross-check runs,
whatever the training precision): the margins are the logits' by-product,
so every run of every engine has them at no extra pass. `SignalSums`
are a run's per-epoch signal sums while it trains; `partial_dir` and
`trajectory_dir` name a run's resume and per-epoch checkpoint areas.
"""

import dataclasses
import os
import shutil
from typing import Optional

import numpy as np

from heldout_tf.collection import evaluation
from heldout_tf.collection import layout
from heldout_tf.collection import margins as margins_lib
from heldout_tf.core import files
from heldout_tf.collection import checkpoints

PARTIAL_DIRNAME = "partial"
_SUM_KEYS = ("margin_sum", "correct_epochs", "tracin_sum")


class SignalSums:
  """A run's per-example signal sums over its epochs so far (m: the
  examples it trains on)."""

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
    files.save_npz(path, **{k: getattr(self, k) for k in _SUM_KEYS})

  def load(self, path: str):
    """The sums saved beside a partial checkpoint (written by `save`)."""
    try:
      with np.load(path, allow_pickle=False) as f:
        values = {k: f[k] for k in _SUM_KEYS}
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


@dataclasses.dataclass
class RunResult:
  """One trained run; `model` is the engine's own module (valid until the
  engine's next `train`)."""
  run: int
  model: object  # snt.Module at the run's final float32 weights.
  subset: np.ndarray  # int64 [k]: the examples it trained on.
  global_step: int
  resumed_from: Optional[int]  # The epoch a partial checkpoint gave, or None.
  signals: Optional[SignalSums] = None  # With `settings.signals`.


class Recorder:
  """Records trained runs of one collection (settings and data)."""

  def __init__(self, settings, data):
    self.settings, self.data = settings, data
    self._splits = {}  # split -> its batches, read once for every run.

  def evaluate(self, model, split: str) -> evaluation.EvalResult:
    """The float32 `model`'s logits on the whole `split` in evaluation mode
    (`evaluation.evaluate`, as a cross-check would), canonical order; the
    split's batches are made once (`evaluation.array_batches`)."""
    batch_size = self.settings.recipe.eval_batch_size
    if split not in self._splits:
      self._splits[split] = evaluation.array_batches(
          self.data.name, split, self.data.images(split),
          self.data.labels(split), batch_size)
    return evaluation.evaluate(model, self._splits[split], split, batch_size,
                               progress=False)

  def correctness(self, model, split: str) -> np.ndarray:
    """bool [n]: what the float32 `model` predicts right on `split`
    (`evaluate`)."""
    return self.evaluate(model, split).correct

  def run_signals(self, result: RunResult):
    """The `collection.signals.RunSignals` of a finished run (of a
    `RunResult`, or of a plan holding `subset` and `signals`)."""
    from heldout_tf.collection import signals as signals_lib  # pylint: disable=g-import-not-at-top
    sums, recipe = result.signals, self.settings.recipe
    return signals_lib.RunSignals(
        n_train=len(self.data.train_labels),
        num_classes=self.data.num_classes, epochs=recipe.epochs,
        learning_rate=float(recipe.learning_rate), subset=result.subset,
        margin_sum=sums.margin_sum, correct_epochs=sums.correct_epochs,
        tracin_sum=sums.tracin_sum, heldout=sums.heldout,
        heldout_probs=sums.heldout_probs,
        ssft_epochs=(self.settings.ssft_epochs
                     if sums.forget_epoch is not None else 0),
        forget_epoch=sums.forget_epoch)

  def write(self, store, result: RunResult, partial: Optional[str] = None,
            save_checkpoint: bool = True):
    """Writes a trained run into `store` (a `collection.Store`): its
    signals.npz if it has signals, its float32 checkpoint
    (`checkpoints/ckpt-<epochs>`; not with `save_checkpoint=False`), its
    margins.npz, then `aux_arrays.npz` with the correctness that checkpoint
    predicts; then removes `partial`. Correctness and margins come from the
    same logits (one pass over each split)."""
    if result.signals is not None:  # Before the aux arrays mark it done.
      from heldout_tf.collection import signals as signals_lib  # pylint: disable=g-import-not-at-top
      self.run_signals(result).save(
          signals_lib.signals_path(store.run_dir(result.run)))
    train = self.evaluate(result.model, "train")
    test = self.evaluate(result.model, "test")
    epochs = self.settings.recipe.epochs
    try:
      store.write_run(
          result.run, subset=result.subset, correct_train=train.correct,
          correct_test=test.correct,
          save_checkpoint=(lambda directory: checkpoints.save(
              result.model, directory, step=epochs, epoch=epochs,
              global_step=result.global_step)) if save_checkpoint else None,
          logits=dict(train_logits=train.logits, train_labels=train.labels,
                      test_logits=test.logits, test_labels=test.labels))
    except margins_lib.MarginsError as e:  # E.g. a diverged model's NaNs.
      raise margins_lib.MarginsError(
          f"run {result.run} ({store.run_dir(result.run)}): its final "
          f"model cannot be recorded: {e}") from None
    if partial is not None:
      shutil.rmtree(partial, ignore_errors=True)


def partial_dir(store, run: int) -> str:
  """Run `run`'s partial area in `store`: `<run>/partial/`."""
  return os.path.join(store.run_dir(run), PARTIAL_DIRNAME)


def trajectory_dir(settings, store, run: int) -> Optional[str]:
  """`<run>/trajectory/` when run `run` keeps every epoch's checkpoint
  (`settings.trajectory_runs`), else None."""
  if not settings.keeps_trajectory(run):
    return None
  return os.path.join(store.run_dir(run), layout.TRAJECTORY_DIRNAME)
