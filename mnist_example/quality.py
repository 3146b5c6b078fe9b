r"""Which MNIST examples are noisy? Seven scores on the same runs, one command.

Makes a training set with known noise (`heldout_tf.noise`), trains a
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

Layout (`--root`, default ./heldout_quality):

  <root>/mnist-mlp/<ratio>/config.json           the collection's settings
  <root>/mnist-mlp/<ratio>/<run>/aux_arrays.npz  the released layout ...
  <root>/mnist-mlp/<ratio>/<run>/checkpoints/ckpt-<epochs>
  <root>/mnist-mlp/<ratio>/<run>/signals.npz     per-example signal sums
  <root>/mnist-mlp/<ratio>/<run>/trajectory/ckpt-<epoch>   (first
                                     --trajectory_runs runs; every epoch)
  <root>/mnist-mlp/<ratio>/quality/  scores.npz, detection.csv, removal.csv,
                                     roc.png, precision_at_k.png,
                                     removal.png, top_suspicious.png,
                                     manifest.json (written last)

Runs are made by `heldout_tf.collection.train` in the collection's canonical
blocks (`--engine ray` as for `mnist_example.train`); a run is finished for
this pipeline once it has its aux arrays, checkpoint and signals.npz, so an
interrupted job resumes where it stopped and a re-run only re-scores.
`--precision auto` and `--group_size 0` take the recorded values. The
outputs of `quality/` belong together only when `manifest.json` lists them:
a re-run removes the previous outputs and manifest before it writes.
"""

import dataclasses
import os
import time
from typing import Dict, List, Optional, Sequence

import numpy as np

from heldout_tf import cli
from heldout_tf import collection
from heldout_tf import detection
from heldout_tf import errors
from heldout_tf import files
from heldout_tf import layout
from heldout_tf import noise as noise_lib
from heldout_tf import progress as progress_lib
from heldout_tf import quality_scores
from heldout_tf import runs as runs_lib
from heldout_tf.collection import options as options_lib
from mnist_example import common
from mnist_example import data as data_lib
from mnist_example import quality_figures

EXPERIMENT = common.EXPERIMENT
DEFAULT_FRACTIONS = "0.01,0.02,0.05,0.1,0.2"
OUTPUT_FILENAMES = (layout.SCORES_FILENAME, layout.DETECTION_FILENAME,
                    layout.REMOVAL_FILENAME, layout.REPORT_FILENAME
                    ) + quality_figures.FILENAMES


@dataclasses.dataclass(frozen=True)
class Options(common.MnistOptions):
  """Everything the pipeline needs (the flags, as a value)."""
  root: str = "./heldout_quality"
  num_runs: int = 128
  group_size: int = 16
  precision: str = "float32"
  noise: str = "label:0.1"
  ssft_epochs: int = 5  # Second-split phase; 0: no SSFT score.
  removal_fractions: str = DEFAULT_FRACTIONS
  removal_models: int = 4  # 0: no removal ablation.
  trajectory_runs: int = 4  # Runs with per-epoch checkpoints; -1: all.

  def check(self):
    super().check()
    need = options_lib.need
    need(self.num_runs >= 2, "num_runs", "must be >= 2", self.num_runs)
    need(self.ratio < 1.0, "ratio", "must be in (0, 1): runs must hold "
         "examples out", self.ratio)
    need(self.ssft_epochs >= 0, "ssft_epochs", "must be >= 0",
         self.ssft_epochs)
    need(self.removal_models >= 0, "removal_models", "must be >= 0",
         self.removal_models)
    need(self.trajectory_runs >= -1, "trajectory_runs", "must be >= -1",
         self.trajectory_runs)
    detection.parse_fractions(self.removal_fractions)
    noise_lib.parse(self.noise)


# --------------------------------------------------------------------- CLI --


