r"""Which MNIST examples are noisy? Seven scores on the same runs, one command.

The MNIST preset of `heldout quality`: makes a training set
with known noise (`heldout_tf.data.noise`), trains a collection of held-out MLP
runs on it with per-epoch signals and a second-split phase
(`heldout_tf.training.workflow`), scores every training example with held-out
memorization, 1 - C-score, held-out loss, TracIn, AUM, second-split
forgetting and confident learning (`heldout_tf.quality.scores`), measures how well
each finds the noisy examples (`heldout_tf.quality.detection`) and retrains models
without the top-scored examples (`heldout_tf.quality.removal`):

  python -m mnist_example.quality                         # label:0.1
  python -m mnist_example.quality --noise input_gaussian:0.1@0.5
  python -m mnist_example.quality --noise label:0.05,label_pair:0.05 \
      --num_runs 512

is the same as

  heldout quality --root ./heldout_quality \
      --experiment mnist-mlp --dataset mnist --model mlp --recipe mnist-mlp \
      --num_runs 128 --group_size 16 --precision float32 --noise label:0.1 \
      --ssft_epochs 5 --removal_models 4 --trajectory_runs 4

and takes every flag of that command. --dataset mnist is tfds MNIST when
prepared in --data_dir, else the 5 000 embedded digits; --dataset digits
asks for the digits.

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
                                     report.html, manifest.json (last)

An interrupted job resumes where it stopped (a run killed mid-way from its
last epoch) and a re-run only re-scores. `--precision auto` and
`--group_size 0` take the recorded values. The outputs of `quality/`
belong together only when `manifest.json` lists them: everything is
computed first, then the previous outputs and manifest are removed and the
new ones written, the manifest last.
"""

from typing import Optional, Sequence

from heldout_tf import cli
from heldout_tf.cli import quality

PROG = "python -m mnist_example.quality"
EXPERIMENT = "mnist-mlp"
# The preset: `heldout_tf.cli.quality`'s defaults that differ.
PRESET = dict(root="./heldout_quality", experiment=EXPERIMENT,
              dataset="mnist", model="mlp", recipe="mnist-mlp",
              num_runs=128, group_size=16, precision="float32",
              noise="label:0.1", ssft_epochs=5, removal_models=4,
              trajectory_runs=4)


def build_parser() -> cli.Parser:
  """The command line (no TensorFlow imported)."""
  return quality.build_parser(PROG, __doc__, PRESET)


def parse_args(argv: Optional[Sequence[str]] = None):
  """Flags -> `(quality.workflow.ScoreOptions, training.workflow.Options
  or None)`, checked (`errors.UsageError` naming a bad flag)."""
  return quality.parse_args(argv, PRESET, PROG, __doc__)


def run(argv: Optional[Sequence[str]] = None):
  """Trains (or resumes), scores, ablates, writes; the
  `quality.workflow.Result`."""
  return quality.run(argv, PRESET, PROG, __doc__)


def main(argv: Optional[Sequence[str]] = None):
  run(argv)


if __name__ == "__main__":
  cli.run(main)
