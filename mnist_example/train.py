r"""Reproduces the held-out method on MNIST, end to end, on one machine.

Trains many MLPs (784-512-256-10), each on its own random subset of the
training set, records each model's correctness on every train and test
example in the released layout

  <out>/mnist-mlp/<ratio>/<run>/aux_arrays.npz
  <out>/mnist-mlp/<ratio>/<run>/checkpoints/ckpt-<epochs>.{index,data-*}

then estimates memorization and influence (`heldout_tf.estimates`) and draws
the most / least memorized examples and the top high-influence pairs, next to
the runs in `<out>/mnist-mlp/<ratio>/` (estimates.npz, the pairs file,
figures/), so runs at several ratios under one --out keep their own results.

  python -m mnist_example.train                   # ~4 min on 2 CPU cores
  python -m mnist_example.train --preset=paper --data_dir=~/tensorflow_datasets
  python -m mnist_example.train --label_noise=0.1 --out=/tmp/noisy
  python -m mnist_example.train --stage=train --shard=0/2 --group_size=32
  python -m mnist_example.train --stage=estimate

The collection under `<out>/mnist-mlp/<ratio>` is a `heldout_tf.runstore.
RunStore`: its config.json records every setting a run's bits depend on,
the group size G and the precision included. Runs are trained in canonical
blocks of G (`[k*G, (k+1)*G)`, the last one padded), so each run's arrays are
the same whether it was trained in one job, in shards (`--shard i/n` takes
whole blocks) or resumed after a kill (a killed job loses at most the block
in flight; a partly finished block is retrained whole and only its missing
runs written). `--group_size 0` and `--precision auto` take the recorded
values when the collection exists; other values than the recorded ones are
refused. Runs do not depend on `--num_runs`: raising it trains only the new
runs; `--stage=estimate` uses exactly runs 0..num_runs-1 and refuses others.

The entry point hides TensorFlow's C++ start-up lines and, unless set, sets
TF_ENABLE_ONEDNN_OPTS=1: TF turns oneDNN on by itself on CPUs with AVX-512
(no change there), not on AVX2-only CPUs, where it was measured to about
double matmul throughput. Importing this module sets nothing.
"""

if __name__ == "__main__":
  import os  # pylint: disable=g-import-not-at-top
  from heldout_tf import cli  # pylint: disable=g-import-not-at-top
  os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # Read at TF import.
  cli.quiet_tensorflow()  # Imports TensorFlow.

import dataclasses  # pylint: disable=g-import-not-at-top,g-bad-import-order
import math
import os
import sys
import time
from typing import Optional, Sequence

from absl import flags
import numpy as np

from heldout_tf import detection
from heldout_tf import errors
from heldout_tf import estimates
from heldout_tf import hardware
from heldout_tf import progress
from heldout_tf import runstore
from heldout_tf import training
from mnist_example import data as data_lib

EXPERIMENT = "mnist-mlp"
ESTIMATES_FILENAME = "estimates.npz"
STAGES = ("train", "estimate", "all")
DEFAULT_NUM_RUNS = 512
PAPER_PRESET = dict(num_runs=2000, ratio=0.7, epochs=10, batch_size=128,
                    learning_rate=0.1, dataset="mnist")


@dataclasses.dataclass
class Options:
  """Everything the pipeline needs (the flags, as a value)."""
  out: str = "./heldout_mnist"
  num_runs: int = DEFAULT_NUM_RUNS
  ratio: float = 0.7
  epochs: int = 10
  batch_size: int = 128
  learning_rate: float = 0.1
  group_size: int = 0  # 0: the recorded one, else chosen from memory.
  precision: str = "auto"  # 'auto': the recorded one, else detected.
  seed: int = 0
  dataset: str = "auto"
  data_dir: Optional[str] = None
  download: bool = False
  label_noise: float = 0.0
  stage: str = "all"
  shard: str = "0/1"
  train_size: int = 0  # 0: the whole split.
  test_size: int = 0
  save_checkpoints: bool = True
  infl_threshold: float = 0.15
  mem_threshold: float = 0.25
  progress: bool = True
  engine: str = "local"  # 'local' or 'ray'.
  ray_address: Optional[str] = None  # None: a Ray instance on this machine.


