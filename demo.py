r"""Restore released runs, re-evaluate them and cross-check aux_arrays.npz.

  python demo.py --experiment cifar10-inception --ratio 0.7 --run 0
  python demo.py --experiment cifar10-inception --runs all --split train
  python demo.py --experiment imagenet-resnet50 \
      --data_dir ~/tensorflow_datasets --imagenet_index_map index.csv

For each run: the checkpoint's epoch and global step, the subset percentage,
the accuracy, and `N out of M predictions match` against the run's recorded
correctness. One model and one compiled forward pass serve every run
(`heldout_tf.evaluation.evaluate_runs`).

Exit status: 0 done; 1 a bad input (`error: ...`, e.g. a corrupt checkpoint,
a missing dataset) or, with --require_match, a prediction that does not
match; 2 bad flags, or runs not on disk (with download instructions).
"""

from heldout_tf import cli

if __name__ == "__main__":
  cli.quiet_tensorflow()  # Imports TensorFlow, hiding its start-up lines.

# pylint: disable=g-import-not-at-top,g-bad-import-order
import argparse
import os
import re
import sys

from heldout_tf import errors
from heldout_tf import layout
from heldout_tf import released

ROOT_ENV = "HELDOUT_ROOT"
MISMATCHES_SHOWN = 10


def default_root():
  return os.environ.get(ROOT_ENV) or os.path.expanduser(
      "~/heldout-checkpoints")


def parse_args(argv=None) -> argparse.Namespace:
  """The command line's flags (argparse exits 2 on a malformed one)."""
  parser = argparse.ArgumentParser(
      description=__doc__.split("\n\n")[0],
      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--experiment", default="cifar10-inception",
                      choices=sorted(released.EXPERIMENTS),
                      help="Released experiment.")
  parser.add_argument("--root", default=None,
                      help="Directory holding <experiment>/<ratio>/<run>/ "
                      f"(default: ${ROOT_ENV} or ~/heldout-checkpoints).")
  parser.add_argument("--ratio", type=float, default=0.7,
                      help="Subset ratio of the runs to evaluate.")
  parser.add_argument("--run", type=int, default=0,
                      help="Run id to evaluate.")
  parser.add_argument("--runs", default=None,
                      help="'all', or comma-separated run ids; overrides "
                      "--run.")
  parser.add_argument("--split", default="test", choices=["test", "train"],
                      help="Split to evaluate.")
  parser.add_argument("--data_dir", default=None,
                      help="tfds data_dir (CIFAR); for ImageNet the indexed "
                      "TFRecord directory or a prepared tfds imagenet2012 "
                      "directory.")
  parser.add_argument("--imagenet_index_map", default=None,
                      help="ImageNet from a tfds imagenet2012 --data_dir: "
                      "file of split,file_name,index lines giving each "
                      "image's canonical index.")
  parser.add_argument("--download", action="store_true",
                      help="Let tfds download the dataset.")
  parser.add_argument("--batch_size", type=int, default=200,
                      help="Evaluation batch size.")
  parser.add_argument("--require_match", action="store_true",
                      help="Exit 1 when any prediction does not match.")
  args = parser.parse_args(argv)
  imagenet = args.experiment == "imagenet-resnet50"
  if args.download and imagenet:
    parser.error("--download does not apply to ImageNet: pass --data_dir "
                 "with your indexed TFRecords, or a prepared tfds "
                 "imagenet2012 directory and --imagenet_index_map.")
  if args.imagenet_index_map and not imagenet:
    parser.error(f"--imagenet_index_map does not apply to {args.experiment}.")
  if args.batch_size < 1:
    parser.error(f"--batch_size must be >= 1, got {args.batch_size}")
  return args


def parse_run_ids(text: str):
  """`--runs` as a list of run ids, or None for 'all'."""
  if text.strip() == "all":
    return None
  ids = []
  for item in text.split(","):
    item = item.strip()
    if not item:
      continue
    if not re.fullmatch(r"[0-9]+", item):
      raise errors.UsageError(
          f"--runs: {item!r} is not a run id; pass 'all' or comma-separated "
          "ids such as 0,3,7")
    ids.append(int(item))
  if not ids:
    raise errors.UsageError(f"--runs: no run ids in {text!r}")
  return ids


def select_runs(root, experiment, ratio, runs_flag, run):
  """`[(run_id, run_dir)]` requested on the command line (may not exist)."""
  if runs_flag is None:
    return [(run, layout.run_dir(root, experiment, ratio, run))]
  ids = parse_run_ids(runs_flag)
  if ids is None:
    return [(r.run, r.path) for r in layout.list_runs(root, experiment,
                                                      [ratio])]
  return [(r, layout.run_dir(root, experiment, ratio, r)) for r in ids]


def print_run(experiment, ratio, run_id, split, evaluated):
  """Prints one `evaluation.RunEvaluation`."""
  info, check = evaluated.info, evaluated.check
  print(f"{experiment.name} ratio {layout.format_ratio(ratio)} run {run_id}: "
        f"epoch {info.epoch}, global step {info.global_step}, trained on "
        f"{100 * evaluated.subset_fraction:.1f}% of the training set")
  print(f"  {split} accuracy: {100 * evaluated.result.accuracy:.2f}%")
  print(f"  {check}")
  if not check.ok:
    shown = ", ".join(str(i) for i in check.mismatched_index[:MISMATCHES_SHOWN])
    more = " ..." if len(check.mismatched_index) > MISMATCHES_SHOWN else ""
    print(f"  mismatched example indices: {shown}{more}", flush=True)


def main(argv=None) -> int:
  args = parse_args(argv)
  experiment = released.get(args.experiment)
  root = args.root or default_root()
  selected = select_runs(root, experiment.name, args.ratio, args.runs,
                         args.run)
  # The kit's TensorFlow modules only now: importing `demo` stays light.
  from heldout_tf import data, evaluation  # pylint: disable=g-import-not-at-top,g-multiple-import
  missing = evaluation.check_runs_present(path for _, path in selected)
  if not selected or missing:
    what = missing[0] if missing else "No run found at " + layout.ratio_dir(
        root, experiment.name, args.ratio)
    more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
    print(f"{what}{more}.\n", file=sys.stderr)
    print(released.download_instructions(experiment.name, root),
          file=sys.stderr)
    return 2
  dataset = data.load(experiment.dataset, args.data_dir, args.download,
                      index_map=args.imagenet_index_map)
  all_match = True
  run_ids = [run_id for run_id, _ in selected]
  for run_id, evaluated in zip(run_ids, evaluation.evaluate_runs(
      experiment, [path for _, path in selected], dataset, args.split,
      args.batch_size)):
    print_run(experiment, args.ratio, run_id, args.split, evaluated)
    all_match &= evaluated.check.ok
  if args.require_match and not all_match:
    print("Some predictions do not match the recorded correctness.",
          file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  cli.run(main)
