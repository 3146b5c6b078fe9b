r"""Which MNIST examples are noisy? Seven scores on the same runs, one command.

Makes a training set with known noise (`mnist_example.noise`), trains a
collection of held-out runs on it with per-epoch signals recorded
(`heldout_tf.signals`), scores every training example with held-out
memorization, 1 - C-score, held-out loss, TracIn, AUM, second-split
forgetting and confident learning (`heldout_tf.scores`), measures how well
each finds the noisy examples (`heldout_tf.detection`) and retrains models
without the top-scored examples (removal ablation):

  python -m mnist_example.quality                         # label:0.1, digits
  python -m mnist_example.quality --noise input_gaussian:0.1@0.5
  python -m mnist_example.quality --noise label:0.05,label_pair:0.05 \
      --dataset mnist --num_runs 512

Layout (`--out`, default ./heldout_quality):

  <out>/mnist-mlp/<ratio>/config.json           the collection's settings
  <out>/mnist-mlp/<ratio>/<run>/aux_arrays.npz  the released layout ...
  <out>/mnist-mlp/<ratio>/<run>/checkpoints/ckpt-<epochs>
  <out>/mnist-mlp/<ratio>/<run>/signals.npz     per-example signal sums
  <out>/mnist-mlp/<ratio>/<run>/trajectory/ckpt-<epoch>   (first
                                     --trajectory_runs runs; every epoch)
  <out>/mnist-mlp/<ratio>/quality/  scores.npz, detection.csv, removal.csv,
                                     roc.png, precision_at_k.png,
                                     removal.png, top_suspicious.png

Runs are trained in the collection's canonical blocks (`heldout_tf.
runstore`); a run is finished for this pipeline once it has its aux arrays,
checkpoint and signals.npz, so an interrupted job resumes where it stopped
and a re-run only re-scores.
"""

if __name__ == "__main__":
  from heldout_tf import cli as _cli  # pylint: disable=g-import-not-at-top
  _cli.quiet_tensorflow()

# pylint: disable=g-import-not-at-top,g-bad-import-order
import argparse
import csv
import dataclasses
import os
import time
from typing import Dict, List, Optional, Sequence

import numpy as np

from heldout_tf import cli
from heldout_tf import detection
from heldout_tf import errors
from heldout_tf import files
from heldout_tf import estimates
from heldout_tf import hardware
from heldout_tf import progress as progress_lib
from heldout_tf import runs as runs_lib
from heldout_tf import runstore
from heldout_tf import scores as scores_lib
from heldout_tf import signals as signals_lib
from mnist_example import data as data_lib
from mnist_example import noise as noise_lib

EXPERIMENT = "mnist-mlp"
QUALITY_DIRNAME = "quality"
TRAJECTORY_DIRNAME = "trajectory"
SCORES_FILENAME = "scores.npz"
DETECTION_FILENAME = "detection.csv"
REMOVAL_FILENAME = "removal.csv"
DEFAULT_FRACTIONS = "0.01,0.02,0.05,0.1,0.2"


@dataclasses.dataclass
class Options:
  """Everything the pipeline needs (the flags, as a value)."""
  out: str = "./heldout_quality"
  noise: str = "label:0.1"
  num_runs: int = 128
  ratio: float = 0.7
  epochs: int = 10
  batch_size: int = 128
  learning_rate: float = 0.1
  group_size: int = 16
  ssft_epochs: int = 5  # Second-split phase; 0: no SSFT score.
  seed: int = 0
  dataset: str = "auto"
  data_dir: Optional[str] = None
  train_size: int = 0  # 0: the whole split.
  test_size: int = 0
  removal_fractions: str = DEFAULT_FRACTIONS
  removal_models: int = 4  # 0: no removal ablation.
  trajectory_runs: int = 4  # Runs with per-epoch checkpoints; -1: all.
  precision: str = "float32"
  progress: bool = True
  engine: str = "local"  # 'local' or 'ray' (one Ray task per block).
  ray_address: Optional[str] = None  # None: Ray on this machine only.


