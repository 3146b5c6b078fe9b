"""A run's pure parts: its subset, the model it starts from, the variables
it must have, and the plan of its steps.

  subset = subset_of(settings, run, data)       # int64, sorted
  model = fresh_model(settings, data, run)      # the run's initial weights
  plan = Plan(settings, run, subset, first_epoch=0)
  idx, rate, seed = plan.step_inputs(epoch, step)

Each is a function of (settings, data, run id) and the seed's streams
(`heldout_tf.core.seeds`): the same in every engine, process and resume.
"""

from typing import Optional

import numpy as np
import tensorflow as tf

from heldout_tf import models
from heldout_tf.collection import checkpoints
from heldout_tf.core import seeds
from heldout_tf.training import recipes as recipes_lib
from heldout_tf.training.settings import TrainSettings


def subset_of(settings: TrainSettings, run: int, data) -> np.ndarray:
  """int64, sorted: the training examples of `data` run `run` trains on."""
  return seeds.subset_indices(settings.seed, run, len(data.train_labels),
                              settings.ratio)


def fresh_model(settings: TrainSettings, data, run: int):
  """The model run `run` starts from: built (float32) under
  `tf.random.set_seed(seeds.init_seed(settings.seed, run))`."""
  tf.random.set_seed(seeds.init_seed(settings.seed, run))
  model = models.build_model(settings.model, data.num_classes,
                             **settings.options)
  models.check_output(model, f"--model {settings.model}", data.image_shape,
                      data.num_classes, features=settings.signals)
  return model


def variable_structure(model) -> dict:
  """`{path: shape}` of every variable of a built `model`: where its
  checkpoint keeps it (`checkpoints.model_variables`, e.g.
  'net/_layers/0/w') and its shape ('784x512'; 'scalar'). Names alone are
  not unique in Sonnet; these paths are, and they are what a checkpoint
  restores by."""
  found = checkpoints.model_variables(model, prefix="")
  return {key.lstrip("/").rsplit("/.ATTRIBUTES/", 1)[0]:
              "x".join(map(str, var.shape.as_list())) or "scalar"
          for key, var in sorted(found.items())}


def model_variables(settings: TrainSettings, data) -> dict:
  """`variable_structure` of the settings' model built for `data` (and
  checked: `fresh_model`), as a collection records it."""
  return variable_structure(fresh_model(settings, data, 0))


class Plan:
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
    self._order = {}
    self.signals = None  # A records.SignalSums with `settings.signals`.
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
      self._order = {absolute: seeds.epoch_order(
          self.settings.seed, self.run, absolute, self.subset)}
    b = self.settings.recipe.batch_size
    idx = self._order[absolute][step * b:(step + 1) * b].astype(np.int32)
    return (tf.constant(idx), tf.constant(self._rates[epoch * self.steps
                                                      + step]),
            tf.constant(seeds.augment_seed(self.settings.seed, self.run,
                                           absolute, step)))