ENGINES = ("local", "ray")


# -------------------------------------------------------------- validation --


def validate(options: Options):
  """Raises `errors.UsageError` naming the first bad flag."""
  def need(ok, flag, rule):
    if not ok:
      raise errors.UsageError(
          f"--{flag} {rule}, got {getattr(options, flag)!r}")

  def finite(name):
    value = getattr(options, name)
    return isinstance(value, (int, float)) and math.isfinite(value)

  need(options.stage in STAGES, "stage", f"must be one of {STAGES}")
  need(options.engine in ENGINES, "engine", f"must be one of {ENGINES}")
  need(options.ray_address is None or options.engine == "ray", "ray_address",
       "needs --engine ray")
  need(options.dataset in data_lib.DATASETS, "dataset",
       f"must be one of {data_lib.DATASETS}")
  need(options.precision in hardware.CHOICES, "precision",
       f"must be one of {hardware.CHOICES}")
  need(options.num_runs >= 1, "num_runs", "must be >= 1")
  need(finite("ratio") and 0.0 < options.ratio <= 1.0, "ratio",
       "must be in (0, 1]")
  need(options.epochs >= 1, "epochs", "must be >= 1")
  need(options.batch_size >= 1, "batch_size", "must be >= 1")
  need(finite("learning_rate") and options.learning_rate > 0,
       "learning_rate", "must be a finite number > 0")
  need(options.group_size >= 0, "group_size",
       "must be >= 1, or 0 to choose from memory")
  need(options.seed >= 0, "seed", "must be >= 0")
  need(finite("label_noise") and 0.0 <= options.label_noise < 1.0,
       "label_noise", "must be in [0, 1)")
  need(options.train_size >= 0, "train_size", "must be >= 0 (0: all)")
  need(options.test_size >= 0, "test_size", "must be >= 0 (0: all)")
  for name in ("infl_threshold", "mem_threshold"):
    need(finite(name), name, "must be a finite number")
  runstore.parse_shard(options.shard)


# -------------------------------------------------------------------- data --


def load_data(options: Options, dataset=None) -> data_lib.MnistData:
  """The data of `options` (`dataset` overrides `options.dataset`), cut to
  --train_size / --test_size (`errors.UsageError` if larger than the data)."""
  data = data_lib.load(dataset or options.dataset, options.data_dir,
                       options.download, options.label_noise, options.seed)
  return data_lib.first_examples(data, options.train_size, options.test_size)


def data_fingerprint(data: data_lib.MnistData) -> str:
  """A short hash of the labels and the first images: same data or not."""
  return runstore.fingerprint(data.train_labels, data.test_labels,
                              data.train_images[:64])


# ------------------------------------------------------------------- train --


def store_for(options: Options) -> runstore.RunStore:
  return runstore.RunStore(options.out, EXPERIMENT, options.ratio)


def train_config(options: Options, precision: str = "float32"
                 ) -> training.TrainConfig:
  return training.TrainConfig(
      ratio=options.ratio, epochs=options.epochs,
      batch_size=options.batch_size, learning_rate=options.learning_rate,
      seed=options.seed, num_classes=data_lib.NUM_CLASSES,
      precision=precision)


def experiment_config(config: training.TrainConfig, group_size: int,
                      options: Options, data: data_lib.MnistData) -> dict:
  """What every run of one `<out>/mnist-mlp/<ratio>` directory shares."""
  recorded = dataclasses.asdict(config)
  recorded["hidden"] = list(recorded["hidden"])
  recorded.update(
      group_size=group_size, dataset=data.name,
      label_noise=options.label_noise, train_size=len(data.train_labels),
      test_size=len(data.test_labels), data_fingerprint=data_fingerprint(data))
  return recorded


