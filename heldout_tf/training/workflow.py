"""Making a collection: the one workflow, for any data and model.

  options = workflow.Options(dataset="cifar10", data_dir=D, model="resnet9",
                             ratios=(0.1, 0.5, 0.9), num_runs=(20,),
                             root="./cscores")
  reports = workflow.make(options)      # one report per ratio

data source -> model -> recipe -> trainer -> store: the data comes from a
`collection.provenance.DataSource` (noise and cut applied), the model and
recipe by name (`models.build`, `recipes`), the trainer is the one the
settings name (`training.engines`: one model at a time or side by side;
stacked MLPs), and each ratio is one collection (`heldout_tf.collection`:
config.json, canonical blocks, the local or Ray loop) under
`<root>/<experiment>/<ratio>/`, each run written in the released layout.

Every setting a run's bits depend on is recorded in config.json (recipe,
model and the variables it builds, ratio, seed, precision, trainer, group
size, the data's noise, cut and fingerprint; where the data was found, for
information); a later call must agree (a config recorded before a key
existed is not compared on it). config.json is written once the data and
the model passed their checks, as the first block starts: a call refused
by those checks leaves nothing behind. `--precision auto`,
`--trainer auto` and `--group_size 0` take the recorded values, else the
machine's best (`core.hardware`), the trainer measured fastest for the
model (`engines.choose`) and that trainer's default group size.
`heldout train`, `heldout quality --num_runs`, the MNIST reproduction
(`mnist_example.train`) and its quality preset all make collections here.
"""

import dataclasses
import os
from typing import Callable, List, Optional, Tuple

from heldout_tf import collection
from heldout_tf.collection import blocks
from heldout_tf.collection import layout
from heldout_tf.collection import provenance
from heldout_tf.core import errors
from heldout_tf.core import hardware
from heldout_tf.data import noise as noise_lib
from heldout_tf.data import sources
from heldout_tf.training import fields

TRAINERS = ("auto", "group", "stacked")


