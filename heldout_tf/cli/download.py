r"""Streams a released archive, verifies its MD5 and extracts selected runs.

  heldout download --experiment cifar10-inception --root DIR \
      --ratios 0.7 --runs 0-2 --only aux
  heldout download --verify_only cifar10-inception.tar.gz

(`heldout download` is `python -m heldout_tf.cli.download`.) The archive is read
once; only the selected members touch disk, and they are moved into
<root>/<experiment>/<ratio>/<run>/ only after the MD5 of the whole stream
matches. Dropped connections resume with range requests; re-running skips
committed runs whose files are still there. Never imports TensorFlow.
"""

import os

from heldout_tf import archive
from heldout_tf import cli
from heldout_tf.core import errors
from heldout_tf.collection import selection
from heldout_tf.collection import experiments
from heldout_tf.core import sizes

PROG = "heldout download"


def build_parser() -> cli.Parser:
  """The command line's flags."""
  parser = cli.Parser(PROG, __doc__)
  cli.add_experiment(
      parser, default=None,
      help=f"One of {', '.join(sorted(experiments.RELEASED))} (others: "
      "pass --md5 too).")
  cli.add_root(parser, help="Where runs land: <root>/<experiment>/<ratio>/"
               "<run>/ (the collection root every command reads).")
  parser.add_argument(
      "--source", default="gs", choices=["gs", "https"],
      help="Default location: anonymous GCS via gcsfs, or plain HTTPS.")
  parser.add_argument(
      "--base_url", metavar="URL",
      help="Directory holding <experiment>.tar.gz: gs://bucket/prefix, "
      "http(s)://host/prefix, file:///dir or a local directory. Overrides "
      "--source.")
  parser.add_argument(
      "--md5", metavar="HEX",
      help="Expected MD5; default: the released sum (as in checksums.md5).")
  parser.add_argument(
      "--only", default="all", choices=list(archive.ONLY_CHOICES),
      help="Members of each run to extract: aux_arrays.npz, checkpoints/, "
      "or all.")
  parser.add_argument(
      "--ratios", default="all", metavar="LIST",
      help="Subset ratios to extract, e.g. 0.1,0.7.")
  parser.add_argument(
      "--runs", default="all", metavar="LIST",
      help="Run ids to extract: ids and ranges, e.g. 0,3 or 0-9.")
  parser.add_argument(
      "--keep_archive", metavar="PATH",
      help="Also keep the verified archive at this path (or in this "
      "directory); an interrupted download resumes from PATH.part.")
  parser.add_argument(
      "--verify_only", metavar="ARCHIVE",
      help="Only check the MD5 of this local archive.")
  parser.add_argument(
      "--gcs_endpoint", metavar="URL",
      help="GCS endpoint URL (e.g. an emulator); default "
      "$STORAGE_EMULATOR_HOST or the real service.")
  parser.add_argument(
      "--retries", type=int, default=5,
      help="Retries of a dropped connection before giving up.")
  parser.add_argument(
      "--backoff", type=float, default=1.0,
      help="First retry delay in seconds; doubles per retry.")
  limits = ",".join(f"{kind}={sizes.format_bytes(size)}"
                    for kind, size in archive.DEFAULT_SIZE_LIMITS.items())
  parser.add_argument(
      "--max_member_size", metavar="KIND=SIZE,...",
      help="Largest member extracted, per kind (aux: aux_arrays.npz, index: "
      "checkpoints/*.index, data: checkpoints/*.data-*, other), e.g. "
      f"aux=1GiB,data=4GiB. Default {limits}.")
  cli.add_progress(parser)
  return parser


def _verify_only(args):
  path = args.verify_only
  if args.md5:
    md5 = args.md5
  else:
    name = args.experiment or os.path.basename(path).split(".tar.gz")[0]
    if name not in experiments.RELEASED:
      raise errors.UsageError(
          f"--verify_only {path}: not a released archive name; pass --md5 "
          "or --experiment")
    md5 = experiments.get(name, released_only=True).md5
  actual = archive.verify_file(path, md5, progress=args.progress)
  print(f"{path}: OK (MD5 {actual})")


def main(argv=None):
  args = build_parser().parse_args(argv)
  archive.transport.quiet_library_loggers()
  if args.verify_only:
    _verify_only(args)
    return 0
  if not args.experiment or not args.root:
    raise errors.UsageError("--experiment and --root are required")
  for flag in ("retries", "backoff"):
    if not getattr(args, flag) >= 0:  # Also refuses nan.
      raise errors.UsageError(f"--{flag} must be >= 0, got "
                              f"{getattr(args, flag)!r}")
  if args.md5 is None and args.experiment not in experiments.RELEASED:
    experiments.get(args.experiment, released_only=True)  # A UsageError listing the names.
  result = archive.fetch(
      args.experiment, args.root, source=args.source,
      base_url=args.base_url, md5=args.md5, only=args.only,
      ratios=selection.parse_ratios(args.ratios),
      runs=selection.parse_run_ids(args.runs),
      keep_archive=args.keep_archive, gcs_endpoint=args.gcs_endpoint,
      retries=args.retries, backoff_s=args.backoff, progress=args.progress,
      max_member_size=archive.parse_size_limits(args.max_member_size))
  print(result.summary())
  return 0


if __name__ == "__main__":
  cli.run(main)