def build_parser() -> cli.Parser:
  """The command line (no TensorFlow imported)."""
  d = Options()
  parser = cli.Parser("python -m mnist_example.quality", __doc__)
  parser.add_argument(
      "--noise", action="append", default=None, metavar="KIND:FRACTION",
      help=f"kind:fraction[@intensity], kinds {', '.join(noise_lib.KINDS)}; "
      f"repeat or comma-separate to combine ('label:0' for none; default "
      f"{d.noise}).")
  options_lib.add_flags(
      parser, d, what="the training (one task per block of runs)",
      sharding=False)
  common.add_data_flags(parser, d)
  for name, text in [
      ("ssft_epochs", "Second-split epochs on each run's held-out "
       "complement (0: no ssft score)."),
      ("removal_models", "Models retrained per removal (0: no ablation)."),
      ("trajectory_runs", "Runs that keep per-epoch checkpoints (-1: all).")]:
    parser.add_argument(f"--{name}", type=int, default=getattr(d, name),
                        help=text)
  parser.add_argument("--removal_fractions", default=d.removal_fractions,
                      help="Fractions of the training set removed in the "
                      "ablation, comma-separated.")
  return parser


def parse_args(argv: Optional[Sequence[str]] = None) -> Options:
  """Flags -> checked `Options` (`errors.UsageError` naming a bad flag)."""
  args = build_parser().parse_args(argv)
  noise = ",".join(args.noise) if args.noise else Options.noise
  return options_lib.from_args(Options, args, noise=noise)


def main(argv: Optional[Sequence[str]] = None):
  options = parse_args(argv)  # Bad flags fail before any work.
  cli.quiet_tensorflow()
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  # The ablation trains groups of several subset sizes: retracing is
  # expected, TensorFlow's warning about it is noise here.
  tf.get_logger().setLevel("ERROR")
  run(options)


# -------------------------------------------------------------------- data --


def load_data(options: Options):
  """`(data, by_kind)`: the dataset (first train/test sizes) with
  `options.noise` applied, and the indices each noise kind touched."""
  specs = noise_lib.parse(options.noise)
  data = data_lib.first_examples(
      data_lib.load(options.dataset, options.data_dir), options.train_size,
      options.test_size)
  return noise_lib.apply_to(data, specs, options.seed)


def data_fingerprint(data) -> str:
  """A short hash of the labels, first and noisy images: same data or not."""
  return collection.fingerprint(data.train_labels, data.test_labels,
                                data.train_images[:64],
                                data.train_images[data.noisy_idx[:64]])


def check_sizes(options: Options, n: int):
  """`errors.UsageError` naming the flag when the data is too small for
  the runs or the ablation (before any training)."""
  subset = max(1, int(round(options.ratio * n)))
  if subset >= n:
    flag = (f"--train_size {options.train_size}: at --ratio {options.ratio}"
            if options.train_size else f"--ratio {options.ratio}:")
    raise errors.UsageError(
        f"{flag} each run would train on all {n} examples and hold none "
        "out; use more training examples or a smaller --ratio")
  if options.removal_models:
    for fraction in detection.parse_fractions(options.removal_fractions):
      if n - int(round(fraction * n)) < 1:
        raise errors.UsageError(
            f"--removal_fractions {options.removal_fractions}: removing "
            f"{fraction:g} of the {n} training examples keeps none")


# ---------------------------------------------------------------- training --


