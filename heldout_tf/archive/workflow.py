"""`fetch`: stream `<experiment>.tar.gz` once, verify, extract selected runs.

The workflow over the other modules: skip the download when everything
requested is on disk (`staging.committed_runs`, `staging.manifest_runs`);
otherwise lock `dest`, open the source (`transport`), read it once
(`stream`), write the selected members (`extraction`, by the `members`
rules) into staging, check the MD5 (`checksums`) and commit (`staging`).
"""

import dataclasses
import os
import time

from absl import logging

from heldout_tf.core import errors
from heldout_tf.core import progress as progress_lib
from heldout_tf.collection import layout
from heldout_tf.core import sizes
from heldout_tf.archive import checksums
from heldout_tf.archive import extraction as extraction_lib
from heldout_tf.archive import members
from heldout_tf.archive import staging as staging_lib
from heldout_tf.archive import stream
from heldout_tf.archive import transport
from heldout_tf.archive.exceptions import ArchiveError
from heldout_tf.archive.exceptions import ChecksumError



@dataclasses.dataclass
class FetchResult:
  """What `fetch` did."""
  experiment: str
  dest: str
  md5: str
  downloaded: bool = False
  archive_bytes: int = 0
  committed: list = dataclasses.field(default_factory=list)
  already_committed: list = dataclasses.field(default_factory=list)
  # `(ratio_name, run, [kinds])`: selected runs lacking requested parts in the
  # archive. A run with none of the requested parts gets no directory.
  incomplete_runs: list = dataclasses.field(default_factory=list)
  files: int = 0
  bytes_written: int = 0
  ignored_members: list = dataclasses.field(default_factory=list)
  # Warnings about non-canonical ratio/run directory names in the archive.
  skipped_names: list = dataclasses.field(default_factory=list)
  missing_ratios: list = dataclasses.field(default_factory=list)
  missing_runs: list = dataclasses.field(default_factory=list)
  kept_archive: str = None
  seconds: float = 0.0

  def summary(self) -> str:
    lines = []
    if self.downloaded:
      rate = self.archive_bytes / max(self.seconds, 1e-9)
      lines.append(f"Streamed {sizes.format_bytes(self.archive_bytes)} in "
                   f"{self.seconds:.1f} s ({sizes.format_bytes(rate)}/s); "
                   f"MD5 {self.md5} verified.")
    else:
      lines.append("Nothing to download: every requested run is already "
                   f"extracted in {self.dest}.")
    lines.append(f"Committed {len(self.committed)} run(s) ({self.files} "
                 f"files, {sizes.format_bytes(self.bytes_written)}) under "
                 f"{os.path.join(self.dest, self.experiment)}; "
                 f"{len(self.already_committed)} already there.")
    lines.extend(_listed(f"{ratio}/{run}" for ratio, run in self.committed))
    if self.incomplete_runs:
      lines.append(
          f"Warning: {len(self.incomplete_runs)} run(s) lack requested parts "
          "in the archive (a run with none of them gets no directory):")
      lines.extend(_listed(
          f"{ratio}/{run}: no "
          f"{', '.join(members.EXPECTED_PARTS[k] for k in kinds)}"
          for ratio, run, kinds in self.incomplete_runs))
    if self.skipped_names:
      lines.append(
          f"Warning: skipped {len(self.skipped_names)} directory name(s) in "
          "the archive that are not canonical (ratios like 0.7, runs like "
          "3):")
      lines.extend(_listed(self.skipped_names))
    if self.missing_ratios:
      lines.append(f"Not in the archive: ratio(s) {self.missing_ratios}")
    if self.missing_runs:
      lines.append(f"Not in the archive: run id(s) {self.missing_runs}")
    if self.ignored_members:
      lines.append(f"Ignored {len(self.ignored_members)} member(s) outside "
                   f"<experiment>/<ratio>/<run>/, e.g. "
                   f"{self.ignored_members[0]!r}")
    if self.kept_archive:
      lines.append(f"Kept the verified archive at {self.kept_archive}")
    return "\n".join(lines)


def _listed(items, limit=20):
  """Indented lines for `items`, the first `limit` of them."""
  items = list(items)
  lines = [f"  {item}" for item in items[:limit]]
  if len(items) > limit:
    lines.append(f"  ... and {len(items) - limit} more")
  return lines


