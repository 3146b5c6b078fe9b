"""Held-out collections of any data and model: the workflow of
`python -m heldout_tf.cli.train`.

  options = model_blocks.Options(dataset="cifar10", data_dir=D,
                                 model="resnet9", ratios=(0.1, 0.5, 0.9),
                                 num_runs=(20, 20, 20), root="./cscores")
  reports = model_blocks.make(options)

Each ratio is one collection (`heldout_tf.collection`) under
`<root>/<experiment>/<ratio>/`, with its own run count, recorded config and
canonical blocks; `ModelBlocks` is their block trainer (the collection
seam's protocol): a block of G runs trains together by the settings'
engine (`training.engines`), each unfinished run resumes from its partial
checkpoint where the engine keeps one, and is written in the released
layout.
Every setting a run's bits depend on is recorded in config.json (the
recipe, model, ratio, seed, precision, group size, the data's fingerprint,
and the `noise` spec applied to the training set, if any, which the seed
makes reproducible: `collection.provenance` rebuilds it);
a later call must agree (`--precision auto` and `--group_size 0` take the
recorded values).
"""

import dataclasses
import os
from typing import Callable, List, Optional, Tuple

from heldout_tf import collection
from heldout_tf.collection import provenance
from heldout_tf.core import errors
from heldout_tf.data import noise as noise_lib
from heldout_tf.collection import blocks
from heldout_tf.core import hardware


class ModelBlocks:
  """Block trainer of one collection (see `heldout_tf.collection`).

  Args:
    settings: a `settings.TrainSettings` (resolved precision and engine).
    source: the data's `provenance.DataSource`.
    group_size: G, runs trained side by side in one compiled step.
    fingerprint: the data's recorded fingerprint: data loaded by a worker
      must have it (a `errors.ConfigError` otherwise).
    data: the `ImageData`, when the caller loaded it already.
    jit_compile: compile steps with XLA (GPUs).
  """

  def __init__(self, settings, source: provenance.DataSource, group_size: int = 1,
               fingerprint: Optional[str] = None, data=None,
               jit_compile: bool = False):
    blocks.check_group_size(group_size)
    self.settings, self.source = settings, source
    self.group_size, self.fingerprint = int(group_size), fingerprint
    self._data, self._jit = data, jit_compile
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
      from heldout_tf.training import engines  # pylint: disable=g-import-not-at-top
      self._trainer = engines.make(self.settings.engine, self.settings,
                                   self.data, self.group_size, self._jit)
    return self._trainer

  def is_done(self, store, run: int) -> bool:
    """Finished: checkpoint and aux arrays (and signals.npz if recorded)."""
    if not store.is_finished(run, need_checkpoint=True):
      return False
    if not self.settings.signals:
      return True
    from heldout_tf.collection import signals as signals_lib  # pylint: disable=g-import-not-at-top
    return os.path.isfile(signals_lib.signals_path(store.run_dir(run)))

  def train_block(self, store, runs) -> List[int]:
    """Trains the canonical block holding `runs` (whole: its runs train
    side by side) and writes its unfinished ones of `runs`."""
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
    trainer = self.trainer
    results = trainer.train(members, partials,
                            trajectory_dirs=trajectories)
    for result, partial in zip(results, partials):
      if result.run in todo:
        trainer.write(store, result, partial)
    return todo


# ---------------------------------------------------------------- workflow --


