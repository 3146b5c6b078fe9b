r"""Reproduces the held-out method on MNIST, end to end, on one machine.

Trains many MLPs (784-512-256-10), each on its own random subset of the
training set, records each model's correctness on every train and test
example in the released layout

  <root>/mnist-mlp/<ratio>/<run>/aux_arrays.npz
  <root>/mnist-mlp/<ratio>/<run>/checkpoints/ckpt-<epochs>.{index,data-*}

then estimates memorization and influence (`heldout_tf.estimates`) and draws
the most / least memorized examples and the top high-influence pairs, next to
the runs in `<root>/mnist-mlp/<ratio>/` (estimates.npz, the pairs file,
figures/), so runs at several ratios under one --root keep their own results.

  python -m mnist_example.train                   # 3-4 min on 2 CPU cores
  python -m mnist_example.train --preset paper --data_dir ~/tensorflow_datasets
  python -m mnist_example.train --label_noise 0.1 --root /tmp/noisy
  python -m mnist_example.train --stage train --shard 0/2 --group_size 32
  python -m mnist_example.train --stage estimate

The collection under `<root>/mnist-mlp/<ratio>` is made by
`heldout_tf.collection.train`: its config.json records every setting a run's
bits depend on, the group size G and the precision included. Runs are
trained in canonical blocks of G, so each run's arrays are the same whether
it was trained in one job, in shards (`--shard i/n` takes whole blocks), on
Ray or resumed after a kill. `--group_size 0` and `--precision auto` take
the recorded values when the collection exists; other values than the
recorded ones are refused. Runs do not depend on `--num_runs`: raising it
trains only the new runs; `--stage estimate` uses exactly runs
0..num_runs-1 and refuses others.

The entry point hides TensorFlow's C++ start-up lines and, unless set, sets
TF_ENABLE_ONEDNN_OPTS=1: TF turns oneDNN on by itself on CPUs with AVX-512
(no change there), not on AVX2-only CPUs, where it was measured to about
double matmul throughput. Importing this module sets nothing and imports no
TensorFlow.
"""

import dataclasses
import os
from typing import Optional, Sequence

import numpy as np

from heldout_tf import cli
from heldout_tf import collection
from heldout_tf.core import errors
from heldout_tf.collection import layout
from heldout_tf.collection import options as options_lib
from mnist_example import common
from mnist_example import data as data_lib

EXPERIMENT = common.EXPERIMENT
STAGES = ("train", "estimate", "all")
PRESETS = ("paper",)


@dataclasses.dataclass(frozen=True)
class Options(common.MnistOptions):
  """Everything the pipeline needs (the flags, as a value)."""
  download: bool = False
  label_noise: float = 0.0
  stage: str = "all"
  infl_threshold: float = 0.15
  mem_threshold: float = 0.25

  def check(self):
    super().check()
    need = options_lib.need
    need(self.stage in STAGES, "stage", f"must be one of {STAGES}",
         self.stage)
    need(options_lib.is_number(self.label_noise)
         and 0.0 <= self.label_noise < 1.0, "label_noise",
         "must be in [0, 1)", self.label_noise)
    for name in ("infl_threshold", "mem_threshold"):
      need(options_lib.is_number(getattr(self, name)), name,
           "must be a finite number", getattr(self, name))


# --------------------------------------------------------------------- CLI --


def build_parser() -> cli.Parser:
  """The command line (no TensorFlow imported)."""
  d = Options()
  parser = cli.Parser("python -m mnist_example.train", __doc__)
  options_lib.add_flags(
      parser, d, what="the training (one task per block of runs)")
  common.add_data_flags(parser, d)
  cli.add_bool(parser, "download", d.download,
               "Let tfds download MNIST (network).")
  parser.add_argument("--label_noise", type=float, default=d.label_noise,
                      help="Fraction of training labels to flip (seeded); "
                      "their indices are saved as noisy_idx.")
  parser.add_argument("--stage", choices=STAGES, default=d.stage,
                      help="What to run.")
  parser.add_argument("--preset", choices=PRESETS, default=None,
                      help="'paper': the reference setup (2000 runs, ratio "
                      "0.7, 10 epochs, batch 128, lr 0.1, tfds MNIST); "
                      "explicit flags still override it.")
  parser.add_argument("--infl_threshold", type=float,
                      default=d.infl_threshold,
                      help="High-influence pairs threshold.")
  parser.add_argument("--mem_threshold", type=float, default=d.mem_threshold,
                      help="Memorization threshold of the pairs' training "
                      "examples.")
  return parser


