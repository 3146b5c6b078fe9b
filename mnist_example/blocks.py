"""The block trainers of the MNIST pipelines (`heldout_tf.collection`'s
protocol): what a process (the driver's or a Ray worker's) trains blocks
with. Imports TensorFlow; the command lines import it after parsing.
"""

import os
from typing import List

import numpy as np

from heldout_tf import checkpoints
from heldout_tf import errors
from heldout_tf import layout
from heldout_tf import signals as signals_lib
from heldout_tf import training
from mnist_example import common
from mnist_example import data as data_lib


class TrainBlocks(training.EnsembleBlocks):
  """`mnist_example.train`'s runs: MLP ensembles on the pipeline's data.

  Built from small picklable values; the data is loaded on the first block
  (in a Ray worker: from the worker's own --data_dir) and must have the
  driver's `fingerprint`.
  """

  def __init__(self, options, precision: str, group_size: int,
               fingerprint: str, data=None):
    super().__init__(common.train_config(options, precision), group_size,
                     options.save_checkpoints, data=data)
    self.options = options
    self.fingerprint = fingerprint

  def read_data(self):
    from mnist_example import train  # pylint: disable=g-import-not-at-top
    data = train.load_data(self.options)
    return data, train.data_fingerprint(data)

  def load_data(self):
    data, fingerprint = self.read_data()
    if fingerprint != self.fingerprint:
      raise errors.ConfigError(
          f"this process loaded other {data.name} data than the driver: "
          "every node needs the same --data_dir contents")
    return data


def _complements(subsets, n):
  return np.stack([np.setdiff1d(np.arange(n), s) for s in subsets])


class QualityBlocks(TrainBlocks):
  """`mnist_example.quality`'s runs: also per-epoch signals (`signals.npz`,
  written last), a second-split phase (SSFT) and per-epoch trajectory
  checkpoints of the first `trajectory_runs` runs."""

  def read_data(self):
    from mnist_example import quality  # pylint: disable=g-import-not-at-top
    data, _ = quality.load_data(self.options)
    return data, quality.data_fingerprint(data)

  def is_done(self, store, run: int) -> bool:
    """Finished for this pipeline: aux arrays, checkpoint, signals."""
    return (super().is_done(store, run) and
            os.path.isfile(signals_lib.signals_path(store.run_dir(run))))

  def block_hooks(self, store, members: List[int],
                  todo: List[int]) -> training.BlockHooks:
    options, config, data = self.options, self.config, self.data
    trainer = self.trainer
    n = len(data.train_labels)
    subsets = [training.subset_indices(config, r, n) for r in members]
    recorder = signals_lib.SignalRecorder(
        data.train_images, data.train_labels, subsets, config.learning_rate,
        config.epochs, data_lib.NUM_CLASSES)
    steps = config.steps_per_epoch(n)
    keep_trajectory = [r for r in todo if options.trajectory_runs < 0 or
                       r < options.trajectory_runs]

    def on_epoch_end(epoch, view):
      recorder.on_epoch_end(epoch, view)
      if keep_trajectory:
        params = [np.asarray(p) for p in view.params()]
        done = recorder.epochs_seen
        for run in keep_trajectory:
          g = members.index(run)
          checkpoints.save(self.module([p[g] for p in params]),
                           os.path.join(store.run_dir(run),
                                        layout.TRAJECTORY_DIRNAME),
                           step=done, epoch=done, global_step=done * steps)

    forgetting = []

    def second_split(block, result):
      """SSFT: each run goes on training on its held-out complement."""
      if options.ssft_epochs:
        forgetting.append(signals_lib.ForgettingRecorder(
            recorder, options.ssft_epochs))
        trainer.train(block, subsets=_complements(result.subsets, n),
                      init=result.params, first_epoch=config.epochs,
                      epochs=options.ssft_epochs,
                      on_epoch_end=forgetting[0].on_epoch_end)

    def save_signals(run, g):
      run_signals = recorder.run_signals(g)
      if forgetting:
        run_signals = forgetting[0].add_to(run_signals, g)
      run_signals.save(signals_lib.signals_path(store.run_dir(run)))

    return training.BlockHooks(on_epoch_end=on_epoch_end,
                               after_training=second_split,
                               after_write=save_signals)