@dataclasses.dataclass(frozen=True)
class Options:
  """Everything `python -m heldout_tf.cli.train` needs (its flags, as a value)."""
  dataset: str = ""
  data_dir: Optional[str] = None
  download: bool = False
  model: str = ""  # '' : the recipe's model.
  model_options: Tuple = ()  # Sorted (key, value) pairs.
  recipe: str = ""  # '': the model's default recipe.
  ratios: Tuple[float, ...] = (0.7,)
  num_runs: Tuple[int, ...] = (8,)  # One count, or one per ratio.
  root: str = "./heldout_runs"
  experiment: str = ""  # '': '<dataset>-<model>'.
  seed: int = 0
  epochs: int = 0  # 0: the recipe's.
  batch_size: int = 0
  learning_rate: float = 0.0
  precision: str = "auto"
  group_size: int = 0  # 0: the recorded one, else 1.
  checkpoint_every: int = 1
  signals: bool = False
  ssft_epochs: int = 0  # Second-split epochs after each run (signals).
  trajectory_runs: int = 0  # Runs 0..K-1 keep every epoch (-1: all).
  noise: str = ""  # A `heldout_tf.data.noise` spec applied to the train split.
  train_size: int = 0  # Only the first N examples of the data (0: all).
  test_size: int = 0
  shard: str = blocks.NO_SHARD
  jit_compile: bool = False
  engine: str = "local"
  ray_address: Optional[str] = None
  progress: bool = True

  def check(self):
    if not self.dataset:
      raise errors.UsageError("--dataset is required (a tfds name, "
                              "npz:FILE, mnist or digits)")
    if len(self.num_runs) not in (1, len(self.ratios)):
      raise errors.UsageError(
          f"--runs_per_ratio gives {len(self.num_runs)} counts for "
          f"{len(self.ratios)} ratios: give one count, or one per ratio")
    for count in self.num_runs:
      if count < 1:
        raise errors.UsageError(f"--num_runs must be >= 1, got {count}")
    for flag in ("epochs", "batch_size", "group_size", "checkpoint_every",
                 "seed", "ssft_epochs", "train_size", "test_size"):
      if getattr(self, flag) < 0:
        raise errors.UsageError(
            f"--{flag} must be >= 0, got {getattr(self, flag)}")
    if not self.learning_rate >= 0:
      raise errors.UsageError(
          f"--learning_rate must be >= 0, got {self.learning_rate}")
    if self.precision not in hardware.CHOICES:
      raise errors.UsageError(f"--precision must be one of "
                              f"{hardware.CHOICES}, got {self.precision!r}")
    if self.ray_address is not None and self.engine != "ray":
      raise errors.UsageError("--ray_address needs --engine ray")
    if self.train_size == 1:
      raise errors.UsageError("--train_size must be 0 (all) or >= 2: a run "
                              "must train on some examples and hold others "
                              "out")
    if self.trajectory_runs < -1:
      raise errors.UsageError(f"--trajectory_runs must be >= -1, got "
                              f"{self.trajectory_runs}")
    if self.ssft_epochs and not self.signals:
      raise errors.UsageError("--ssft_epochs needs --signals (second-split "
                              "forgetting is one of the signals)")
    blocks.parse_shard(self.shard)
    noise_lib.parse(self.noise)

  def runs_of(self, i: int) -> int:
    return self.num_runs[0 if len(self.num_runs) == 1 else i]


def _recipe(options: Options):
  from heldout_tf.training import recipes  # pylint: disable=g-import-not-at-top
  model = options.model
  recipe = recipes.get(options.recipe or recipes.default_for(model or
                                                             "resnet9"))
  changes = {k: getattr(options, k) for k in ("epochs", "batch_size",
                                               "learning_rate")
             if getattr(options, k)}
  if "epochs" in changes and recipe.schedule == "triangular":
    # A shorter (longer) run keeps the schedule's shape.
    changes["peak_epoch"] = recipe.peak_epoch * (changes["epochs"] /
                                                 recipe.epochs)
  return (recipe.replace(**changes) if changes else recipe,
          model or recipe.model)


def experiment_name(options: Options, data_name: str, model: str) -> str:
  """`--experiment`, else `<data>-<arch>`: e.g. 'cifar10-inception' (the
  released experiment's name, so `demo.py --experiment cifar10-inception
  --root <root>` evaluates the kit's runs), 'cifar10-resnet9', or the
  function's name for a user module."""
  if options.experiment:
    return options.experiment
  if ":" in model:
    return f"{data_name}-{model.split(':')[-1]}"
  from heldout_tf import models  # pylint: disable=g-import-not-at-top
  return f"{data_name}-{models.MODEL_NAMES.get(model, model)}"