def validate(options: Options) -> Options:
  """Checks every value (`errors.UsageError` naming the flag)."""
  def need(ok, flag, what):
    if not ok:
      raise errors.UsageError(f"--{flag} must be {what}, got "
                              f"{getattr(options, flag)!r}")
  need(options.num_runs >= 2, "num_runs", ">= 2")
  need(0.0 < options.ratio < 1.0, "ratio", "in (0, 1)")
  need(options.epochs >= 1, "epochs", ">= 1")
  need(options.batch_size >= 1, "batch_size", ">= 1")
  need(np.isfinite(options.learning_rate) and options.learning_rate > 0,
       "learning_rate", "a positive number")
  need(options.group_size >= 1, "group_size", ">= 1")
  need(options.ssft_epochs >= 0, "ssft_epochs", ">= 0")
  need(options.seed >= 0, "seed", ">= 0")
  need(options.dataset in data_lib.DATASETS, "dataset",
       f"one of {data_lib.DATASETS}")
  need(options.train_size >= 0, "train_size", ">= 0")
  need(options.test_size >= 0, "test_size", ">= 0")
  need(options.removal_models >= 0, "removal_models", ">= 0")
  need(options.trajectory_runs >= -1, "trajectory_runs", ">= -1")
  need(options.engine in ("local", "ray"), "engine", "local or ray")
  need(options.ray_address is None or options.engine == "ray",
       "ray_address", "unset without --engine ray")
  detection.parse_fractions(options.removal_fractions)
  noise_lib.parse(options.noise)
  if options.precision not in ("auto",) + hardware.PRECISIONS:
    raise errors.UsageError(f"--precision must be auto or one of "
                            f"{hardware.PRECISIONS}, got "
                            f"{options.precision!r}")
  return options


def train_config(options: Options, ratio=None, seed=None):
  from heldout_tf import training  # pylint: disable=g-import-not-at-top
  precision = hardware.resolve_precision(options.precision).name
  return training.TrainConfig(
      ratio=options.ratio if ratio is None else ratio, epochs=options.epochs,
      batch_size=options.batch_size, learning_rate=options.learning_rate,
      seed=options.seed if seed is None else seed,
      num_classes=data_lib.NUM_CLASSES, precision=precision)


def load_data(options: Options):
  """`(data, by_kind)`: the dataset (first train/test sizes) with
  `options.noise` applied, and the indices each noise kind touched."""
  specs = noise_lib.parse(options.noise)
  data = data_lib.first_examples(
      data_lib.load(options.dataset, options.data_dir), options.train_size,
      options.test_size)
  return noise_lib.apply_to(data, specs, options.seed)


def collection_config(options: Options, config, data) -> dict:
  """What every run (and its signals) of the collection depends on."""
  recorded = dataclasses.asdict(config)
  recorded["hidden"] = list(recorded["hidden"])
  recorded.update(
      dataset=data.name, noise=noise_lib.describe(
          noise_lib.parse(options.noise)),
      group_size=options.group_size, ssft_epochs=options.ssft_epochs,
      train_size=len(data.train_labels), test_size=len(data.test_labels),
      data_fingerprint=runstore.fingerprint(data.train_labels, data.test_labels,
                                    data.train_images[:64],
                                    data.train_images[data.noisy_idx[:64]]),
      signals=signals_lib.FORMAT_VERSION)
  return recorded


# ---------------------------------------------------------------- training --


def is_done(store: runstore.RunStore, run: int) -> bool:
  """Finished for this pipeline: aux arrays, checkpoint and signals."""
  return (store.is_finished(run, need_checkpoint=True) and
          os.path.isfile(signals_lib.signals_path(store.run_dir(run))))


def _complements(subsets, n):
  return np.stack([np.setdiff1d(np.arange(n), s) for s in subsets])