def resolve_precision(flag: str, recorded: Optional[dict]
                      ) -> hardware.Precision:
  """--precision against the collection's recorded precision.

  'auto' takes the recorded one if there is one, else detects; an explicit
  value must equal the recorded one (`errors.ConfigError` names both).
  """
  on_disk = (recorded or {}).get("precision")
  if flag == "auto" and on_disk:
    return hardware.Precision(on_disk, "recorded in this --out's config.json")
  precision = hardware.resolve_precision(flag)
  if on_disk and precision.name != on_disk:
    raise errors.ConfigError(
        f"--precision {flag} ({precision.name}) differs from the precision "
        f"{on_disk} the runs in this --out were trained in; pass "
        f"--precision {on_disk} (or auto), or use another --out")
  return precision


def resolve_group_size(options: Options, recorded: Optional[dict],
                       config: training.TrainConfig):
  """`(G, why)`: --group_size against the collection's recorded one.

  0 takes the recorded G if there is one, else chooses from the available
  memory (at most --num_runs); resolved once, then read back. Sharded
  training needs the same G in every shard: the first one must name it.
  """
  on_disk = (recorded or {}).get("group_size")
  flag = options.group_size
  if flag == 0:
    if on_disk:
      return int(on_disk), "recorded in this --out's config.json"
    if options.shard != "0/1":
      raise errors.UsageError(
          f"--shard {options.shard}: every shard must train blocks of the "
          "same size; pass --group_size (e.g. 32) explicitly the first "
          "time (later runs read it back from config.json)")
    size = min(training.auto_group_size(config), options.num_runs)
    return size, "chosen from the available memory"
  if on_disk and flag != on_disk:
    raise errors.ConfigError(
        f"--group_size {flag} differs from the group size {on_disk} the runs "
        "in this --out were trained with (a run's bits depend on it); pass "
        f"--group_size {on_disk} (or 0), or use another --out")
  return flag, "from --group_size"


def train_stage(options: Options, data: data_lib.MnistData) -> dict:
  """Trains this shard's unfinished runs, block by block."""
  store = store_for(options)
  recorded = store.recorded_config()
  precision = resolve_precision(options.precision, recorded)
  config = train_config(options, precision.name)
  group_size, why = resolve_group_size(options, recorded, config)
  store.record_config(experiment_config(config, group_size, options, data))
  mine = runstore.shard_runs(options.num_runs, options.shard, group_size)
  todo = store.unfinished(mine, options.save_checkpoints)
  blocks = runstore.groups(todo, group_size)
  print(f"Data: {data.description}.\nPrecision: {precision.name} "
        f"({precision.reason}).\nTraining: {len(todo)} of shard "
        f"{options.shard}'s {len(mine)} runs left ({len(mine) - len(todo)} "
        f"already finished), in {len(blocks)} block(s) of {group_size} models "
        f"(group size {why}).", flush=True)
  if not todo:
    return {"trained": 0, "seconds": 0.0, "group_size": group_size,
            "precision": precision.name}
  if options.engine == "ray":
    return _train_on_ray(options, data, precision, group_size, mine)
  trainer, evaluator = block_inputs_of(data, config)
  start, done = time.perf_counter(), 0
  with progress.bar(len(todo), "training", unit="run",
                    enabled=options.progress) as bar:
    for runs in blocks:
      written = runstore.train_block(
          store, trainer, runs, group_size, train_images=data.train_images,
          train_labels=data.train_labels, test_images=data.test_images,
          test_labels=data.test_labels,
          save_checkpoints=options.save_checkpoints, evaluator=evaluator)
      done += len(written)
      elapsed = time.perf_counter() - start
      bar.set_postfix_str(f"{3600 * done / elapsed:.0f} models/h")
      bar.update(len(written))
  seconds = time.perf_counter() - start
  print(f"Trained {done} runs in {seconds:.0f} s "
        f"({3600 * done / seconds:.0f} models/hour) under {store.path}",
        flush=True)
  return {"trained": done, "seconds": seconds, "group_size": group_size,
          "precision": precision.name}