def accuracy(store, runs, limit: int = 50) -> Optional[float]:
  """Mean test accuracy of the first `limit` finished runs of `runs`, from
  their aux arrays (a sample: reading thousands takes minutes)."""
  from heldout_tf.collection import runs as runs_lib  # pylint: disable=g-import-not-at-top
  done = [r for r in runs if store.is_finished(r, need_checkpoint=False)]
  values = [runs_lib.read_aux(store.run_dir(r))["correctness_test"].mean()
            for r in done[:limit]]
  return float(sum(values) / len(values)) if values else None


def make(options: Options, say=print,
         check_data: Optional[Callable] = None) -> List[dict]:
  """Trains every ratio's unfinished runs; one report per ratio.
  `check_data(data)`: a caller's check of the loaded data before any
  training (raises to refuse it)."""
  # pylint: disable=g-import-not-at-top
  from heldout_tf.data import image_data
  from heldout_tf.training import settings as settings_lib
  # pylint: enable=g-import-not-at-top
  options.check()
  noise_spec = noise_lib.describe(noise_lib.parse(options.noise))
  source = provenance.DataSource(
      provenance.absolute_source(options.dataset), options.data_dir,
      options.download, noise_spec, options.seed, options.train_size,
      options.test_size)
  data = source.load()
  for ratio in options.ratios:
    image_data.check_ratio(data, ratio)
  if check_data is not None:
    check_data(data)
  recipe, model = _recipe(options)
  experiment = experiment_name(options, data.name, model)
  fingerprint = data.fingerprint()
  say(f"Data: {data.description}, {data.num_classes} classes.\n"
      f"Model: {model}, recipe {recipe.name} ({recipe.epochs} epochs, batch "
      f"{recipe.batch_size}); collection {experiment} under {options.root}.")
  reports = []
  for i, ratio in enumerate(options.ratios):
    store = collection.Store(options.root, experiment, ratio)
    recorded = store.recorded_config()
    precision = collection.resolve_precision(options.precision, recorded)
    group_size, why = collection.resolve_group_size(
        options.group_size, recorded, num_runs=options.runs_of(i),
        shard=options.shard, choose=lambda: 1)
    if why.startswith("chosen"):
      why = "default: one model at a time"
    settings = settings_lib.TrainSettings(
        recipe, model, ratio, seed=options.seed, precision=precision.name,
        model_options=options.model_options,
        checkpoint_every=options.checkpoint_every, signals=options.signals,
        ssft_epochs=options.ssft_epochs,
        trajectory_runs=options.trajectory_runs)
    config = dict(settings.config(), group_size=group_size,
                  **source.recorded(data))
    config.pop("checkpoint_every")  # How often, not what: free to change.
    spec = collection.Spec(
        options.root, experiment, ratio, group_size, ModelBlocks,
        (settings, source, group_size, fingerprint, None,
         options.jit_compile), config=config)
    trainer = ModelBlocks(settings, source, group_size, fingerprint, data,
                          options.jit_compile)
    mine = collection.shard_runs(options.runs_of(i), options.shard,
                                 group_size)
    say(f"Ratio {ratio}: {len(mine)} runs, precision {precision.name} "
        f"({precision.reason}), {group_size} side by side ({why}).")
    report = collection.train(spec, mine, engine=options.engine,
                              address=options.ray_address,
                              progress=options.progress, trainer=trainer)
    report = dict(report, ratio=ratio, experiment=experiment,
                  path=store.path, precision=precision.name,
                  group_size=group_size,
                  test_accuracy=accuracy(store, mine))
    if report["trained"]:
      say(f"Ratio {ratio}: trained {report['trained']} runs in "
          f"{report['seconds']:.0f} s ({report['skipped']} already "
          f"finished); mean test accuracy {report['test_accuracy']:.4f}.")
    else:
      say(f"Ratio {ratio}: all {len(mine)} runs already finished.")
    reports.append(report)
  return reports
