r"""Writes one self-contained HTML report of a collection.

  heldout report --root ./heldout_mnist --out report.html
  heldout report --root ./runs --experiment cifar10-inception --ratios 0.7 \
      --out report.html

(`heldout report` is `python -m heldout_tf.cli.report`.) The page opens from
file:// with no network: provenance, summary, linked histograms, the
examples grid, high-influence pairs, attribution (the LDS table of
`heldout lds`, each test example's top influencers by a `heldout
datamodels` or other score file), suspicious candidates, search,
#train/<i> and #test/<j> example cards, downloads with sha256. Images come
from the collection's dataset when it is available offline (MNIST digits
always; tfds MNIST / CIFAR in --data_dir), never downloaded. Quality scores
are shown when `heldout quality` finished writing them (its manifest.json
lists them); otherwise a warning says they are incomplete.
"""

import argparse
import sys
from typing import Optional, Sequence

from heldout_tf import cli
from heldout_tf.collection import selection
from heldout_tf.core import errors


def build_parser() -> cli.Parser:
  """The command's flags (imports no TensorFlow)."""
  parser = cli.Parser("heldout report", __doc__)
  cli.add_root(parser, required=True)
  cli.add_experiment(parser, help="The experiment directory under --root, "
                     "e.g. mnist-mlp; empty: the only one there.")
  parser.add_argument("--out", required=True, metavar="FILE",
                      help="The HTML file to write.")
  parser.add_argument("--ratios", default="all", metavar="R",
                      help="The one subset ratio to report on, e.g. 0.7; "
                      "'all': the only one, or every run (C-scores averaged "
                      "over ratios) when there are several.")
  parser.add_argument("--ratio", dest="old_ratio", default=None,
                      help=argparse.SUPPRESS)  # Refused, naming --ratios.
  parser.add_argument("--estimates", default=None, metavar="FILE",
                      help="An estimates npz; unset: <ratio>/estimates.npz "
                      "if present, else computed from the runs.")
  parser.add_argument("--scores", default=None, metavar="FILE",
                      help="A quality scores npz; unset: "
                      "<ratio>/quality/scores.npz if heldout quality "
                      "finished writing it.")
  parser.add_argument("--lds", default=None, metavar="FILE",
                      help="A heldout lds table (npz); unset: "
                      "<ratio>/attribution/lds.npz if present.")
  parser.add_argument("--attribution", default=None, metavar="FILE",
                      help="A score file whose top influencers each test "
                      "example's card shows (heldout datamodels' or "
                      "estimate's, or your own); unset: <ratio>/"
                      "attribution/datamodels.npz if present.")
  parser.add_argument("--data_dir", default=None, metavar="DIR",
                      help="tfds data directory holding the dataset (MNIST, "
                      "CIFAR) for the images; nothing is downloaded.")
  cli.add_bool(parser, "images", True, "Embed the examples' images "
               "(--noimages: none, no dataset is read).")
  cli.add_progress(parser)
  return parser


def parse_args(argv: Optional[Sequence[str]] = None):
  """The flags, checked (`errors.UsageError` naming the flag); `ratio` is
  the one ratio asked for, or None."""
  args = build_parser().parse_args(argv)
  if args.old_ratio is not None:
    raise errors.UsageError("--ratio: this command's flag is --ratios (as in "
                            "heldout estimate), e.g. --ratios 0.7")
  ratios = selection.parse_ratios(args.ratios)
  if ratios is not None and len(ratios) != 1:
    raise errors.UsageError(f"--ratios: one ratio per report, got "
                            f"{len(ratios)} ({args.ratios})")
  args.ratio = None if ratios is None else ratios[0]
  return args


def main(argv: Optional[Sequence[str]] = None):
  args = parse_args(argv)
  cli.check_root(args.root)  # Before TensorFlow's seconds.
  cli.quiet_tensorflow()
  from heldout_tf import report  # pylint: disable=g-import-not-at-top
  summary = report.write(
      args.root, args.experiment, args.out, ratio=args.ratio,
      estimates=args.estimates, scores=args.scores, lds=args.lds,
      attribution=args.attribution, data_dir=args.data_dir,
      progress=args.progress, with_images=args.images)
  for warning in summary.warnings:
    print(f"warning: {warning}", file=sys.stderr)
  images = ("with images" if summary.images else summary.images_note)
  print(f"Wrote {summary.path} ({summary.num_bytes / 2**20:.1f} MB; "
        f"{summary.n_train} training / {summary.n_test} test examples, "
        f"{summary.num_runs} runs; {images}) in {summary.seconds:.1f} s",
        file=sys.stdout)


if __name__ == "__main__":
  cli.run(main)