def parse_args(argv: Optional[Sequence[str]] = None) -> Options:
  """Flags -> checked `Options` (`errors.UsageError` naming a bad flag;
  the parser itself exits 2 on an unknown flag or a malformed value)."""
  parser = build_parser()
  args = parser.parse_args(argv)
  if args.preset == "paper":  # Explicit flags still win: parse again.
    parser.set_defaults(**common.PAPER_PRESET)
    args = parser.parse_args(argv)
  return options_lib.from_args(Options, args)


def main(argv: Optional[Sequence[str]] = None):
  options = parse_args(argv)  # --help and bad flags: no TensorFlow.
  os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # Read at TF import.
  cli.quiet_tensorflow()
  run(options)


# -------------------------------------------------------------------- data --


def load_data(options: Options, dataset=None) -> data_lib.MnistData:
  """The data of `options` (`dataset` overrides `options.dataset`), cut to
  --train_size / --test_size (`errors.UsageError` if larger than the data)."""
  data = data_lib.load(dataset or options.dataset, options.data_dir,
                       options.download, options.label_noise, options.seed)
  return data_lib.first_examples(data, options.train_size, options.test_size)


def data_fingerprint(data: data_lib.MnistData) -> str:
  """A short hash of the labels and the first images: same data or not."""
  return collection.fingerprint(data.train_labels, data.test_labels,
                                data.train_images[:64])


# ------------------------------------------------------------------- train --


def store_for(options: Options) -> collection.Store:
  return collection.Store(options.root, EXPERIMENT, options.ratio)


def train_stage(options: Options, data: data_lib.MnistData) -> dict:
  """Trains this shard's unfinished runs (`collection.train`)."""
  # pylint: disable=g-import-not-at-top
  from heldout_tf.training import ensemble
  from mnist_example import blocks
  # pylint: enable=g-import-not-at-top
  store = store_for(options)
  recorded = store.recorded_config()
  precision = collection.resolve_precision(options.precision, recorded)
  config = common.train_config(options, precision.name)
  group_size, why = collection.resolve_group_size(
      options.group_size, recorded, num_runs=options.num_runs,
      shard=options.shard, choose=lambda: ensemble.auto_group_size(config))
  fingerprint = data_fingerprint(data)
  spec = collection.Spec(
      options.root, EXPERIMENT, options.ratio, group_size, blocks.TrainBlocks,
      (dataclasses.replace(options, dataset=data.name), precision.name,
       group_size, fingerprint),
      config=common.recorded_config(
          config, group_size, data, label_noise=options.label_noise,
          data_fingerprint=fingerprint))
  mine = collection.shard_runs(options.num_runs, options.shard, group_size)
  trainer = spec.factory(*spec.factory_args, data=data)  # Loaded already.
  _, todo, todo_blocks = collection.plan(spec, mine, trainer)
  which = (f"shard {options.shard}'s {len(mine)}"
           if collection.is_sharded(options.shard) else f"the {len(mine)}")
  print(f"Data: {data.description}.\nPrecision: {precision.name} "
        f"({precision.reason}).\nTraining: {len(todo)} of {which} runs left "
        f"({len(mine) - len(todo)} already finished), in "
        f"{len(todo_blocks)} block(s) of "
        f"{group_size} models (group size {why}).", flush=True)
  report = collection.train(spec, mine, engine=options.engine,
                            address=options.ray_address,
                            progress=options.progress, trainer=trainer)
  if report["trained"]:
    seconds = report["seconds"]
    where = " on Ray" if options.engine == "ray" else ""
    print(f"Trained {report['trained']} runs{where} in {seconds:.0f} s "
          f"({3600 * report['trained'] / seconds:.0f} models/hour) under "
          f"{store.path}", flush=True)
  return dict(report, group_size=group_size, precision=precision.name)