def train_block(store, trainer, runs: Sequence[int], options: Options,
                data, module, evaluator=None) -> List[int]:
  """Trains the canonical block holding `runs` with signals recorded
  (`runstore.train_block` with this pipeline's hooks) and writes the runs of
  `runs` not yet done: trajectory checkpoints, checkpoint, aux arrays, then
  signals.npz. Returns the runs written."""
  from heldout_tf import checkpoints  # pylint: disable=g-import-not-at-top
  from heldout_tf import training  # pylint: disable=g-import-not-at-top
  todo = [r for r in runs if not is_done(store, r)]
  if not todo:
    return []
  config = trainer.config
  members = runstore.block_runs(todo[0] // options.group_size,
                                options.group_size)
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
        training.set_params(module, [p[g] for p in params])
        checkpoints.save(module, os.path.join(store.run_dir(run),
                                              TRAJECTORY_DIRNAME),
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

  return runstore.train_block(
      store, trainer, todo, options.group_size,
      train_images=data.train_images, train_labels=data.train_labels,
      test_images=data.test_images, test_labels=data.test_labels,
      evaluator=evaluator, is_done=lambda r: is_done(store, r),
      on_epoch_end=on_epoch_end, after_training=second_split,
      after_write=save_signals)


def train_stage(options: Options, data, store) -> dict:
  """Trains (with signals) every run of 0..num_runs-1 not done yet."""
  config = train_config(options)
  store.record_config(collection_config(options, config, data))
  todo = [r for r in range(options.num_runs) if not is_done(store, r)]
  print(f"Data: {data.description}.\nRuns: {len(todo)} of "
        f"{options.num_runs} to train (with signals, "
        f"{options.ssft_epochs} second-split epochs) under {store.path}",
        flush=True)
  if not todo:
    return {"trained": 0, "seconds": 0.0}
  if options.engine == "ray":
    return _train_on_ray(options, config, data, store)
  trainer, module, evaluator = _block_tools(config, data)
  start = time.perf_counter()
  with progress_lib.bar(len(todo), "training", "run",
                        enabled=options.progress) as bar:
    for runs in runstore.groups(todo, options.group_size):
      with errors.user_path(store.path, "write"):
        written = train_block(store, trainer, runs, options, data, module,
                              evaluator)
      bar.update(len(written))
  seconds = time.perf_counter() - start
  print(f"Trained {len(todo)} runs in {seconds:.0f} s.", flush=True)
  return {"trained": len(todo), "seconds": seconds}


def _block_tools(config, data):
  """`(trainer, module, evaluator)` that `train_block` works with."""
  from heldout_tf import training  # pylint: disable=g-import-not-at-top
  trainer = training.EnsembleTrainer(data.train_images, data.train_labels,
                                     config)
  module = training.build_module(
      config, training.init_params(config, 0, trainer.input_dim),
      trainer.input_dim)
  return trainer, module, runstore.float32_evaluator(
      trainer, data.train_images, data.train_labels)


def ray_block_inputs(options: Options, fingerprint: str):
  """What a Ray worker trains blocks with: the driver's data (checked by
  its fingerprint) and this pipeline's `train_block`. Top level: Ray ships
  it by reference."""
  from heldout_tf import ray_engine  # pylint: disable=g-import-not-at-top
  data, _ = load_data(options)
  config = train_config(options)
  if collection_config(options, config, data)["data_fingerprint"] != (
      fingerprint):
    raise errors.ConfigError(
        f"a Ray worker loaded other {data.name} data than the driver: "
        "every node needs the same --data_dir contents")
  trainer, module, evaluator = _block_tools(config, data)
  return ray_engine.BlockInputs(
      trainer, data.train_images, data.train_labels, data.test_images,
      data.test_labels, evaluator=evaluator,
      train_block=lambda store, runs: train_block(
          store, trainer, runs, options, data, module, evaluator))


def _train_on_ray(options: Options, config, data, store) -> dict:
  from heldout_tf import ray_engine  # pylint: disable=g-import-not-at-top
  worker_options = dataclasses.replace(options, dataset=data.name,
                                       precision=config.precision)
  spec = ray_engine.TrainSpec(
      options.out, EXPERIMENT, options.ratio, options.group_size,
      ray_block_inputs,
      (worker_options,
       collection_config(options, config, data)["data_fingerprint"]),
      is_done=is_done)
  report = ray_engine.train_on_ray(spec, range(options.num_runs),
                                   address=options.ray_address,
                                   progress=options.progress)
  print(f"Trained {report['trained']} runs on Ray in "
        f"{report['seconds']:.0f} s ({report['tasks']} tasks).", flush=True)
  return {"trained": report["trained"], "seconds": report["seconds"]}


# ----------------------------------------------------------------- scoring --


def score_stage(options: Options, data, store) -> scores_lib.Scores:
  n = len(data.train_labels)
  runs = estimates.load_runs_from(
      [store.run_dir(r) for r in range(options.num_runs)],
      experiment=EXPERIMENT, progress=options.progress)
  if runs.n_train != n:
    raise runs_lib.AuxArraysError(
        f"{store.path}: the runs cover {runs.n_train} training examples, "
        f"the data has {n}")
  totals = signals_lib.load_totals(
      [signals_lib.signals_path(store.run_dir(r))
       for r in range(options.num_runs)], n, data_lib.NUM_CLASSES,
      progress=options.progress)
  names = scores_lib.SCORES
  if not options.ssft_epochs:
    names = tuple(s for s in names if s != "ssft")
  return scores_lib.compute(runs.mask, runs.correct_train, totals,
                           data.train_labels, names)


# ----------------------------------------------------------------- removal --


def removal_stage(options: Options, data, values: Dict[str, np.ndarray]
                  ) -> List[dict]:
  """Retrains `removal_models` models without each removal set (and with
  nothing removed); rows of `detection.REMOVAL_COLUMNS`."""
  from heldout_tf import training  # pylint: disable=g-import-not-at-top
  if not options.removal_models:
    return []
  n = len(data.train_labels)
  fractions = detection.parse_fractions(options.removal_fractions)
  removals = [detection.Removal(detection.NO_REMOVAL, 0.0,
                                np.zeros([0], np.int64))]
  removals += detection.removal_sets(values, fractions, options.seed)
  # Seed + 1: the retrained models' shuffles and inits are independent of
  # the scored runs'.
  config = train_config(options, ratio=1.0, seed=options.seed + 1)
  trainer = training.EnsembleTrainer(data.train_images, data.train_labels,
                                     config)
  models_per = options.removal_models
  accuracies = [None] * len(removals)
  by_size = {}
  for k, removal in enumerate(removals):
    by_size.setdefault(len(removal.removed), []).append(k)
  with progress_lib.bar(len(removals) * models_per, "removal ablation",
                        "model", enabled=options.progress) as bar:
    for ks in by_size.values():
      # One group per removed count; at most group_size models per step.
      jobs = [(k, m) for k in ks for m in range(models_per)]
      for first in range(0, len(jobs), options.group_size):
        chunk = jobs[first:first + options.group_size]
        runs = [k * models_per + m for k, m in chunk]
        subsets = np.stack([detection.kept(n, removals[k]) for k, _ in chunk])
        result = trainer.train(runs, subsets=subsets)
        correct = trainer.predict(result, data.test_images) == (
            data.test_labels[None])
        for (k, m), acc in zip(chunk, correct.mean(axis=1)):
          if accuracies[k] is None:
            accuracies[k] = np.zeros(models_per)
          accuracies[k][m] = acc
        bar.update(len(chunk))
  return detection.removal_rows(removals, accuracies, data.noisy_idx)


# ------------------------------------------------------------------ output --


def write_csv(path: str, rows: Sequence[dict], columns: Sequence[str]):
  def write(f):
    writer = csv.DictWriter(f, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for row in rows:
      writer.writerow({c: (f"{row[c]:.6g}" if isinstance(row[c], float)
                           else row[c]) for c in columns})
  files.atomic_write(path, write, mode="w")


def scores_arrays(scores: scores_lib.Scores, data, by_kind,
                  specs) -> dict:
  """What `scores.npz` holds: every score, `<score>_se`, `num_nan_<score>`,
  `noisy_idx`, `noisy_idx_<kind>` per noise kind, `labels` (trained with),
  `clean_labels` and the `noise` spec string."""
  arrays = scores.arrays()
  arrays.update(noisy_idx=data.noisy_idx, labels=data.train_labels,
                clean_labels=data.clean_train_labels,
                noise=np.array(noise_lib.describe(specs)))
  arrays.update({f"noisy_idx_{k}": v for k, v in by_kind.items()})
  return arrays


def run(options: Options) -> dict:
  """Trains (or reuses) the runs, scores, evaluates; writes `quality/`."""
  validate(options)
  from mnist_example import quality_figures  # pylint: disable=g-import-not-at-top
  specs = noise_lib.parse(options.noise)
  data, by_kind = load_data(options)
  store = runstore.RunStore(options.out, EXPERIMENT, options.ratio)
  out = {"train": train_stage(options, data, store)}
  store.check_complete(options.num_runs, hint="Re-run the same command.")
  scores = score_stage(options, data, store)
  directory = os.path.join(store.path, QUALITY_DIRNAME)
  with errors.user_path(directory, "write"):
    os.makedirs(directory, exist_ok=True)
  paths = {"scores": os.path.join(directory, SCORES_FILENAME),
           "detection": os.path.join(directory, DETECTION_FILENAME),
           "removal": os.path.join(directory, REMOVAL_FILENAME)}
  arrays = scores_arrays(scores, data, by_kind, specs)
  files.save_npz(paths["scores"], **arrays)
  table = detection.detection_table(scores.values, data.noisy_idx)
  write_csv(paths["detection"], table, detection.DETECTION_COLUMNS)
  start = time.perf_counter()
  removal = removal_stage(options, data, scores.values)
  out["removal_seconds"] = time.perf_counter() - start
  write_csv(paths["removal"], removal, detection.REMOVAL_COLUMNS)
  paths["figures"] = quality_figures.write_all(directory, data,
                                               scores.values, removal)
  undefined = ", ".join(f"{k} {v}" for k, v in scores.num_nan().items()
                        if v) or "none"
  print(f"\n{len(data.noisy_idx)} noisy of {len(data.train_labels)} training "
        f"examples ({noise_lib.describe(specs) or 'no noise'}); "
        f"{options.num_runs} runs. Undefined (NaN) scores: {undefined}.")
  print(detection.format_table(table, detection.DETECTION_COLUMNS))
  if removal:
    print("\nRemoval ablation (clean test accuracy of "
          f"{options.removal_models} retrained models):")
    print(detection.format_table(removal, detection.REMOVAL_COLUMNS))
  print("\nWrote " + ", ".join(
      [paths["scores"], paths["detection"], paths["removal"]] +
      paths["figures"]))
  out.update(scores=scores, detection=table, removal=removal, paths=paths)
  return out


# --------------------------------------------------------------------- CLI --


def parse_args(argv=None) -> Options:
  """Flags -> `Options` (argparse; defined only when called)."""
  d = Options()
  p = argparse.ArgumentParser(
      prog="python -m mnist_example.quality",
      description="Compare data-quality scores on runs with known noise.")
  p.add_argument("--noise", action="append", default=None,
                 help=f"kind:fraction[@intensity], kinds "
                 f"{', '.join(noise_lib.KINDS)}; repeat or comma-separate "
                 f"to combine (default {d.noise}; 'label:0' for none)")
  for name, kind, text in [
      ("num_runs", int, "held-out runs to train"),
      ("ratio", float, "fraction of the training set each run trains on"),
      ("epochs", int, "training epochs per run"),
      ("batch_size", int, "batch size"),
      ("learning_rate", float, "SGD learning rate (momentum 0.9)"),
      ("group_size", int, "models per training step (recorded: a "
       "collection keeps its group size)"),
      ("ssft_epochs", int, "second-split epochs on each run's held-out "
       "complement (0: no ssft score)"),
      ("seed", int, "seed of subsets, shuffles, inits and noise"),
      ("out", str, "output root"),
      ("dataset", str, f"one of {', '.join(data_lib.DATASETS)}"),
      ("data_dir", str, "tfds data directory holding mnist"),
      ("train_size", int, "use only the first N training examples (0: all)"),
      ("test_size", int, "use only the first N test examples (0: all)"),
      ("removal_fractions", str, "fractions removed in the ablation"),
      ("removal_models", int, "models retrained per removal (0: none)"),
      ("trajectory_runs", int, "runs that keep per-epoch checkpoints "
       "(-1: all)"),
      ("precision", str, "auto, float32 or bfloat16")]:
    p.add_argument(f"--{name}", type=kind, default=getattr(d, name),
                   help=f"{text} (default {getattr(d, name)})")
  p.add_argument("--no_progress", "--noprogress", action="store_true",
                 help="no progress bars")
  p.add_argument("--engine", choices=("local", "ray"), default=d.engine,
                 help="'ray': one Ray task per block of runs (identical "
                 "results; --out must be storage every node sees)")
  p.add_argument("--ray_address", default=d.ray_address,
                 help="--engine ray: the cluster to join (HEAD:6379 or "
                 "'auto'); unset: a Ray instance on this machine only")
  args = p.parse_args(argv)
  values = {f.name: getattr(args, f.name) for f in dataclasses.fields(Options)
            if f.name not in ("noise", "progress")}
  return Options(noise=",".join(args.noise) if args.noise else d.noise,
                 progress=not args.no_progress, **values)


def main(argv=None):
  options = validate(parse_args(argv))  # Bad flags fail before any work.
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  # The ablation trains groups of several subset sizes: retracing is
  # expected, TensorFlow's warning about it is noise here.
  tf.get_logger().setLevel("ERROR")
  run(options)


if __name__ == "__main__":
  cli.run(main)