def fetch(experiment, dest, *, source="gs", base_url=None, md5=None,
          only="all", ratios=None, runs=None, keep_archive=None,
          gcs_endpoint=None, retries=5, backoff_s=1.0, progress=True,
          max_member_size=None):
  """Streams `<experiment>.tar.gz`, verifies its MD5, extracts selected runs.

  Args:
    experiment: released experiment name (the archive's top directory).
    dest: root directory; runs land in `<dest>/<experiment>/<ratio>/<run>/`.
    source: 'gs' or 'https'; picks the default `base_url`.
    base_url: directory holding the archive: gs://bucket/prefix,
      http(s)://host/prefix, file:///dir or a local directory.
    md5: expected hex MD5 of the archive; default from `heldout_tf.collection.released`.
    only: 'all', 'aux' (aux_arrays.npz) or 'checkpoints' (checkpoints/).
    ratios: subset ratios to extract (floats or strings); None for all.
    runs: run ids to extract; None for all.
    keep_archive: also keep the verified archive at this path (or in this
      directory); a partial `<path>.part` from an earlier attempt is resumed.
    gcs_endpoint: GCS endpoint (emulator) URL; default STORAGE_EMULATOR_HOST
      or the real service.
    retries: retries per stall of a dropped connection.
    backoff_s: first retry delay; doubles on each consecutive retry.
    progress: show a progress bar.
    max_member_size: `{kind: bytes or '4GiB'}` raising (or lowering) the
      per-kind limits of `members.DEFAULT_SIZE_LIMITS` ('aux', 'index',
      'data', 'other'), or a dict from `members.parse_size_limits`.

  Returns:
    A FetchResult. Selected runs that lack a requested part in the archive
    are listed in `incomplete_runs`; a run with none of the requested parts
    gets no directory. Non-canonical directory names are skipped and listed
    in `skipped_names`.

  Raises:
    ChecksumError: the MD5 does not match; `dest` is left as it was.
    UnsafeMemberError: a member is a link/device/sparse file or escapes the
      layout.
    MemberTooLargeError, DiskSpaceError: a selected member is over its
      kind's limit, or larger than the free space; nothing of it is written.
    AmbiguousMemberError: two names in the archive mean one selected run.
    DestinationBusyError: another download holds `dest`.
    DownloadError, ArchiveError: the archive cannot be read or decoded.
    errors.PathError: `dest` cannot be written.
    errors.UsageError: a bad argument.
  """
  layout.experiment_name(experiment)  # Runs land in <dest>/<experiment>.
  selection = members.Selection.parse(only, ratios, runs)
  limits = members.size_limits(max_member_size)
  md5 = checksums.expected_md5(experiment, md5)
  result = FetchResult(experiment=experiment, dest=dest, md5=md5)
  committed = staging_lib.committed_runs(dest, experiment, md5)
  if _all_on_disk(dest, experiment, md5, selection, committed, result):
    return result

  keep_path = _keep_path(keep_archive, experiment)
  with staging_lib.locked_dest(dest):
    # Now that no other download can change it: what is committed.
    committed = staging_lib.committed_runs(dest, experiment, md5)
    src, reused = _open_archive(experiment, source, base_url, md5, keep_path,
                                gcs_endpoint)
    if reused:
      keep_path = None  # Read from, not written to.
      result.kept_archive = reused
    with staging_lib.staging_dir(dest, experiment) as staging:
      with checksums.discarding_bad_kept_bytes(md5, reused, keep_path):
        extraction = extraction_lib.Extraction(
            staging, experiment, selection, committed, limits, result)
        actual = _stream(src, keep_path, extraction, retries=retries,
                         backoff_s=backoff_s, progress=progress)
        checksums.check_md5(actual, md5, src.url, dest, reused)
      if keep_path:
        os.replace(keep_path + checksums.PART_SUFFIX, keep_path)
        result.kept_archive = keep_path
      with errors.user_path(dest, "write"):
        _commit(staging, dest, extraction, md5)
        staging_lib.write_manifest(dest, experiment, md5,
                                   extraction.in_archive)
  _note_absent(result, selection, extraction.in_archive)
  return result


def _all_on_disk(dest, experiment, md5, selection, committed, result):
  """Fills `result` and returns True if no download is needed.

  Known from an earlier pass's manifest of the archive's runs, or when
  explicit ratios and run ids are all committed.
  """
  in_archive = staging_lib.manifest_runs(dest, experiment, md5)
  if in_archive is None:
    if selection.ratios is None or selection.runs is None:
      return False
    every_kind = (None, members.KINDS_FOR_ONLY["all"])  # Unknown: assume all.
    in_archive = {(r, n): every_kind
                  for r in selection.ratios for n in selection.runs}
  requested = {k: v for k, v in in_archive.items() if selection.wants(k)}
  if not requested:
    raise ArchiveError(
        f"no run of {experiment} matches ratios="
        f"{sorted(selection.ratios or [])} runs="
        f"{sorted(selection.runs or [])}; the archive has ratios "
        f"{sorted({r for r, _ in in_archive})}")
  if any(selection.pending(present, frozenset(committed.get(key, {})))
         for key, (_, present) in requested.items()):
    return False
  for key in sorted(requested):
    ratio_name, present = requested[key]
    _note_missing_parts(result, selection, ratio_name, key[1], present)
    if selection.kinds & present & frozenset(committed.get(key, {})):
      result.already_committed.append(key)
  _note_absent(result, selection, in_archive)
  return True