# ---------------------------------------------------------------- estimate --

_RECORDED_KEYS = ("label_noise", "seed", "train_size", "test_size",
                  "dataset", "data_fingerprint")
_FINISH_HINT = ("Finish them with --stage train (each --shard i/n again, same "
                "flags), then run --stage estimate.")


def estimate_stage(options: Options,
                   data: Optional[data_lib.MnistData] = None) -> dict:
  """Estimates memorization and influence and draws the figures.

  Needs runs 0..num_runs-1 finished and no others. `data`: the runs' data if
  already loaded (stage 'all'); else loaded as the runs' config says.
  """
  # pylint: disable=g-import-not-at-top
  from heldout_tf.quality import detection
  from heldout_tf import estimates
  from mnist_example import figures  # Matplotlib only here.
  # pylint: enable=g-import-not-at-top
  store = store_for(options)
  config = store.require_config()
  missing = [k for k in _RECORDED_KEYS if k not in config]
  if missing:
    raise errors.ConfigError(
        f"{store.config_path}: not a mnist_example.train collection (no "
        f"{', '.join(missing)}); was it made by another pipeline (e.g. "
        "mnist_example.quality)? Use that pipeline or another --root")
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
  runs = estimates.load_runs(options.root, EXPERIMENT, [options.ratio],
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
  paths = {"estimates": os.path.join(root, layout.ESTIMATES_FILENAME),
           "pairs": os.path.join(root, layout.pairs_filename(
               "mnist", options.infl_threshold, options.mem_threshold))}
  mem = np.nan_to_num(result["memorization"], nan=0.0)
  with errors.user_path(root, "write"):
    estimates.save_estimates(paths["estimates"], result)
    estimates.save_pairs(paths["pairs"], result)
    paths["figures"] = figures.write_all(
        os.path.join(root, layout.FIGURES_DIRNAME), data, mem, result)
  paths["report"] = common.write_report(
      options, EXPERIMENT, root, data, estimates_path=paths["estimates"])
  print(estimates.summary(result))
  if len(data.noisy_idx):
    auc = detection.metrics(mem, data.noisy_idx)["auc"]
    print(f"label noise sanity check: {len(data.noisy_idx)} flipped labels, "
          f"mean memorization {mem[data.noisy_idx].mean():.3f} vs "
          f"{np.delete(mem, data.noisy_idx).mean():.3f} for the rest; "
          f"ROC AUC {auc:.3f}")
    result["noise_auc"] = auc
  print(f"Estimates: {paths['estimates']}\nHigh-influence pairs: "
        f"{paths['pairs']}\nFigures:\n  " + "\n  ".join(paths["figures"]) +
        f"\nReport (open in a browser): {paths['report']}")
  result["paths"] = paths
  return result


def run(options: Options) -> dict:
  """Runs `options.stage`; returns what each stage reported."""
  options.check()
  out, data = {}, None
  if options.stage in ("train", "all"):
    data = load_data(options)
    out["train"] = train_stage(options, data)
  if options.stage in ("estimate", "all"):
    if options.stage == "all" and collection.is_sharded(options.shard):
      missing = store_for(options).unfinished(range(options.num_runs),
                                              options.save_checkpoints)
      if missing:
        print(f"{len(missing)} of {options.num_runs} runs are not finished "
              "yet (other shards); run --stage estimate once all are.")
        return out
    out["estimate"] = estimate_stage(options, data)
  return out


if __name__ == "__main__":
  cli.run(main)