def block_inputs_of(data: data_lib.MnistData, config: training.TrainConfig):
  """`(trainer, evaluator)` for `runstore.train_block`: the evaluator
  records correctness in float32, as the saved float32 checkpoint
  predicts, whatever the training precision."""
  trainer = training.EnsembleTrainer(data.train_images, data.train_labels,
                                     config)
  return trainer, runstore.float32_evaluator(trainer, data.train_images,
                                             data.train_labels)


def ray_block_inputs(options: Options, precision: str, fingerprint: str):
  """What a Ray worker trains blocks with: the same data and trainer as the
  driver's (checked by the data fingerprint). Top level, so Ray ships it."""
  from heldout_tf import ray_engine  # pylint: disable=g-import-not-at-top
  data = load_data(options)
  if data_fingerprint(data) != fingerprint:
    raise errors.ConfigError(
        f"a Ray worker loaded other {data.name} data than the driver: "
        "every node needs the same --data_dir contents")
  trainer, evaluator = block_inputs_of(data, train_config(options, precision))
  return ray_engine.BlockInputs(trainer, data.train_images, data.train_labels,
                                data.test_images, data.test_labels,
                                evaluator=evaluator)


def _train_on_ray(options: Options, data: data_lib.MnistData,
                  precision: hardware.Precision, group_size: int, mine):
  from heldout_tf import ray_engine  # pylint: disable=g-import-not-at-top
  spec = ray_engine.TrainSpec(
      options.out, EXPERIMENT, options.ratio, group_size, ray_block_inputs,
      (dataclasses.replace(options, dataset=data.name), precision.name,
       data_fingerprint(data)),
      save_checkpoints=options.save_checkpoints)
  report = ray_engine.train_on_ray(spec, mine, address=options.ray_address,
                                   progress=options.progress)
  seconds = report["seconds"]
  print(f"Trained {report['trained']} runs on Ray in {seconds:.0f} s "
        f"({report['tasks']} tasks) under {store_for(options).path}",
        flush=True)
  return {"trained": report["trained"], "seconds": seconds,
          "group_size": group_size, "precision": precision.name,
          "engine": "ray"}


# ---------------------------------------------------------------- estimate --

_RECORDED_KEYS = ("label_noise", "seed", "train_size", "test_size",
                  "dataset", "data_fingerprint")
_FINISH_HINT = ("Finish them with --stage=train (each --shard i/n again, same "
                "flags), then run --stage=estimate.")


