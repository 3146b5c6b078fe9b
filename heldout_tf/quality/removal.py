"""Removal ablation: retrain without the examples each score flags.

  rows = removal.ablation(removal.settings_from(config), data, scores,
                          fractions=[0.01, 0.05], models_per_removal=4,
                          noisy_idx=noisy_idx)

For every fraction f and every score, the top `round(f * n)` examples by
that score are removed (`heldout_tf.quality.detection.removal_sets`, with a random
removal of the same size as the baseline) and `models_per_removal` models
are trained from scratch on the rest by the collection's own recipe,
model and engine (`heldout_tf.training.engines`), from the seed's removal
stream (`seeds.removal_seed`: seed + 1, so that their initialisations and
orders are independent of the scored runs'); a removal of nothing is
the reference. The result is the clean test accuracy of each set of
models (`detection.REMOVAL_COLUMNS`): if a score finds harmful examples,
removing its top examples should not hurt, or should help.

Models removing the same number of examples train together, `group_size`
at a time (as the collection's runs).
"""

import dataclasses
from typing import Dict, List, Sequence

import numpy as np

from heldout_tf.core import errors
from heldout_tf.core import progress as progress_lib
from heldout_tf.core import seeds
from heldout_tf.quality import detection


def settings_from(config: dict, where: str = "config.json",
                  model: str = ""):
  """The `TrainSettings` of the ablation's models: the recipe, model,
  options, precision and engine a collection recorded
  (`training.settings.from_config`), trained on all kept examples (ratio
  1), `seeds.removal_seed`, no signals.

  `model`: --model as given on this command line. A recorded user module
  is imported only when `model` names it (`models.recorded_model`).

  Raises:
    errors.ConfigError: the collection records no recipe (e.g. one made by
      `python -m mnist_example.train`; pass --removal_models 0), or a user
      module `model` does not name.
  """
  from heldout_tf.training import settings as settings_lib  # pylint: disable=g-import-not-at-top
  if not isinstance(config.get("recipe"), dict) or not isinstance(
      config.get("model"), str):
    raise errors.ConfigError(
        f"{where}: no 'recipe' and 'model' recorded, so its models cannot "
        "be retrained for a removal ablation (collections made by "
        "`heldout train` or `heldout quality --num_runs` record them); "
        "pass --removal_models 0")
  recorded = settings_lib.from_config(config, where, model)
  return dataclasses.replace(
      recorded, ratio=1.0, seed=seeds.removal_seed(recorded.seed),
      checkpoint_every=0, signals=False, ssft_epochs=0, trajectory_runs=0)


def check_fractions(n: int, fractions: Sequence[float]):
  """`errors.UsageError` naming --removal_fractions when removing one of
  `fractions` of `n` training examples would keep none."""
  for fraction in fractions:
    if n - int(round(fraction * n)) < 1:
      shown = ",".join(f"{f:g}" for f in fractions)
      raise errors.UsageError(
          f"--removal_fractions {shown}: removing {fraction:g} of the {n} "
          "training examples keeps none")


def ablation(settings, data, scores: Dict[str, np.ndarray],
             fractions: Sequence[float], models_per_removal: int,
             noisy_idx, group_size: int = 1,
             progress: bool = True) -> List[dict]:
  """Trains `models_per_removal` models without each removal set (and
  with nothing removed); returns rows of `detection.REMOVAL_COLUMNS`.

  Args:
    settings: a `TrainSettings` (see `settings_from`).
    data: the `image_data.ImageData` trained on (noise applied).
    scores: name -> float `[n]`, higher = more suspicious.
    fractions: fractions of the training set to remove, each in (0, 1).
    models_per_removal: models per removal set (>= 1).
    noisy_idx: int, the known noisy examples (counted per removal).
    group_size: models trained together (the engine's G).
    progress: show a progress bar.
  """
  from heldout_tf.training import engines  # pylint: disable=g-import-not-at-top
  if models_per_removal < 1:
    raise errors.UsageError(f"--removal_models must be >= 1 for an "
                            f"ablation, got {models_per_removal}")
  n = len(data.train_labels)
  check_fractions(n, fractions)
  removals = [detection.Removal(detection.NO_REMOVAL, 0.0,
                                np.zeros([0], np.int64))]
  removals += detection.removal_sets(scores, fractions, settings.seed)
  engine = engines.make(settings.trainer, settings, data, max(1, group_size))
  size = engine.size
  accuracies = [np.zeros(models_per_removal) for _ in removals]
  by_count = {}
  for k, removal in enumerate(removals):
    by_count.setdefault(len(removal.removed), []).append(k)
  with progress_lib.bar(len(removals) * models_per_removal,
                        "removal ablation", "model",
                        enabled=progress) as bar:
    for ks in by_count.values():  # Equal subsets: side by side.
      jobs = [(k, m) for k in ks for m in range(models_per_removal)]
      for first in range(0, len(jobs), size):
        chunk = jobs[first:first + size]
        results = engine.train(
            [k * models_per_removal + m for k, m in chunk],
            subsets=[detection.kept(n, removals[k]) for k, _ in chunk])
        for (k, m), result in zip(chunk, results):
          correct = engine.correctness(result, "test")
          accuracies[k][m] = float(np.mean(correct))
        bar.update(len(chunk))
  return detection.removal_rows(removals, accuracies, noisy_idx)
