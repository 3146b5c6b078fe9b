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

  python -m mnist_example.train                   # 6–7 min on 2 CPU cores
  python -m mnist_example.train --preset=paper --data_dir=~/tensorflow_datasets
  python -m mnist_example.train --label_noise=0.1 --out=/tmp/noisy
  python -m mnist_example.train --stage=train --shard=0/2   # and 1/2 elsewhere
  python -m mnist_example.train --stage=estimate

Training is resumable (finished runs are skipped, a killed job loses at most
the group in flight) and shardable (`--shard i/n` takes a disjoint block of
runs). The entry point enables TensorFlow's oneDNN kernels
(TF_ENABLE_ONEDNN_OPTS=1, unless already set): on AMD CPUs TF leaves them off
and they roughly double matmul throughput.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

import dataclasses  # pylint: disable=g-import-not-at-top,g-bad-import-order
import hashlib
import json
import sys
import time
from typing import List, Optional

from absl import app
from absl import flags
from absl import logging
import numpy as np
import tqdm

from heldout_tf import checkpoints
from heldout_tf import estimates
from heldout_tf import models
from heldout_tf import runs as runs_lib
from heldout_tf import training
from mnist_example import data as data_lib

EXPERIMENT = "mnist-mlp"
CONFIG_FILENAME = "config.json"
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
  group_size: int = 0  # 0: chosen from memory.
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


def parse_shard(text: str):
  """'i/n' -> (i, n) with 0 <= i < n."""
  try:
    index, count = (int(part) for part in text.split("/"))
  except ValueError:
    raise ValueError(f"--shard must look like i/n (e.g. 0/4), got {text!r}"
                     ) from None
  if count < 1 or not 0 <= index < count:
    raise ValueError(f"--shard {text!r}: need 0 <= i < n")
  return index, count