def estimate_stage(options: Options,
                   data: Optional[data_lib.MnistData] = None) -> dict:
  """Estimates memorization and influence and draws the figures.

  Needs runs 0..num_runs-1 finished and no others. `data`: the runs' data if
  already loaded (stage 'all'); else loaded as the runs' config says.
  """
  # Matplotlib only here: training shards never import it.
  from mnist_example import figures  # pylint: disable=g-import-not-at-top
  store = store_for(options)
  config = store.require_config()
  missing = [k for k in _RECORDED_KEYS if k not in config]
  if missing:
    raise errors.ConfigError(
        f"{store.config_path}: not a mnist_example.train collection (no "
        f"{', '.join(missing)}); was it made by another pipeline (e.g. "
        "mnist_example.quality)? Use that pipeline or another --out")
  # The runs define the data: same dataset, noise, seed and sizes.
  options = dataclasses.replace(
      options, label_noise=config["label_noise"], seed=config["seed"],
      train_size=config["train_size"], test_size=config["test_size"])
  store.check_complete(options.num_runs, hint=_FINISH_HINT)
  if data is None:
    data = load_data(options, dataset=config["dataset"])
  if data_fingerprint(data) != config["data_fingerprint"]:
    raise errors.ConfigError(
        f"{store.config_path}: the {config['dataset']} data loaded now "
        "differs from the data the runs were trained on")
  runs = estimates.load_runs(options.out, EXPERIMENT, [options.ratio],
                             progress=options.progress)
  if runs.n_train != len(data.train_labels):
    raise errors.ConfigError(
        f"runs have {runs.n_train} training examples, the data "
        f"{len(data.train_labels)}")
  result = estimates.compute(
      runs, what=("mem", "pairs", "cscores"),
      infl_threshold=options.infl_threshold,
      mem_threshold=options.mem_threshold, labels=data.train_labels,
      progress=options.progress)
  result.update(noisy_idx=data.noisy_idx,
                clean_train_labels=data.clean_train_labels,
                test_labels=data.test_labels)
  root = store.path
  paths = {"estimates": os.path.join(root, ESTIMATES_FILENAME),
           "pairs": os.path.join(
               root, f"mnist_high_infl_pairs_infl{options.infl_threshold:g}"
               f"_mem{options.mem_threshold:g}.npz")}
  mem = np.nan_to_num(result["memorization"], nan=0.0)
  with errors.user_path(root, "write"):
    estimates.save_estimates(paths["estimates"], result)
    estimates.save_pairs(paths["pairs"], result)
    paths["figures"] = figures.write_all(os.path.join(root, "figures"), data,
                                         mem, result)
  print(estimates.summary(result))
  if len(data.noisy_idx):
    auc = detection.metrics(mem, data.noisy_idx)["auc"]
    print(f"label noise sanity check: {len(data.noisy_idx)} flipped labels, "
          f"mean memorization {mem[data.noisy_idx].mean():.3f} vs "
          f"{np.delete(mem, data.noisy_idx).mean():.3f} for the rest; "
          f"ROC AUC {auc:.3f}")
    result["noise_auc"] = auc
  print(f"Estimates: {paths['estimates']}\nHigh-influence pairs: "
        f"{paths['pairs']}\nFigures:\n  " + "\n  ".join(paths["figures"]))
  result["paths"] = paths
  return result


def run(options: Options) -> dict:
  """Runs `options.stage`; returns what each stage reported."""
  validate(options)
  out, data = {}, None
  if options.stage in ("train", "all"):
    data = load_data(options)
    out["train"] = train_stage(options, data)
  if options.stage in ("estimate", "all"):
    if options.stage == "all" and options.shard != "0/1":
      missing = store_for(options).unfinished(range(options.num_runs),
                                              options.save_checkpoints)
      if missing:
        print(f"{len(missing)} of {options.num_runs} runs are not finished "
              "yet (other shards); run --stage=estimate once all are.")
        return out
    out["estimate"] = estimate_stage(options, data)
  return out


# --------------------------------------------------------------------- CLI --