@dataclasses.dataclass(frozen=True)
class Options:
  """Everything making a collection takes: the flags of `heldout train`
  (declared once, `heldout_tf.cli.flags`), as a value. 0 / '' mean the
  default that the comments say."""
  # The data.
  dataset: str = ""  # A tfds name, npz:FILE, mnist or digits.
  data_dir: Optional[str] = None  # The tfds data directory.
  download: bool = False  # Let tfds download (network).
  noise: str = ""  # A `heldout_tf.data.noise` spec for the training set.
  train_size: int = 0  # Only the first N training examples (0: all).
  test_size: int = 0
  # The model and how it trains.
  model: str = ""  # '': the recipe's model.
  model_options: Tuple = ()  # Sorted (key, value) pairs.
  recipe: str = ""  # '': the model's default recipe.
  epochs: int = 0  # 0: the recipe's (a shorter run keeps its schedule).
  batch_size: int = 0  # 0: the recipe's.
  learning_rate: float = 0.0  # 0: the recipe's.
  # The collection.
  root: str = "./heldout_runs"
  experiment: str = ""  # '': '<dataset>-<model>'.
  ratios: Tuple[float, ...] = (0.7,)
  num_runs: Tuple[int, ...] = (8,)  # One count, or one per ratio.
  seed: int = 0
  signals: bool = False  # Per-epoch data-quality signals (signals.npz).
  ssft_epochs: int = 0  # Second-split epochs after each run (signals).
  trajectory_runs: int = 0  # Runs 0..K-1 keep every epoch (-1: all).
  # How: none of these changes a run's bits, except as recorded.
  precision: str = "auto"
  trainer: str = "auto"  # 'group', 'stacked'; 'auto': recorded / fastest.
  group_size: int = 0  # 0: the recorded one, else the trainer's default.
  checkpoint_every: int = 1  # Epochs between resume checkpoints (0: none).
  save_checkpoints: bool = True  # False: aux arrays only.
  shard: str = blocks.NO_SHARD
  jit_compile: bool = False
  engine: str = "local"  # 'ray': one Ray task per block of runs.
  ray_address: Optional[str] = None
  progress: bool = True

  def check(self):
    """`errors.UsageError` naming the flag of the first bad value."""
    if not isinstance(self.dataset, str) or not self.dataset:
      raise errors.UsageError("--dataset is required (a tfds name, "
                              "npz:FILE, mnist or digits)")
    provenance.absolute_source(self.dataset)  # npz:FILE names a file.
    for name in ("seed", "epochs", "batch_size", "learning_rate",
                 "group_size", "checkpoint_every", "ssft_epochs",
                 "trajectory_runs", "train_size", "test_size"):
      fields.check(name, getattr(self, name))
    if self.experiment:
      layout.experiment_name(self.experiment)
    if not self.ratios:
      raise errors.UsageError("--ratios: at least one ratio")
    for ratio in self.ratios:
      fields.check("ratio", ratio)
    if len(self.num_runs) not in (1, len(self.ratios)):
      raise errors.UsageError(
          f"--runs_per_ratio gives {len(self.num_runs)} counts for "
          f"{len(self.ratios)} ratios: give one count, or one per ratio")
    for count in self.num_runs:
      fields.check("num_runs", count)
    hardware.check_name(self.precision, auto=True)
    if self.trainer not in TRAINERS:
      raise errors.UsageError(f"--trainer must be one of "
                              f"{', '.join(TRAINERS)}, got {self.trainer!r}")
    if self.ssft_epochs and not self.signals:
      raise errors.UsageError("--ssft_epochs needs --signals (second-split "
                              "forgetting is one of the signals)")
    if self.ssft_epochs and any(r >= 1.0 for r in self.ratios):
      raise errors.UsageError("--ssft_epochs needs ratios below 1 (the "
                              "second split is the held-out examples)")
    fields.check_model_options(dict(self.model_options))
    collection.check_engine(self.engine, self.ray_address)
    blocks.parse_shard(self.shard)
    noise_lib.parse(self.noise)
    if self.model:
      from heldout_tf.models import names  # pylint: disable=g-import-not-at-top
      names.check_name(self.model)
    recipe_and_model(self)  # --recipe, or a user module without one.
    self.check_paths()

  def check_paths(self):
    """`errors.PathError` when --root cannot hold a collection (a file is
    there, or under it) or an npz:FILE dataset is no readable file: before
    TensorFlow loads and anything is printed."""
    existing = os.path.abspath(self.root)
    while not os.path.exists(existing):
      existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
      raise errors.PathError(f"--root {self.root}: {existing} is not a "
                             "directory")
    if self.dataset.startswith(sources.NPZ_PREFIX):
      path = os.path.expanduser(self.dataset[len(sources.NPZ_PREFIX):])
      if path and not os.path.isfile(path):
        what = ("a directory" if os.path.isdir(path) else
                "no such file")
        raise errors.PathError(f"--dataset {self.dataset}: {what}")
      if path and not os.access(path, os.R_OK):
        raise errors.PathError(f"--dataset {self.dataset}: not readable")

  def runs_of(self, i: int) -> int:
    """The run count of the i-th ratio."""
    return self.num_runs[0 if len(self.num_runs) == 1 else i]

  def source(self) -> provenance.DataSource:
    """Where the data comes from (npz paths made absolute, the noise spec
    in its canonical form)."""
    return provenance.DataSource(
        provenance.absolute_source(self.dataset), self.data_dir,
        self.download, noise_lib.describe(noise_lib.parse(self.noise)),
        self.seed, self.train_size, self.test_size)


def recipe_and_model(options: Options):
  """`(recipe, model name)`: the named recipe (else the model's default,
  `recipes.for_model`) with the flags' changes (`Recipe.replace`: other
  epochs squeeze the schedule, its shape kept)."""
  from heldout_tf.training import recipes  # pylint: disable=g-import-not-at-top
  recipe = recipes.for_model(options.recipe, options.model)
  changes = {k: getattr(options, k) for k in ("epochs", "batch_size",
                                               "learning_rate")
             if getattr(options, k)}
  return (recipe.replace(**changes) if changes else recipe,
          options.model or recipe.model)


