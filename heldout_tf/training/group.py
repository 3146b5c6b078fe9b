"""The group engine: G runs of any model side by side.

  group = GroupTrainer(settings, data, size=4)
  results = group.train([0, 1, 2, 3], partial_dirs)
  for result, partial in zip(results, partial_dirs):
    group.write(store, result, partial)

One compiled step runs every member's own step (`trainer.RunTrainer`'s
ops, one model each), so a GPU gets several models' work per launch; a run
trained in a group has the bits it has trained alone (tested). Everything
a run can do (augmentation, any precision, resume mid-run, signals, the
second split, trajectories) it does here; `training.engines` is the
interface it shares with the stacked engine.
"""

from typing import Callable, List, Optional

import tensorflow as tf

from heldout_tf.core import errors
from heldout_tf.data import image_data
from heldout_tf.training import records
from heldout_tf.training.settings import TrainSettings
from heldout_tf.training.trainer import RunTrainer


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

  @property
  def size(self) -> int:
    """G: the most runs one `train` call takes."""
    return len(self.members)

  def _group_step(self, idx, rates, seeds):
    return tf.stack([m.train_step(idx[k], rates[k], seeds[k])
                     for k, m in enumerate(self.members)])

  def train(self, runs, partial_dirs=None,
            on_step: Optional[Callable[[int, int], None]] = None,
            subsets=None, trajectory_dirs=None
            ) -> List[records.RunResult]:
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
    return [records.RunResult(r, m.model, p.subset, p.total,
                              p.first_epoch or None, p.signals)
            for r, m, p in zip(runs, members, plans)]

  def write(self, store, result: records.RunResult,
            partial: Optional[str] = None, save_checkpoint: bool = True):
    """Writes a trained run into `store` (`records.Recorder.write`)."""
    self.members[0].recorder.write(store, result, partial, save_checkpoint)

  def correctness(self, result: records.RunResult, split: str):
    """bool [n]: what `result`'s float32 model predicts right on `split`
    (`records.Recorder.correctness`)."""
    return self.members[0].recorder.correctness(result.model, split)

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