def shard_runs(num_runs: int, shard: str) -> List[int]:
  """The contiguous block of run ids shard `i/n` owns."""
  index, count = parse_shard(shard)
  return list(range(index * num_runs // count,
                    (index + 1) * num_runs // count))


def train_config(options: Options):
  return training.TrainConfig(
      ratio=options.ratio, epochs=options.epochs,
      batch_size=options.batch_size, learning_rate=options.learning_rate,
      seed=options.seed, num_classes=data_lib.NUM_CLASSES)


def load_data(options: Options, dataset=None) -> data_lib.MnistData:
  data = data_lib.load(dataset or options.dataset, options.data_dir,
                       options.download, options.label_noise, options.seed)
  if options.train_size or options.test_size:
    n_train = options.train_size or len(data.train_labels)
    n_test = options.test_size or len(data.test_labels)
    noisy = data.noisy_idx[data.noisy_idx < n_train]
    data = dataclasses.replace(
        data, train_images=data.train_images[:n_train],
        train_labels=data.train_labels[:n_train],
        clean_train_labels=data.clean_train_labels[:n_train],
        test_images=data.test_images[:n_test],
        test_labels=data.test_labels[:n_test], noisy_idx=noisy,
        description=data.description +
        f", first {n_train} train / {n_test} test examples")
  return data


def _fingerprint(*arrays) -> str:
  digest = hashlib.sha256()
  for array in arrays:
    digest.update(np.ascontiguousarray(array).tobytes())
  return digest.hexdigest()[:16]


def experiment_config(options: Options, data: data_lib.MnistData) -> dict:
  """What every run of one `<out>/mnist-mlp/<ratio>` directory shares."""
  config = dataclasses.asdict(train_config(options))
  config["hidden"] = list(config["hidden"])
  config.update(
      dataset=data.name, label_noise=options.label_noise,
      train_size=len(data.train_labels), test_size=len(data.test_labels),
      data_fingerprint=_fingerprint(data.train_labels, data.test_labels,
                                    data.train_images[:64]))
  return config


def ratio_dir(options: Options) -> str:
  return os.path.join(options.out, EXPERIMENT,
                      runs_lib.format_ratio(options.ratio))


def check_config(path: str, config: dict):
  """Writes `config` to `path`, or checks it matches the one already there."""
  if os.path.exists(path):
    with open(path) as f:
      existing = json.load(f)
    differ = sorted(k for k in set(config) | set(existing)
                    if config.get(k) != existing.get(k))
    if differ:
      details = "; ".join(f"{k}: on disk {existing.get(k)!r}, now "
                          f"{config.get(k)!r}" for k in differ)
      raise ValueError(
          f"{path}: the runs there were trained with other settings "
          f"({details}). Use another --out, or the same settings to resume.")
    return
  runs_lib.atomic_write(path, lambda f: f.write(json.dumps(
      config, indent=2, sort_keys=True)), mode="w")


def is_finished(run_path: str, need_checkpoint: bool) -> bool:
  """A run is finished once its aux_arrays.npz exists.

  aux_arrays.npz is written atomically and after the checkpoint, so its
  presence is enough; it is not read (2 000 runs would take minutes).
  """
  if not os.path.exists(os.path.join(run_path, runs_lib.AUX_FILENAME)):
    return False
  if need_checkpoint:
    try:
      checkpoints.find_checkpoint(run_path)
    except checkpoints.CheckpointNotFoundError:
      return False
  return True


def unfinished_runs(options: Options, run_ids,
                    need_checkpoint: bool) -> List[int]:
  """The ids in `run_ids` whose run is not finished under `options.out`."""
  return [r for r in run_ids if not is_finished(
      runs_lib.run_dir(options.out, EXPERIMENT, options.ratio, r),
      need_checkpoint)]


def _check_runs_complete(options: Options):
  """Raises ValueError unless exactly runs 0..num_runs-1 are finished."""
  missing = unfinished_runs(options, range(options.num_runs),
                            need_checkpoint=False)
  where = ratio_dir(options)
  if missing:
    shown = ", ".join(map(str, missing[:10])) + (
        ", ..." if len(missing) > 10 else "")
    raise ValueError(
        f"{len(missing)} of the {options.num_runs} runs under {where} are not "
        f"finished (no {runs_lib.AUX_FILENAME}): runs {shown}. Finish them "
        "with --stage=train (each --shard i/n again, same flags), then run "
        "--stage=estimate.")
  extra = [run for _, run, _ in runs_lib.list_runs(
      options.out, EXPERIMENT, [options.ratio]) if run >= options.num_runs]
  if extra:
    raise ValueError(
        f"{where} holds {len(extra)} run directories beyond --num_runs="
        f"{options.num_runs} (runs {extra[0]}..{extra[-1]}): pass the "
        "--num_runs they were trained with, or remove them.")


def _write_group(trainer, result, data, options, module, total_steps):
  """Writes checkpoints, then aux_arrays.npz, of every run in `result`."""
  n_train = len(data.train_labels)
  pred_train = trainer.predict(result, data.train_images)
  pred_test = trainer.predict(result, data.test_images)
  correct_train = pred_train == data.train_labels[None]
  correct_test = pred_test == data.test_labels[None]
  test_index = np.arange(len(data.test_labels), dtype=np.int64)
  for g, run in enumerate(result.runs):
    path = runs_lib.run_dir(options.out, EXPERIMENT, options.ratio, run)
    if options.save_checkpoints:
      training.set_params(module, result.model_params(g))
      checkpoints.save(module, os.path.join(path, runs_lib.CHECKPOINTS_DIRNAME),
                       step=options.epochs, epoch=options.epochs,
                       global_step=total_steps)
    subset = result.subsets[g]
    removed = np.setdiff1d(np.arange(n_train), subset)
    runs_lib.write_aux(
        path,
        correctness={"train": correct_train[g, subset],
                     "removed": correct_train[g, removed],
                     "test": correct_test[g]},
        index={"train": subset, "removed": removed, "test": test_index},
        subsample_idx=subset)


def train_stage(options: Options, data: data_lib.MnistData) -> dict:
  """Trains this shard's unfinished runs, group by group."""
  config = train_config(options)
  check_config(os.path.join(ratio_dir(options), CONFIG_FILENAME),
               experiment_config(options, data))
  mine = shard_runs(options.num_runs, options.shard)
  todo = unfinished_runs(options, mine, options.save_checkpoints)
  group_size = options.group_size or training.auto_group_size(config)
  print(f"Data: {data.description}.\nTraining: {len(todo)} of shard "
        f"{options.shard}'s {len(mine)} runs left ({len(mine) - len(todo)} "
        f"already finished), {min(group_size, max(len(todo), 1))} models "
        "per step.", flush=True)
  if not todo:
    return {"trained": 0, "seconds": 0.0}
  trainer = training.EnsembleTrainer(data.train_images, data.train_labels,
                                     config)
  module = models.build_model("mlp", data_lib.NUM_CLASSES)
  models.ensure_built(module, "mlp")
  start = time.perf_counter()
  with tqdm.tqdm(total=len(todo), unit="run", disable=not options.progress,
                 bar_format="{l_bar}{bar}| {n:.1f}/{total_fmt} runs "
                 "[{elapsed}<{remaining}, {rate_fmt}{postfix}]",
                 smoothing=0.1) as bar:
    for first in range(0, len(todo), group_size):
      group = todo[first:first + group_size]
      per_step = len(group) / trainer.total_steps()
      result = trainer.train(group, on_step=lambda *_: bar.update(per_step))
      _write_group(trainer, result, data, options, module,
                   trainer.total_steps())
      bar.n = first + len(group)  # Undo float drift.
      elapsed = time.perf_counter() - start
      bar.set_postfix_str(f"{3600 * bar.n / elapsed:.0f} models/h")
  seconds = time.perf_counter() - start
  print(f"Trained {len(todo)} runs in {seconds:.0f} s "
        f"({3600 * len(todo) / seconds:.0f} models/hour) under "
        f"{ratio_dir(options)}", flush=True)
  return {"trained": len(todo), "seconds": seconds}


def estimate_stage(options: Options,
                   data: Optional[data_lib.MnistData] = None) -> dict:
  """Estimates memorization and influence and draws the figures.

  Needs runs 0..num_runs-1 finished and no others. `data`: the runs' data if
  already loaded (stage 'all'); else loaded as the runs' config says.
  """
  # Matplotlib only here: training shards never import it.
  from mnist_example import figures  # pylint: disable=g-import-not-at-top
  config_path = os.path.join(ratio_dir(options), CONFIG_FILENAME)
  if not os.path.exists(config_path):
    raise FileNotFoundError(f"{config_path} not found: train first "
                            "(--stage=train) with the same --out and --ratio")
  with open(config_path) as f:
    config = json.load(f)
  # The runs define the data: same dataset, noise, seed and sizes.
  options = dataclasses.replace(
      options, label_noise=config["label_noise"], seed=config["seed"],
      train_size=config["train_size"], test_size=config["test_size"])
  _check_runs_complete(options)
  if data is None:
    data = load_data(options, dataset=config["dataset"])
  if experiment_config(options, data)["data_fingerprint"] != config[
      "data_fingerprint"]:
    raise ValueError(f"{config_path}: the {config['dataset']} data loaded now "
                     "differs from the data the runs were trained on")
  runs = estimates.load_runs(options.out, EXPERIMENT, [options.ratio],
                             progress=options.progress)
  if runs.n_train != len(data.train_labels):
    raise ValueError(f"runs have {runs.n_train} training examples, the data "
                     f"{len(data.train_labels)}")
  result = estimates.compute(
      runs, what=("mem", "pairs", "cscores"),
      infl_threshold=options.infl_threshold,
      mem_threshold=options.mem_threshold, labels=data.train_labels,
      progress=options.progress)
  result.update(noisy_idx=data.noisy_idx,
                clean_train_labels=data.clean_train_labels,
                test_labels=data.test_labels)
  root = ratio_dir(options)
  paths = {"estimates": os.path.join(root, ESTIMATES_FILENAME),
           "pairs": os.path.join(
               root, f"mnist_high_infl_pairs_infl{options.infl_threshold:g}"
               f"_mem{options.mem_threshold:g}.npz")}
  estimates.save_estimates(paths["estimates"], result)
  estimates.save_pairs(paths["pairs"], result)
  mem = np.nan_to_num(result["memorization"], nan=0.0)
  paths["figures"] = figures.write_all(os.path.join(root, "figures"), data,
                                       mem, result)
  print(estimates.summary(result))
  if len(data.noisy_idx):
    auc = roc_auc(mem, data.noisy_idx)
    print(f"label noise sanity check: {len(data.noisy_idx)} flipped labels, "
          f"mean memorization {mem[data.noisy_idx].mean():.3f} vs "
          f"{np.delete(mem, data.noisy_idx).mean():.3f} for the rest; "
          f"ROC AUC {auc:.3f}")
    result["noise_auc"] = auc
  print(f"Estimates: {paths['estimates']}\nHigh-influence pairs: "
        f"{paths['pairs']}\nFigures:\n  " + "\n  ".join(paths["figures"]))
  result["paths"] = paths
  return result


def roc_auc(scores, positive_idx) -> float:
  """Probability a positive example scores above a negative (ties: 1/2)."""
  scores = np.asarray(scores, np.float64)
  positive = np.zeros(len(scores), bool)
  positive[positive_idx] = True
  ranks = np.empty(len(scores))
  order = np.argsort(scores, kind="stable")
  sorted_scores = scores[order]
  # Average ranks over ties.
  _, first, counts = np.unique(sorted_scores, return_index=True,
                               return_counts=True)
  average = first + (counts - 1) / 2.0
  ranks[order] = np.repeat(average, counts)
  n_pos, n_neg = positive.sum(), (~positive).sum()
  return float((ranks[positive].sum() - n_pos * (n_pos - 1) / 2.0)
               / (n_pos * n_neg))


def run(options: Options) -> dict:
  """Runs `options.stage`; returns what each stage reported."""
  if options.stage not in STAGES:
    raise ValueError(f"--stage must be one of {STAGES}, got {options.stage!r}")
  shard_runs(options.num_runs, options.shard)  # Validates --shard early.
  out, data = {}, None
  if options.stage in ("train", "all"):
    data = load_data(options)
    out["train"] = train_stage(options, data)
  if options.stage in ("estimate", "all"):
    if options.stage == "all" and options.shard != "0/1":
      missing = unfinished_runs(options, range(options.num_runs),
                                options.save_checkpoints)
      if missing:
        print(f"{len(missing)} of {options.num_runs} runs are not finished "
              "yet (other shards); run --stage=estimate once all are.")
        return out
    out["estimate"] = estimate_stage(options, data)
  return out


# --------------------------------------------------------------------- CLI --

FLAGS = flags.FLAGS
_DEFAULTS = Options()
flags.DEFINE_integer("num_runs", _DEFAULTS.num_runs, "Number of runs (models).")
flags.DEFINE_float("ratio", _DEFAULTS.ratio, "Fraction of the training set "
                   "each run trains on.")
flags.DEFINE_integer("epochs", _DEFAULTS.epochs, "Training epochs per run.")
flags.DEFINE_integer("batch_size", _DEFAULTS.batch_size, "Batch size.")
flags.DEFINE_float("learning_rate", _DEFAULTS.learning_rate,
                   "SGD learning rate (momentum 0.9).")
flags.DEFINE_integer("group_size", _DEFAULTS.group_size, "Models trained at "
                     "once; 0 chooses from the available memory.")
flags.DEFINE_integer("seed", _DEFAULTS.seed, "Seed: subsets, shuffles, "
                     "initialisation and label noise are functions of "
                     "(seed, run).")
flags.DEFINE_string("out", _DEFAULTS.out, "Output root.")
flags.DEFINE_enum("dataset", _DEFAULTS.dataset, data_lib.DATASETS,
                  "'mnist' (tfds), 'digits' (embedded 5 000 digits) or "
                  "'auto' (mnist if prepared locally, else digits).")
flags.DEFINE_string("data_dir", _DEFAULTS.data_dir,
                    "tfds data directory holding mnist.")
flags.DEFINE_bool("download", _DEFAULTS.download,
                  "Let tfds download MNIST (network).")
flags.DEFINE_float("label_noise", _DEFAULTS.label_noise, "Fraction of "
                   "training labels to flip (seeded); their indices are "
                   "saved as noisy_idx.")
flags.DEFINE_enum("stage", _DEFAULTS.stage, STAGES, "What to run.")
flags.DEFINE_string("shard", _DEFAULTS.shard, "i/n: train only the i-th of n "
                    "disjoint blocks of runs.")
flags.DEFINE_enum("preset", None, ["paper"], "'paper': the reference setup "
                  "(2000 runs, ratio 0.7, 10 epochs, batch 128, lr 0.1, "
                  "tfds MNIST); explicit flags still override it.")
flags.DEFINE_integer("train_size", _DEFAULTS.train_size, "Use only the first "
                     "N training examples (0: all).")
flags.DEFINE_integer("test_size", _DEFAULTS.test_size, "Use only the first N "
                     "test examples (0: all).")
flags.DEFINE_bool("save_checkpoints", _DEFAULTS.save_checkpoints,
                  "Write checkpoints/ckpt-<N>.")
flags.DEFINE_float("infl_threshold", _DEFAULTS.infl_threshold,
                   "High-influence pairs threshold.")
flags.DEFINE_float("mem_threshold", _DEFAULTS.mem_threshold, "Memorization "
                   "threshold of the pairs' training examples.")
flags.DEFINE_bool("progress", _DEFAULTS.progress, "Show progress bars.")


def options_from_flags() -> Options:
  values = {f.name: FLAGS[f.name].value for f in dataclasses.fields(Options)}
  if FLAGS.preset == "paper":
    for name, value in PAPER_PRESET.items():
      if not FLAGS[name].present:
        values[name] = value
  return Options(**values)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # TF's per-save INFO lines.
  try:
    run(options_from_flags())
  except (ValueError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
  app.run(main)