def _note_missing_parts(result, selection, ratio_name, run, present):
  """Records a selected run that lacks requested parts in the archive."""
  missing = selection.missing(present)
  if missing:
    result.incomplete_runs.append((ratio_name, run, missing))


def _note_absent(result, selection, in_archive):
  """Records selected ratios and run ids the archive does not have."""
  result.missing_ratios = sorted(
      (selection.ratios or set()) - {r for r, _ in in_archive})
  result.missing_runs = sorted(
      (selection.runs or set()) - {n for _, n in in_archive})


def _keep_path(keep_archive, experiment):
  if keep_archive and os.path.isdir(keep_archive):
    return os.path.join(keep_archive, f"{experiment}.tar.gz")
  return keep_archive


def _open_archive(experiment, source, base_url, md5, keep_path, gcs_endpoint):
  """The archive to read: a complete kept copy, else the remote one.

  Returns `(source, path of the kept copy or None)`.
  """
  url = transport.archive_url(experiment, source, base_url)
  if keep_path and os.path.isfile(keep_path):
    logging.info("Reading the kept archive %s instead of %s.", keep_path, url)
    src = transport.LocalSource(keep_path)
    return src, src.url
  src = transport.open_source(url, gcs_endpoint)
  if src.advertised_md5 and src.advertised_md5 != md5:
    raise ChecksumError(f"{url}: the server reports MD5 {src.advertised_md5}, "
                        f"expected {md5}; not downloading. Check --md5 / "
                        "--experiment.")
  return src, None


def _resume_part(part, src):
  """`(source, offset)`: `src` continued after a partial download `part`."""
  if (os.path.isfile(part) and src.size is not None and
      os.path.getsize(part) <= src.size):
    src = transport.ResumedSource(part, src)
    logging.info("Resuming %s from byte %d.", part, src.part_size)
    return src, src.part_size
  return src, 0


def _stream(src, keep_path, extraction, *, retries, backoff_s, progress):
  """Reads `src` once, extracting with `extraction`; returns the hex MD5.

  With `keep_path`, the bytes also go to `<keep_path>.part` (resumed if it
  holds an earlier attempt's first bytes).
  """
  result = extraction.result
  keep_file, keep_offset = None, 0
  if keep_path:
    part = keep_path + checksums.PART_SUFFIX
    src, keep_offset = _resume_part(part, src)
    with errors.user_path(part, "write"):
      keep_file = open(part, "ab" if keep_offset else "wb")
  try:
    start = time.time()
    with progress_lib.bar(src.size, f"{extraction.experiment}.tar.gz",
                          unit="B", enabled=progress, unit_scale=True) as bar:
      reader = stream.Reader(src, keep_file, keep_offset, retries, backoff_s,
                             bar)
      reader.start()
      try:
        extraction.run(stream.Inflater(reader))
      finally:
        reader.stop.set()
        reader.join(timeout=transport.HTTP_TIMEOUT_S)
    result.downloaded = True
    result.archive_bytes = reader.offset
    result.seconds = time.time() - start
    if keep_file is not None:
      keep_file.flush()
      os.fsync(keep_file.fileno())
  finally:
    if keep_file is not None:
      keep_file.close()
  return reader.md5.hexdigest()


def _commit(staging, dest, extraction, md5):
  """Moves each staged run into `dest` and records it as committed."""
  result, selection = extraction.result, extraction.selection
  for key in sorted(extraction.in_archive):
    if not selection.wants(key):
      continue
    ratio_name, present = extraction.in_archive[key]
    _note_missing_parts(result, selection, ratio_name, key[1], present)
    have = extraction.committed.get(key, {})
    if not selection.pending(present, frozenset(have)):
      if selection.kinds & present & frozenset(have):
        result.already_committed.append(key)
      continue  # Nothing to write: no directory for a run lacking it all.
    run = key[1]
    files = {**have, **extraction.written.get(key, {})}
    marker = {"archive_md5": md5, "kinds": sorted(files), "files": files}
    staging_lib.commit_run(
        os.path.join(staging, extraction.experiment, ratio_name, str(run)),
        os.path.join(dest, extraction.experiment, ratio_name, str(run)),
        marker)
    result.committed.append((ratio_name, run))


