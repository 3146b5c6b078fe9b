r"""Streams a released archive, verifies its MD5 and extracts selected runs.

  python -m heldout_tf.download --experiment cifar10-inception --dest DIR \
      [--only aux|checkpoints|all] [--ratios 0.1,0.7] [--runs 0,1,2] \
      [--source gs|https] [--base_url URL] [--md5 HEX] [--keep_archive PATH] \
      [--max_member_size aux=1GiB,data=4GiB]
  python -m heldout_tf.download --verify_only cifar10-inception.tar.gz

The archive is read once; only the selected members touch disk, and they are
moved into DIR only after the MD5 of the whole stream matches. Dropped
connections resume with range requests; re-running skips committed runs
whose files are still there. Never imports TensorFlow.
"""

import argparse
import os

from heldout_tf import archive
from heldout_tf import cli
from heldout_tf import errors
from heldout_tf import layout
from heldout_tf import released
from heldout_tf import sizes


def parse_args(argv=None):
  """The command line's flags (`argv` without the program name)."""
  parser = argparse.ArgumentParser(
      prog="python -m heldout_tf.download",
      description="Stream a released archive, verify its MD5 and extract "
      "selected runs.")
  parser.add_argument(
      "--experiment",
      help=f"One of {', '.join(sorted(released.EXPERIMENTS))}.")
  parser.add_argument(
      "--dest",
      help="Root directory; runs land in DEST/<experiment>/<ratio>/<run>.")
  parser.add_argument(
      "--source", default="gs", choices=["gs", "https"],
      help="Default location: anonymous GCS via gcsfs, or plain HTTPS.")
  parser.add_argument(
      "--base_url",
      help="Directory holding <experiment>.tar.gz: gs://bucket/prefix, "
      "http(s)://host/prefix, file:///dir or a local directory. Overrides "
      "--source.")
  parser.add_argument(
      "--md5",
      help="Expected MD5 (hex); default: the released sum (as in "
      "checksums.md5).")
  parser.add_argument(
      "--only", default="all", choices=list(archive.ONLY_CHOICES),
      help="Members of each run to extract: aux_arrays.npz, checkpoints/, "
      "or all.")
  parser.add_argument(
      "--ratios",
      help="Subset ratios to extract, e.g. 0.1,0.7 (default all).")
  parser.add_argument(
      "--runs", help="Run ids to extract, e.g. 0,1,2 (default all).")
  parser.add_argument(
      "--keep_archive",
      help="Also keep the verified archive at this path (or in this "
      "directory); an interrupted download resumes from PATH.part.")
  parser.add_argument(
      "--verify_only", help="Only check the MD5 of this local archive.")
  parser.add_argument(
      "--gcs_endpoint",
      help="GCS endpoint URL (e.g. an emulator); default "
      "$STORAGE_EMULATOR_HOST or the real service.")
  parser.add_argument(
      "--retries", type=int, default=5,
      help="Retries of a dropped connection before giving up.")
  parser.add_argument(
      "--backoff", type=float, default=1.0,
      help="First retry delay in seconds; doubles per retry.")
  limits = ", ".join(f"{kind}={sizes.format_bytes(size)}"
                     for kind, size in archive.DEFAULT_SIZE_LIMITS.items())
  parser.add_argument(
      "--max_member_size",
      help="Largest member extracted, per kind (aux: aux_arrays.npz, index: "
      "checkpoints/*.index, data: checkpoints/*.data-*, other), e.g. "
      f"aux=1GiB,data=4GiB. Default {limits}.")
  parser.add_argument("--progress", dest="progress", action="store_true",
                      default=True, help="Show a progress bar (default).")
  parser.add_argument("--noprogress", dest="progress", action="store_false",
                      help="No progress bar.")
  return parser.parse_args(argv)


def _parse_list(text, parse, flag):
  """`'0.1,0.7'` -> parsed values; None when the flag was not given."""
  if text is None:
    return None
  items = [item.strip() for item in text.split(",") if item.strip()]
  if not items:
    raise errors.UsageError(f"--{flag} is empty; leave it out for all")
  try:
    return [parse(item) for item in items]
  except (ValueError, errors.UsageError) as e:
    raise errors.UsageError(f"--{flag} {text!r}: {e}") from None


def _run_id(text):
  run = layout.parse_run(text)
  if run is None:
    raise errors.UsageError(f"{text!r} is not a run id (0, 1, 2, ...)")
  return run


def _verify_only(args):
  path = args.verify_only
  if args.md5:
    md5 = args.md5
  else:
    name = args.experiment or os.path.basename(path).split(".tar.gz")[0]
    try:
      md5 = released.get(name).md5
    except ValueError as e:
      raise errors.UsageError(f"{e}; pass --md5 or --experiment") from None
  actual = archive.verify_file(path, md5, progress=args.progress)
  print(f"{path}: OK (MD5 {actual})")


def main(argv=None):
  args = parse_args(argv)
  archive.transport.quiet_library_loggers()
  if args.verify_only:
    _verify_only(args)
    return 0
  if not args.experiment or not args.dest:
    raise errors.UsageError("--experiment and --dest are required")
  for flag in ("retries", "backoff"):
    if not getattr(args, flag) >= 0:  # Also refuses nan.
      raise errors.UsageError(f"--{flag} must be >= 0, got "
                              f"{getattr(args, flag)!r}")
  if args.md5 is None and args.experiment not in released.EXPERIMENTS:
    raise errors.UsageError(
        f"unknown --experiment {args.experiment!r} (known: "
        f"{', '.join(sorted(released.EXPERIMENTS))}); pass --md5 for others")
  result = archive.fetch(
      args.experiment, args.dest, source=args.source,
      base_url=args.base_url, md5=args.md5, only=args.only,
      ratios=_parse_list(args.ratios, layout.format_ratio, "ratios"),
      runs=_parse_list(args.runs, _run_id, "runs"),
      keep_archive=args.keep_archive, gcs_endpoint=args.gcs_endpoint,
      retries=args.retries, backoff_s=args.backoff, progress=args.progress,
      max_member_size=archive.parse_size_limits(args.max_member_size))
  print(result.summary())
  return 0


if __name__ == "__main__":
  cli.run(main)
