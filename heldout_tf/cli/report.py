r"""Writes one self-contained HTML report of a collection.

  python -m heldout_tf.cli.report --root ./heldout_mnist --experiment mnist-mlp \
      --out report.html

The page opens from file:// with no network: provenance, summary, linked
histograms, the examples grid, high-influence pairs, suspicious candidates,
search, #train/<i> and #test/<j> example cards, downloads with sha256. Images
come from the collection's dataset when it is available offline (MNIST
digits always; tfds MNIST / CIFAR in --data_dir), never downloaded.
"""

import sys
from typing import Optional, Sequence

from heldout_tf import cli


def build_parser() -> cli.Parser:
  """The command's flags (imports no TensorFlow)."""
  parser = cli.Parser("heldout report", __doc__)
  cli.add_root(parser, required=True)
  parser.add_argument("--experiment", required=True, metavar="NAME",
                      help="The experiment directory under --root, e.g. "
                      "mnist-mlp.")
  parser.add_argument("--out", required=True, metavar="FILE",
                      help="The HTML file to write.")
  parser.add_argument("--ratio", type=float, default=None, metavar="R",
                      help="The subset ratio to report on; unset: the only "
                      "one (or all runs when there are several).")
  parser.add_argument("--estimates", default=None, metavar="FILE",
                      help="An estimates npz; unset: <ratio>/estimates.npz "
                      "if present, else computed from the runs.")
  parser.add_argument("--scores", default=None, metavar="FILE",
                      help="A quality scores npz; unset: "
                      "<ratio>/quality/scores.npz if present.")
  parser.add_argument("--data_dir", default=None, metavar="DIR",
                      help="tfds data directory holding the dataset (MNIST, "
                      "CIFAR) for the images; nothing is downloaded.")
  cli.add_bool(parser, "images", True, "Embed the examples' images "
               "(--noimages: none, no dataset is read).")
  cli.add_progress(parser)
  return parser


def main(argv: Optional[Sequence[str]] = None):
  args = build_parser().parse_args(argv)
  cli.quiet_tensorflow()
  from heldout_tf import report  # pylint: disable=g-import-not-at-top
  summary = report.write(
      args.root, args.experiment, args.out, ratio=args.ratio,
      estimates=args.estimates, scores=args.scores, data_dir=args.data_dir,
      progress=args.progress, with_images=args.images)
  images = ("with images" if summary.images else summary.images_note)
  print(f"Wrote {summary.path} ({summary.num_bytes / 2**20:.1f} MB; "
        f"{summary.n_train} training / {summary.n_test} test examples, "
        f"{summary.num_runs} runs; {images}) in {summary.seconds:.1f} s",
        file=sys.stdout)


if __name__ == "__main__":
  cli.run(main)
