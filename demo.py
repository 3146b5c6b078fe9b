r"""Restore released runs, re-evaluate them and cross-check aux_arrays.npz.

  python demo.py --experiment cifar10-inception --ratio 0.7 --run 0
  python demo.py --experiment cifar10-inception --runs all --split train
  python demo.py --experiment imagenet-resnet50 \
      --data_dir ~/tensorflow_datasets --imagenet_index_map index.csv

For each run: the checkpoint's epoch and global step, the subset percentage,
the accuracy, and `N out of M predictions match` against the run's recorded
correctness. One model and one compiled forward pass serve every run.
"""

import os
import sys

from absl import app
from absl import flags
from absl import logging

from heldout_tf import released
from heldout_tf import runs

flags.DEFINE_enum("experiment", "cifar10-inception",
                  sorted(released.EXPERIMENTS), "Released experiment.")
flags.DEFINE_string("root", None, "Directory holding <experiment>/<ratio>/"
                    "<run>/ (default: $HELDOUT_ROOT or ~/heldout-checkpoints).")
flags.DEFINE_float("ratio", 0.7, "Subset ratio of the runs to evaluate.")
flags.DEFINE_integer("run", 0, "Run id to evaluate.")
flags.DEFINE_string("runs", None, "'all', or comma-separated run ids; "
                    "overrides --run.")
flags.DEFINE_enum("split", "test", ["test", "train"], "Split to evaluate.")
flags.DEFINE_string("data_dir", None, "tfds data_dir (CIFAR); for ImageNet "
                    "the indexed TFRecord directory or a prepared tfds "
                    "imagenet2012 directory.")
flags.DEFINE_string("imagenet_index_map", None, "ImageNet from a tfds "
                    "imagenet2012 --data_dir: file of split,file_name,index "
                    "lines giving each image's canonical index.")
flags.DEFINE_bool("download", False, "Let tfds download the dataset.")
flags.DEFINE_integer("batch_size", 200, "Evaluation batch size.")
flags.DEFINE_bool("require_match", False,
                  "Exit non-zero when any prediction does not match.")
FLAGS = flags.FLAGS


def default_root():
  return os.environ.get("HELDOUT_ROOT") or os.path.expanduser(
      "~/heldout-checkpoints")


def select_runs(root, experiment, ratio, runs_flag, run):
  """`[(run_id, run_dir)]` requested on the command line (may not exist)."""
  if runs_flag is None:
    return [(run, runs.run_dir(root, experiment, ratio, run))]
  if runs_flag == "all":
    return [(r, path) for name, r, path in
            runs.list_runs(root, experiment, [ratio])]
  ids = [int(r) for r in runs_flag.split(",") if r.strip()]
  return [(r, runs.run_dir(root, experiment, ratio, r)) for r in ids]


def evaluate_runs(experiment, selected):
  """Restores and evaluates each selected run; True when all match."""
  # Heavy imports (TensorFlow) here, so `--help` is instant.
  from heldout_tf import checkpoints, data, evaluation, models  # pylint: disable=g-import-not-at-top,g-multiple-import

  dataset = data.load(experiment.dataset, FLAGS.data_dir, FLAGS.download,
                      index_map=FLAGS.imagenet_index_map)
  model = models.ensure_built(
      models.build_model(experiment.arch, experiment.num_classes),
      experiment.arch)
  all_match = True
  for run_id, path in selected:
    info = checkpoints.restore(model, path)
    aux = runs.read_aux(path)
    n_train = len(aux["index_train"]) + len(aux["index_removed"])
    subset = 100.0 * len(aux["subsample_idx"]) / n_train
    result = evaluation.evaluate(model, dataset, FLAGS.split,
                                 FLAGS.batch_size)
    check = evaluation.cross_check(aux, result, FLAGS.split)
    all_match &= check.ok
    print(f"{experiment.name} ratio {runs.format_ratio(FLAGS.ratio)} run "
          f"{run_id}: epoch {info.epoch}, global step {info.global_step}, "
          f"trained on {subset:.1f}% of the training set")
    print(f"  {FLAGS.split} accuracy: {100 * result.accuracy:.2f}%")
    print(f"  {check}")
    if not check.ok:
      shown = ", ".join(str(i) for i in check.mismatched_index[:10])
      print(f"  mismatched example indices: {shown}"
            f"{' ...' if len(check.mismatched_index) > 10 else ''}")
  return all_match


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # Quiet tfds' info lines.
  experiment = released.get(FLAGS.experiment)
  root = FLAGS.root or default_root()
  selected = select_runs(root, experiment.name, FLAGS.ratio, FLAGS.runs,
                         FLAGS.run)
  absent = [path for _, path in selected
            if not os.path.exists(os.path.join(path, runs.AUX_FILENAME))]
  if not selected or absent:
    what = absent[0] if absent else os.path.join(
        root, experiment.name, runs.format_ratio(FLAGS.ratio))
    print(f"No run found at {what}.\n", file=sys.stderr)
    print(released.download_instructions(experiment.name, root),
          file=sys.stderr)
    return 2

  if FLAGS.download and experiment.dataset == "imagenet":
    print("--download does not apply to ImageNet: pass --data_dir with your "
          "indexed TFRecords, or a prepared tfds imagenet2012 directory and "
          "--imagenet_index_map.", file=sys.stderr)
    return 2
  if FLAGS.imagenet_index_map and experiment.dataset != "imagenet":
    print(f"--imagenet_index_map does not apply to {experiment.name}.",
          file=sys.stderr)
    return 2
  try:
    all_match = evaluate_runs(experiment, selected)
  # Missing data, checkpoint mismatches, bad aux files: say what, no traceback.
  except (ValueError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  if FLAGS.require_match and not all_match:
    print("Some predictions do not match the recorded correctness.",
          file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  app.run(main)
