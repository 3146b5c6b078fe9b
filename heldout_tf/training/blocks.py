"""The block trainer of a collection (`heldout_tf.collection`'s protocol):
what a process (the driver's or a Ray worker's) trains blocks with.

A block of G runs trains together by the settings' engine
(`training.engines`: side by side, or stacked MLPs); each unfinished run
resumes from its partial checkpoint where the engine keeps one and is
written in the released layout. Built from small picklable values
(`training.workflow.make` passes them); the data is loaded on the first
block and must have the recorded fingerprint, the model the recorded
variables. A run whose loss or weights go non-finite stops the block
(`steps.DivergedError`): none of the block's runs is written, and their
resume checkpoints and trajectories are removed (resumed, a diverged run
diverges again); a collection left with nothing trained lets a corrected
call replace its config (`Store.record_config`).
"""

import os
import shutil
from typing import List, Optional

from heldout_tf.collection import blocks
from heldout_tf.collection import provenance
from heldout_tf.core import errors


class ModelBlocks:
  """Block trainer of one collection (see `heldout_tf.collection`).

  Args:
    settings: a `settings.TrainSettings` (resolved precision and engine).
    source: the data's `provenance.DataSource`.
    group_size: G, runs trained together.
    fingerprint: the data's recorded fingerprint: data loaded by a worker
      must have it (a `errors.ConfigError` otherwise).
    data: the `ImageData`, when the caller loaded it already.
    jit_compile: compile steps with XLA (GPUs).
    save_checkpoints: write each run's final checkpoint (False: aux arrays
      only; such runs cannot be re-evaluated or exported).
    model_variables: the model's recorded variable structure
      (`run_plan.model_variables`): the model a worker builds must have it
      (a `errors.ConfigError` otherwise, e.g. a user module that differs
      on another node).
  """

  def __init__(self, settings, source: provenance.DataSource,
               group_size: int = 1, fingerprint: Optional[str] = None,
               data=None, jit_compile: bool = False,
               save_checkpoints: bool = True,
               model_variables: Optional[dict] = None):
    blocks.check_group_size(group_size)
    self.settings, self.source = settings, source
    self.group_size, self.fingerprint = int(group_size), fingerprint
    self._data, self._jit = data, jit_compile
    self.save_checkpoints = bool(save_checkpoints)
    self.model_variables = model_variables
    self._trainer = None

  @property
  def data(self):
    if self._data is None:
      data = self.source.load()
      if self.fingerprint and data.fingerprint() != self.fingerprint:
        raise errors.ConfigError(
            f"{self.source.dataset}: the data here differs from the data "
            f"the collection was made with (fingerprint {data.fingerprint()}"
            f", recorded {self.fingerprint})")
      self._data = data
    return self._data

  @property
  def trainer(self):
    """The settings' engine of G (`engines.make`, built on first use)."""
    if self._trainer is None:
      # pylint: disable=g-import-not-at-top
      from heldout_tf.training import engines
      from heldout_tf.training import run_plan
      # pylint: enable=g-import-not-at-top
      if self.model_variables is not None and run_plan.model_variables(
          self.settings, self.data) != self.model_variables:
        raise errors.ConfigError(
            f"--model {self.settings.model}: the model built here has other "
            "variables than the collection records (model_variables); the "
            "same model code must run everywhere")
      self._trainer = engines.make(self.settings.trainer, self.settings,
                                   self.data, self.group_size, self._jit)
    return self._trainer

  def is_done(self, store, run: int) -> bool:
    """Finished: aux arrays, the checkpoint (when saved) and signals.npz
    (when recorded).

    Not margins.npz: a run this kit writes has it whenever it has its aux
    arrays (`records.Recorder.write` writes the margins first, then the
    aux arrays, each atomically), so requiring it would change nothing for
    them; the only finished runs without one were recorded before margins
    existed, and retraining those (hours, for the same bits) to get a file
    their checkpoints give in one evaluation pass would be wrong.
    """
    if not store.is_finished(run, need_checkpoint=self.save_checkpoints):
      return False
    if not self.settings.signals:
      return True
    from heldout_tf.collection import signals as signals_lib  # pylint: disable=g-import-not-at-top
    return os.path.isfile(signals_lib.signals_path(store.run_dir(run)))

  def train_block(self, store, runs) -> List[int]:
    """Trains the canonical block holding `runs` (whole: its runs train
    together) and writes its unfinished ones of `runs`."""
    from heldout_tf.training import records  # pylint: disable=g-import-not-at-top
    members = blocks.block_of(runs, self.group_size)
    todo = [r for r in sorted(set(int(r) for r in runs))
            if not self.is_done(store, r)]
    if not todo:
      return []
    partials = [records.partial_dir(store, r) if r in todo else None
                for r in members]
    trajectories = [records.trajectory_dir(self.settings, store, r)
                    if r in todo else None for r in members]
    from heldout_tf.training import steps  # pylint: disable=g-import-not-at-top
    trainer = self.trainer
    try:
      results = trainer.train(members, partials,
                              trajectory_dirs=trajectories)
    except steps.DivergedError as e:  # Name the collection too.
      for directory in partials + trajectories:  # Worthless to resume.
        if directory is not None:
          shutil.rmtree(directory, ignore_errors=True)
      raise steps.DivergedError(f"{store.path}: {e}") from None
    for result, partial in zip(results, partials):
      if result.run in todo:
        trainer.write(store, result, partial,
                      save_checkpoint=self.save_checkpoints)
    return todo
