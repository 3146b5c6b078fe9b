r"""Streams a released archive, verifies its MD5 and extracts selected runs.

  python -m heldout_tf.download --experiment cifar10-inception --dest DIR \
      [--only aux|checkpoints|all] [--ratios 0.1,0.7] [--runs 0,1,2] \
      [--source gs|https] [--base_url URL] [--md5 HEX] [--keep_archive PATH]
  python -m heldout_tf.download --verify_only cifar10-inception.tar.gz

The archive is read once; only the selected members touch disk, and they are
moved into DIR only after the MD5 of the whole stream matches. Dropped
connections resume with range requests; re-running skips committed runs.
"""

import os
import sys

from absl import app
from absl import flags

from heldout_tf import archive
from heldout_tf import released

_EXPERIMENT = flags.DEFINE_string(
    "experiment", None, f"One of {', '.join(sorted(released.EXPERIMENTS))}.")
_DEST = flags.DEFINE_string(
    "dest", None,
    "Root directory; runs land in DEST/<experiment>/<ratio>/<run>.")
_SOURCE = flags.DEFINE_enum(
    "source", "gs", ["gs", "https"],
    "Default location: anonymous GCS via gcsfs, or plain HTTPS.")
_BASE_URL = flags.DEFINE_string(
    "base_url", None,
    "Directory holding <experiment>.tar.gz: gs://bucket/prefix, "
    "http(s)://host/prefix, file:///dir or a local directory. Overrides "
    "--source.")
_MD5 = flags.DEFINE_string(
    "md5", None,
    "Expected MD5 (hex); default: the released sum (as in checksums.md5).")
_ONLY = flags.DEFINE_enum(
    "only", "all", list(archive.ONLY_CHOICES),
    "Members of each run to extract: aux_arrays.npz, checkpoints/, or all.")
_RATIOS = flags.DEFINE_list(
    "ratios", None, "Subset ratios to extract, e.g. 0.1,0.7 (default all).")
_RUNS = flags.DEFINE_list(
    "runs", None, "Run ids to extract, e.g. 0,1,2 (default all).")
_KEEP_ARCHIVE = flags.DEFINE_string(
    "keep_archive", None,
    "Also keep the verified archive at this path (or in this directory); an "
    "interrupted download resumes from PATH.part.")
_VERIFY_ONLY = flags.DEFINE_string(
    "verify_only", None, "Only check the MD5 of this local archive.")
_GCS_ENDPOINT = flags.DEFINE_string(
    "gcs_endpoint", None,
    "GCS endpoint URL (e.g. an emulator); default $STORAGE_EMULATOR_HOST or "
    "the real service.")
_RETRIES = flags.DEFINE_integer(
    "retries", 5, "Retries of a dropped connection before giving up.")
_BACKOFF = flags.DEFINE_float(
    "backoff", 1.0, "First retry delay in seconds; doubles per retry.")
_PROGRESS = flags.DEFINE_bool("progress", True, "Show a progress bar.")


def _parse_list(values, kind, flag):
  if values is None:
    return None
  try:
    parsed = [kind(v) for v in values if v.strip()]
  except ValueError:
    raise app.UsageError(f"--{flag}: cannot parse {values}") from None
  if not parsed:
    raise app.UsageError(f"--{flag} is empty; leave it out for all")
  return parsed


def _verify_only(path):
  if _MD5.value:
    md5 = _MD5.value
  else:
    name = _EXPERIMENT.value or os.path.basename(path).split(".tar.gz")[0]
    try:
      md5 = released.get(name).md5
    except ValueError as e:
      raise app.UsageError(f"{e}; pass --md5 or --experiment") from None
  actual = archive.verify_file(path, md5, progress=_PROGRESS.value)
  print(f"{path}: OK (MD5 {actual})")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  try:
    if _VERIFY_ONLY.value:
      _verify_only(_VERIFY_ONLY.value)
      return 0
    if not _EXPERIMENT.value or not _DEST.value:
      raise app.UsageError("--experiment and --dest are required")
    if _MD5.value is None and _EXPERIMENT.value not in released.EXPERIMENTS:
      raise app.UsageError(
          f"Unknown experiment {_EXPERIMENT.value!r} (known: "
          f"{', '.join(sorted(released.EXPERIMENTS))}); pass --md5 for others")
    result = archive.fetch(
        _EXPERIMENT.value, _DEST.value, source=_SOURCE.value,
        base_url=_BASE_URL.value, md5=_MD5.value, only=_ONLY.value,
        ratios=_parse_list(_RATIOS.value, float, "ratios"),
        runs=_parse_list(_RUNS.value, int, "runs"),
        keep_archive=_KEEP_ARCHIVE.value, gcs_endpoint=_GCS_ENDPOINT.value,
        retries=_RETRIES.value, backoff_s=_BACKOFF.value,
        progress=_PROGRESS.value)
  except (archive.ArchiveError, ValueError, OSError) as e:
    print(f"heldout_tf.download: error: {e}", file=sys.stderr)
    return 1
  print(result.summary())
  return 0


if __name__ == "__main__":
  app.run(main)