def flag_values() -> flags.FlagValues:
  """A fresh absl `FlagValues` holding this program's flags (never global)."""
  fv = flags.FlagValues()
  d = Options()
  flags.DEFINE_integer("num_runs", d.num_runs, "Number of runs (models).",
                       flag_values=fv)
  flags.DEFINE_float("ratio", d.ratio, "Fraction of the training set each "
                     "run trains on.", flag_values=fv)
  flags.DEFINE_integer("epochs", d.epochs, "Training epochs per run.",
                       flag_values=fv)
  flags.DEFINE_integer("batch_size", d.batch_size, "Batch size.",
                       flag_values=fv)
  flags.DEFINE_float("learning_rate", d.learning_rate,
                     "SGD learning rate (momentum 0.9).", flag_values=fv)
  flags.DEFINE_integer("group_size", d.group_size, "Models trained at once "
                       "(canonical blocks of runs, recorded in config.json); "
                       "0: the recorded one, else chosen from the available "
                       "memory.", flag_values=fv)
  flags.DEFINE_enum("precision", d.precision, hardware.CHOICES, "Matmul "
                    "precision; 'auto': the recorded one, else bfloat16 "
                    "where the hardware has fast bfloat16 units.",
                    flag_values=fv)
  flags.DEFINE_integer("seed", d.seed, "Seed: subsets, shuffles, "
                       "initialisation and label noise are functions of "
                       "(seed, run).", flag_values=fv)
  flags.DEFINE_string("out", d.out, "Output root.", flag_values=fv)
  flags.DEFINE_enum("dataset", d.dataset, data_lib.DATASETS,
                    "'mnist' (tfds), 'digits' (embedded 5 000 digits) or "
                    "'auto' (mnist if prepared locally, else digits).",
                    flag_values=fv)
  flags.DEFINE_string("data_dir", d.data_dir,
                      "tfds data directory holding mnist.", flag_values=fv)
  flags.DEFINE_bool("download", d.download,
                    "Let tfds download MNIST (network).", flag_values=fv)
  flags.DEFINE_float("label_noise", d.label_noise, "Fraction of training "
                     "labels to flip (seeded); their indices are saved as "
                     "noisy_idx.", flag_values=fv)
  flags.DEFINE_enum("stage", d.stage, STAGES, "What to run.", flag_values=fv)
  flags.DEFINE_string("shard", d.shard, "i/n: train only the i-th of n "
                      "disjoint sets of whole blocks of runs.",
                      flag_values=fv)
  flags.DEFINE_enum("preset", None, ["paper"], "'paper': the reference setup "
                    "(2000 runs, ratio 0.7, 10 epochs, batch 128, lr 0.1, "
                    "tfds MNIST); explicit flags still override it.",
                    flag_values=fv)
  flags.DEFINE_integer("train_size", d.train_size, "Use only the first N "
                       "training examples (0: all).", flag_values=fv)
  flags.DEFINE_integer("test_size", d.test_size, "Use only the first N test "
                       "examples (0: all).", flag_values=fv)
  flags.DEFINE_bool("save_checkpoints", d.save_checkpoints,
                    "Write checkpoints/ckpt-<N>.", flag_values=fv)
  flags.DEFINE_float("infl_threshold", d.infl_threshold,
                     "High-influence pairs threshold.", flag_values=fv)
  flags.DEFINE_float("mem_threshold", d.mem_threshold, "Memorization "
                     "threshold of the pairs' training examples.",
                     flag_values=fv)
  flags.DEFINE_bool("progress", d.progress, "Show progress bars.",
                    flag_values=fv)
  flags.DEFINE_enum("engine", d.engine, ENGINES, "'local': train here; "
                    "'ray': one Ray task per block of runs (identical "
                    "results; --out must be storage every node sees).",
                    flag_values=fv)
  flags.DEFINE_string("ray_address", d.ray_address, "With --engine ray: "
                      "the cluster to join (HEAD:6379 or 'auto'); unset: a "
                      "Ray instance on this machine only.", flag_values=fv)
  return fv


def parse_args(argv: Sequence[str]) -> Optional[Options]:
  """`argv` (program name first) -> Options; None after printing --help.

  Raises `errors.UsageError` for unknown flags, bad values or extra
  arguments.
  """
  fv = flag_values()
  if any(a in ("-h", "--help", "--helpshort", "--helpfull")
         for a in argv[1:]):
    print(__doc__ + "\nFlags:\n" + fv.get_help(include_special_flags=False))
    return None
  try:
    rest = fv(list(argv))
  except flags.Error as e:
    raise errors.UsageError(str(e)) from None
  if len(rest) > 1:
    raise errors.UsageError(f"unexpected arguments: {rest[1:]}")
  values = {f.name: fv[f.name].value for f in dataclasses.fields(Options)}
  if fv.preset == "paper":
    for name, value in PAPER_PRESET.items():
      if not fv[name].present:
        values[name] = value
  return Options(**values)


def main(argv: Optional[Sequence[str]] = None):
  options = parse_args(sys.argv if argv is None else argv)
  if options is not None:
    run(options)


if __name__ == "__main__":
  cli.run(main)