def train_stage(options: Options, data, store) -> dict:
  """Trains (with signals) every run of 0..num_runs-1 not done yet."""
  # pylint: disable=g-import-not-at-top
  from heldout_tf import signals as signals_lib
  from heldout_tf import training
  from mnist_example import blocks
  # pylint: enable=g-import-not-at-top
  recorded = store.recorded_config()
  precision = collection.resolve_precision(options.precision, recorded)
  config = common.train_config(options, precision.name)
  group_size, _ = collection.resolve_group_size(
      options.group_size, recorded, num_runs=options.num_runs,
      choose=lambda: training.auto_group_size(config))
  spec = collection.Spec(
      options.root, EXPERIMENT, options.ratio, group_size,
      blocks.QualityBlocks,
      (dataclasses.replace(options, dataset=data.name), precision.name,
       group_size, data_fingerprint(data)),
      config=common.recorded_config(
          config, group_size, data,
          noise=noise_lib.describe(noise_lib.parse(options.noise)),
          ssft_epochs=options.ssft_epochs,
          data_fingerprint=data_fingerprint(data),
          signals=signals_lib.FORMAT_VERSION))
  trainer = spec.factory(*spec.factory_args, data=data)  # Loaded already.
  _, todo, _ = collection.plan(spec, range(options.num_runs), trainer)
  print(f"Data: {data.description}.\nRuns: {len(todo)} of "
        f"{options.num_runs} to train (with signals, "
        f"{options.ssft_epochs} second-split epochs; precision "
        f"{precision.name}, blocks of {group_size}) under {store.path}",
        flush=True)
  report = collection.train(spec, range(options.num_runs),
                            engine=options.engine,
                            address=options.ray_address,
                            progress=options.progress, trainer=trainer)
  if report["trained"]:
    where = " on Ray" if options.engine == "ray" else ""
    print(f"Trained {report['trained']} runs{where} in "
          f"{report['seconds']:.0f} s.", flush=True)
  return dict(report, group_size=group_size, precision=precision.name)


# ----------------------------------------------------------------- scoring --


def score_stage(options: Options, data, store):
  """The `heldout_tf.scores.Scores` of runs 0..num_runs-1 and their
  signals."""
  # pylint: disable=g-import-not-at-top
  from heldout_tf import estimates
  from heldout_tf import scores as scores_lib
  from heldout_tf import signals as signals_lib
  # pylint: enable=g-import-not-at-top
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


def removal_stage(options: Options, data, values: Dict[str, np.ndarray],
                  group_size: int, precision: str = "float32"
                  ) -> List[dict]:
  """Retrains `removal_models` models without each removal set (and with
  nothing removed), `group_size` at a time; rows of
  `detection.REMOVAL_COLUMNS`."""
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
  config = common.train_config(options, precision, ratio=1.0,
                              seed=options.seed + 1)
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
      for first in range(0, len(jobs), group_size):
        chunk = jobs[first:first + group_size]
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


def scores_arrays(scores, data, by_kind,
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
  options.check()
  specs = noise_lib.parse(options.noise)
  data, by_kind = load_data(options)
  check_sizes(options, len(data.train_labels))
  store = collection.Store(options.root, EXPERIMENT, options.ratio)
  out = {"train": train_stage(options, data, store)}
  store.check_complete(options.num_runs, hint="Re-run the same command.")
  directory = os.path.join(store.path, layout.QUALITY_DIRNAME)
  quality_scores.clear_outputs(directory, OUTPUT_FILENAMES)
  scores = score_stage(options, data, store)
  paths = {"scores": os.path.join(directory, layout.SCORES_FILENAME),
           "detection": os.path.join(directory, layout.DETECTION_FILENAME),
           "removal": os.path.join(directory, layout.REMOVAL_FILENAME)}
  arrays = scores_arrays(scores, data, by_kind, specs)
  files.save_npz(paths["scores"], **arrays)
  table = detection.detection_table(scores.values, data.noisy_idx)
  quality_scores.write_csv(paths["detection"], table,
                           detection.DETECTION_COLUMNS)
  start = time.perf_counter()
  removal = removal_stage(options, data, scores.values,
                          out["train"]["group_size"],
                          out["train"]["precision"])
  out["removal_seconds"] = time.perf_counter() - start
  quality_scores.write_csv(paths["removal"], removal,
                           detection.REMOVAL_COLUMNS)
  paths["figures"] = quality_figures.write_all(directory, data,
                                               scores.values, removal)
  paths["report"] = common.write_report(options, EXPERIMENT, directory, data,
                                       scores_path=paths["scores"])
  paths["manifest"] = os.path.join(directory, layout.MANIFEST_FILENAME)
  quality_scores.write_manifest(
      directory, [paths["scores"], paths["detection"], paths["removal"],
                  paths["report"]] + paths["figures"],
      dataclasses.asdict(options))
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
      paths["figures"] + [paths["report"], paths["manifest"]]))
  out.update(scores=scores, detection=table, removal=removal, paths=paths)
  return out


if __name__ == "__main__":
  cli.run(main)
