"""The engines that train a collection's runs, behind one interface.

  name, why = engines.choose(settings, data)
  settings = dataclasses.replace(settings, trainer=name)
  engine = engines.make(name, settings, data,
                        engines.default_group_size(name, settings, data))
  for result, partial in zip(engine.train(runs, partials), partials):
    engine.write(store, result, partial)

Engines (`ENGINES`):
  group    any model, any recipe, any precision; G runs side by side, one
           model each (`training.group.GroupTrainer`); resumes mid-run,
           records signals, the second split and trajectories.
  stacked  G MLPs (`models.MLP`) with stacked weights and batched matmuls
           (`training.stacked.StackedTrainer`): the same runs as the group
           engine (subsets, orders, initial weights, rates, update rule,
           loss, bfloat16 rounding points), equal to float32 tolerance; no
           augmentation, float16, signals, second split, trajectories or
           mid-run resume (a killed block retrains from its start, to the
           same bits).

An engine has `size` (G, the most runs one `train` takes), `train(runs,
partial_dirs=None, on_step=None, subsets=None, trajectory_dirs=None) ->
[records.RunResult]`, `write(store, result, partial_dir)` and
`correctness(result, split) -> bool [n]`. A run's bits depend on its
engine (and, in the stacked engine, on G and its slot: collections train
in canonical blocks), so the engine is part of `TrainSettings` and of what
a collection records.

`choose` picks "stacked" wherever it can train the settings (an MLP
without augmentation, float16, signals or trajectories), else "group": on
MLPs stacked weights are the faster way to train G models at once (the
MLP ensemble the stacked engine replaces measured 1.4-1.9x over one model
at a time); `benchmarks/engines.py` measures the two engines side by side
on the MNIST MLP, G in {1, 8, 16, 32}, float32 and bfloat16.

`ENGINES`, `unsupported` and `choose` import no TensorFlow (flags can
name engines before TensorFlow loads); `make` and `default_group_size` do.
"""

from typing import Tuple

from heldout_tf.core import errors
from heldout_tf.core import sizes
from heldout_tf.training import settings as settings_lib
from heldout_tf.training.settings import GROUP, STACKED, ENGINES

MAX_STACKED_GROUP = 32  # More models per step stops paying off on CPUs.


def choose(settings, data=None) -> Tuple[str, str]:
  """`(engine, why)`: "stacked" where it can train `settings`, else
  "group" (the measurements behind the rule: the module docstring).
  `data` is not consulted: the rule holds for any image size."""
  del data
  limits = settings_lib.stacked_limits(settings)
  if not limits:
    return STACKED, "an MLP without augmentation: stacked weights are faster"
  return GROUP, f"the {STACKED} engine cannot train {', '.join(limits)}"


def bytes_per_model(settings, data) -> int:
  """Rough memory one MLP of a stacked group needs while training."""
  from heldout_tf import models  # pylint: disable=g-import-not-at-top
  hidden = tuple(dict(settings.model_options).get("hidden",
                                                  models.MLP_HIDDEN))
  input_dim = 1
  for d in data.image_shape:
    input_dim *= int(d)
  widths = [input_dim] + list(hidden) + [data.num_classes]
  num_params = sum(i * o + o for i, o in zip(widths[:-1], widths[1:]))
  activations = 4 * settings.recipe.batch_size * sum(widths)
  # Weights, momentum, gradient and temporaries in float32; bfloat16 adds a
  # half-size copy of the weights and of the gradient.
  words = 6 * num_params + (num_params
                            if settings.precision == "bfloat16" else 0)
  return 4 * (words + activations)


def default_group_size(name: str, settings, data,
                       memory_fraction: float = 0.25) -> int:
  """G when none is given: for "stacked", what `memory_fraction` of the
  available memory (`sizes.available_memory()`) holds, at most
  `MAX_STACKED_GROUP`; for "group", 1 (one model at a time)."""
  if name not in ENGINES:
    raise errors.UsageError(settings_lib.unsupported(name, settings))
  if name == GROUP:
    return 1
  available = sizes.available_memory() * memory_fraction
  return int(max(1, min(MAX_STACKED_GROUP,
                        available // bytes_per_model(settings, data))))


def make(name: str, settings, data, group_size: int,
         jit_compile: bool = False):
  """Engine `name` for `settings` (whose `engine` it must be) on `data`
  (an `ImageData`), training up to `group_size` runs at once.

  Raises:
    errors.UsageError: an unknown engine, or one other than
      `settings.trainer` (a run's bits depend on its engine).
  """
  if name not in ENGINES:
    raise errors.UsageError(settings_lib.unsupported(name, settings))
  if name != settings.trainer:
    raise errors.UsageError(
        f"engine {name!r} differs from the settings' engine "
        f"{settings.trainer!r} (a run's bits depend on its engine)")
  # pylint: disable=g-import-not-at-top
  if name == GROUP:
    from heldout_tf.training import group
    return group.GroupTrainer(settings, data, group_size, jit_compile)
  from heldout_tf.training import stacked
  return stacked.StackedTrainer(settings, data, group_size, jit_compile)