def experiment_name(options: Options, data_name: str, model: str) -> str:
  """`--experiment`, else `<data>-<model>`: e.g. 'cifar10-resnet9',
  'my_digits-small_inception', or the function's name for a user module
  ('my_digits-build' for my_nets:build)."""
  if options.experiment:
    return layout.experiment_name(options.experiment)
  return layout.experiment_name(
      f"{data_name}-{model.split(':')[-1]}",
      "the experiment name made of --dataset and --model (pass "
      "--experiment):")


def recorded_config(store, required: bool = False) -> Optional[dict]:
  """The collection's config.json, every setting checked
  (`fields.check_recorded`, `recipes.from_config`); None for a new collection, or with
  `required` `collection.MissingConfigError`. A collection made by an
  earlier version of the MNIST reproduction is refused in one line."""
  recorded = store.require_config() if required else store.recorded_config()
  if recorded is None:
    return None
  if "recipe" not in recorded and "hidden" in recorded:
    raise errors.ConfigError(
        f"{store.config_path}: made by an earlier version of "
        "mnist_example.train, which this version cannot resume; use another "
        "--root (or remove that collection)")
  fields.check_recorded(recorded, store.config_path)
  if "recipe" in recorded:
    from heldout_tf.training import recipes  # pylint: disable=g-import-not-at-top
    recipes.from_config(recorded["recipe"], store.config_path)
  return recorded


def recorded_evaluation_batch(recipe, recorded: Optional[dict]):
  """`recipe` with the evaluation batch `recorded` (a collection's config)
  records, when it records another: a collection keeps the batch it
  evaluates its runs with (e.g. one made when the recipe's was 200)."""
  value = ((recorded or {}).get("recipe") or {}).get("eval_batch_size")
  if isinstance(value, int) and value != recipe.eval_batch_size:
    return recipe.replace(eval_batch_size=value)
  return recipe


def resolve_trainer(flag: str, recorded: Optional[dict], choose
                    ) -> Tuple[str, str]:
  """`(trainer, why)`: --trainer against the recorded one ('group' when a
  config records none: collections made before there were two). 'auto'
  takes the recorded one, else `choose()`; an explicit value must equal
  the recorded one."""
  on_disk = None if recorded is None else recorded.get("trainer", "group")
  if flag == "auto":
    if on_disk:
      return on_disk, "recorded in this --root's config.json"
    return choose()
  if on_disk and flag != on_disk:
    raise errors.ConfigError(
        f"--trainer {flag} differs from the trainer {on_disk} the runs in "
        f"this --root were trained with (a run's bits depend on it); pass "
        f"--trainer {on_disk} (or auto), or use another --root")
  return flag, "from --trainer"


def check_model(model: str, recipe, options: Options, data):
  """Builds the model once and checks it on two images of `data`
  (`models.check_output`: logits, variables, and the features the signals
  need), before anything is recorded or printed."""
  # pylint: disable=g-import-not-at-top
  from heldout_tf import models
  from heldout_tf.training import settings as settings_lib
  # pylint: enable=g-import-not-at-top
  settings = settings_lib.TrainSettings(
      recipe, model, options.ratios[0], model_options=options.model_options)
  built = models.build_model(model, data.num_classes, **settings.options)
  models.check_output(built, f"--model {model}", data.image_shape,
                      data.num_classes, features=options.signals)


def resolve_precision(flag: str, recorded: Optional[dict], model: str):
  """The `hardware.Precision` to train in: `collection.resolve_precision`,
  except that a user module is not assumed to compute in a low precision
  ('auto' picks float32 for it unless recorded; an explicit one says that
  the module runs in it only if it follows `models.compute_dtype()`)."""
  precision = collection.resolve_precision(flag, recorded)
  if ":" not in model or precision.reason.startswith("recorded"):
    return precision
  if flag == "auto":
    return hardware.Precision(
        "float32", "auto: your own module's precision is its own; "
        "--precision bfloat16 if it follows models.compute_dtype()")
  return hardware.Precision(
      precision.name, f"{precision.reason}; your module computes in it if "
      "it follows models.compute_dtype()")


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
  from heldout_tf.training import blocks as blocks_lib
  from heldout_tf.training import engines
  from heldout_tf.training import settings as settings_lib
  from heldout_tf.training import run_plan
  # pylint: enable=g-import-not-at-top
  options.check()
  recipe, model = recipe_and_model(options)
  source = options.source()
  data = source.load()
  for ratio in options.ratios:
    image_data.check_ratio(data, ratio)
  if check_data is not None:
    check_data(data)
  check_model(model, recipe, options, data)
  experiment = experiment_name(options, data.name, model)
  fingerprint = data.fingerprint()
  say(f"Data: {data.description}, {data.num_classes} classes.\n"
      f"Model: {model}; collection {experiment} under {options.root}.\n"
      f"{recipe.describe()}")
  reports, variables = [], None
  for i, ratio in enumerate(options.ratios):
    store = collection.Store(options.root, experiment, ratio)
    recorded = recorded_config(store)
    precision = resolve_precision(options.precision, recorded, model)
    ratio_recipe = recorded_evaluation_batch(recipe, recorded)

    def settings_for(trainer, ratio=ratio, precision=precision,
                     recipe=ratio_recipe):
      return settings_lib.TrainSettings(
          recipe, model, ratio, seed=options.seed, precision=precision.name,
          model_options=options.model_options,
          checkpoint_every=options.checkpoint_every,
          signals=options.signals, ssft_epochs=options.ssft_epochs,
          trajectory_runs=options.trajectory_runs, trainer=trainer)

    trainer, trainer_why = resolve_trainer(
        options.trainer, recorded,
        lambda: engines.choose(settings_for(settings_lib.GROUP), data))
    settings = settings_for(trainer)
    group_size, why = collection.resolve_group_size(
        options.group_size, recorded, num_runs=options.runs_of(i),
        shard=options.shard,
        choose=lambda: engines.default_group_size(trainer, settings, data))
    if why.startswith("chosen"):
      why = f"the {trainer} trainer's default"
    if variables is None:  # Builds and checks the model, before any write.
      variables = run_plan.model_variables(settings, data)
    config = dict(settings.config(), group_size=group_size,
                  model_variables=variables, **source.recorded(data))
    config.pop("checkpoint_every")  # How often, not what: free to change.
    factory_args = (settings, source, group_size, fingerprint, None,
                    options.jit_compile, options.save_checkpoints, variables)
    spec = collection.Spec(options.root, experiment, ratio, group_size,
                           blocks_lib.ModelBlocks, factory_args,
                           config=config)
    block_trainer = blocks_lib.ModelBlocks(
        settings, source, group_size, fingerprint, data, options.jit_compile,
        options.save_checkpoints)  # This process built `variables`.
    mine = collection.shard_runs(options.runs_of(i), options.shard,
                                 group_size)
    say(f"Ratio {ratio}: {len(mine)} runs, precision {precision.name} "
        f"({precision.reason}), trainer {trainer} ({trainer_why}), "
        f"{group_size} side by side ({why}).")
    report = collection.train(spec, mine, engine=options.engine,
                              address=options.ray_address,
                              progress=options.progress,
                              trainer=block_trainer, say=say)
    report = dict(report, ratio=ratio, experiment=experiment,
                  path=store.path, precision=precision.name,
                  trainer=trainer, group_size=group_size,
                  test_accuracy=accuracy(store, mine))
    others = (f", {report['by_others']} by another process"
              if report["by_others"] else "")
    if report["trained"]:
      seconds = max(report["seconds"], 1e-9)
      say(f"Ratio {ratio}: trained {report['trained']} runs in "
          f"{report['seconds']:.0f} s ({3600 * report['trained'] / seconds:.0f}"
          f" models/hour; {report['skipped']} already finished{others}); "
          f"mean test accuracy {report['test_accuracy']:.4f}.")
    else:
      say(f"Ratio {ratio}: all {len(mine)} runs already finished{others}.")
    reports.append(report)
  return reports
