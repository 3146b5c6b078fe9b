"""Tests for heldout_tf.archive and the heldout_tf.cli.download CLI (loopback)."""

import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import threading

import pytest

# First: sets gcsfs's plain-filesystem switch before anything loads gcsfs.
from heldout_tf.synthetic import servers  # pylint: disable=unused-import
from heldout_tf import archive
from heldout_tf.core import errors
from heldout_tf.core import files
from heldout_tf.collection import layout
from heldout_tf.collection import experiments as experiments_lib
from heldout_tf.collection import runs as runs_lib
from heldout_tf.core import sizes
from heldout_tf import synthetic

EXP = synthetic.EXPERIMENT
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def released(tmp_path_factory):
  """A small released-layout archive: 2 ratios x 3 runs."""
  files = synthetic.layout_files()
  path, data, md5 = synthetic.write_archive(
      str(tmp_path_factory.mktemp("src")), files)
  return dict(files=files, path=path, dir=os.path.dirname(path), data=data,
              md5=md5)


def _fetch(dest, base_url, md5, **kwargs):
  kwargs.setdefault("progress", False)
  kwargs.setdefault("backoff_s", 0.01)
  return archive.fetch(EXP, str(dest), base_url=base_url, md5=md5, **kwargs)


def _extracted(dest):
  """Extracted member files (markers and manifest left out)."""
  return {k: v for k, v in synthetic.snapshot(str(dest)).items()
          if v != "dir" and not os.path.basename(k).startswith(".heldout")}


def _expected(files, ratios=None, run_ids=None, only="all"):
  kinds = archive.KINDS_FOR_ONLY[only]
  out = {}
  for name, data in files.items():
    _, ratio, run, *sub = name.split("/")
    if ratios is not None and ratio not in ratios:
      continue
    if run_ids is not None and int(run) not in run_ids:
      continue
    kind = ("aux" if sub == [layout.AUX_FILENAME] else
            "checkpoints" if sub[0] == "checkpoints" else "other")
    if kind in kinds:
      out[name] = data
  return out


def test_local_extract_all_matches_archive(released, tmp_path):
  result = _fetch(tmp_path / "d", released["dir"], released["md5"])
  assert _extracted(tmp_path / "d") == released["files"]
  assert result.downloaded and result.archive_bytes == len(released["data"])
  assert len(result.committed) == 6
  assert [r.ratio_name for r in layout.list_runs(str(tmp_path / "d"), EXP)] == [
      "0.1"] * 3 + ["0.7"] * 3
  # The staging directory is gone.
  assert sorted(os.listdir(tmp_path / "d")) == [EXP]


@pytest.mark.parametrize("only,ratios,run_ids", [
    ("aux", None, None),
    ("checkpoints", ["0.7"], None),
    ("all", None, [1]),
    ("aux", ["0.1"], [0, 2]),
])
def test_filters(released, tmp_path, only, ratios, run_ids):
  base_url = "file://" + released["dir"]
  _fetch(tmp_path, base_url, released["md5"], only=only,
         ratios=None if ratios is None else [float(r) for r in ratios],
         runs=run_ids)
  expected = _expected(released["files"], ratios, run_ids, only)
  assert expected and _extracted(tmp_path) == expected


def test_missing_ratios_and_runs_are_reported(released, tmp_path):
  result = _fetch(tmp_path, released["dir"], released["md5"], only="aux",
                  ratios=[0.1, 0.3], runs=[0, 9])
  assert result.missing_ratios == [0.3] and result.missing_runs == [9]
  assert "ratio(s) [0.3]" in result.summary()
  assert _extracted(tmp_path) == _expected(released["files"], ["0.1"], [0],
                                           "aux")


def test_aux_files_are_readable(released, tmp_path):
  _fetch(tmp_path, released["dir"], released["md5"], only="aux")
  for found in layout.list_runs(str(tmp_path), EXP):
    aux = runs_lib.read_aux(found.path)
    assert set(runs_lib.AUX_KEYS) <= set(aux)


def test_http_drop_and_resume_gives_identical_bytes(released, tmp_path):
  objects = {f"/bucket/{EXP}.tar.gz": released["data"]}
  with synthetic.FaultyServer(objects) as server:
    server.drops = [70_000, 1, 120_000]
    result = _fetch(tmp_path / "d", server.url + "/bucket", released["md5"],
                    keep_archive=str(tmp_path / "kept.tar.gz"))
    gets = [r for m, _, r in server.requests if m == "GET"]
  assert _extracted(tmp_path / "d") == released["files"]
  with open(tmp_path / "kept.tar.gz", "rb") as f:
    assert f.read() == released["data"]
  assert result.kept_archive == str(tmp_path / "kept.tar.gz")
  assert gets == [None, "bytes=70000-", "bytes=70001-", "bytes=190001-"]


def test_http_gives_up_after_bounded_retries_and_rerun_succeeds(
    released, tmp_path):
  objects = {f"/x/{EXP}.tar.gz": released["data"]}
  dest = tmp_path / "d"
  dest.mkdir()
  (dest / "mine.txt").write_text("user file")
  before = synthetic.snapshot(str(dest))
  with synthetic.FaultyServer(objects) as server:
    server.drops = [10_000, 0, 0]  # Progress, then two stalls in a row.
    with pytest.raises(archive.DownloadError, match="after 2 retries"):
      _fetch(dest, server.url + "/x", released["md5"], retries=2)
    assert synthetic.snapshot(str(dest)) == before
    gets = [r for m, _, r in server.requests if m == "GET"]
    assert gets == [None, "bytes=10000-", "bytes=10000-"]
    server.drops = []
    _fetch(dest, server.url + "/x", released["md5"])
  assert _extracted(dest) == {"mine.txt": b"user file", **released["files"]}


def test_http_server_ignoring_range_is_an_error(released, tmp_path):
  with synthetic.FaultyServer({f"/{EXP}.tar.gz": released["data"]}) as server:
    server.drops, server.honor_range = [5000], False
    with pytest.raises(archive.DownloadError, match="ignored the byte-range"):
      _fetch(tmp_path / "d", server.url, released["md5"])
  assert not (tmp_path / "d").exists()


def test_keep_archive_resumes_from_partial_file(released, tmp_path):
  keep = tmp_path / "keep"
  keep.mkdir()
  cut = len(released["data"]) // 3
  (keep / f"{EXP}.tar.gz.part").write_bytes(released["data"][:cut])
  with synthetic.FaultyServer({f"/{EXP}.tar.gz": released["data"]}) as server:
    _fetch(tmp_path / "d", server.url, released["md5"], keep_archive=str(keep),
           only="aux")
    gets = [r for m, _, r in server.requests if m == "GET"]
  assert gets == [f"bytes={cut}-"]
  assert (keep / f"{EXP}.tar.gz").read_bytes() == released["data"]
  assert not (keep / f"{EXP}.tar.gz.part").exists()
  assert _extracted(tmp_path / "d") == _expected(released["files"], only="aux")
  # A complete kept archive is used without touching the network.
  result = _fetch(tmp_path / "d2", "http://127.0.0.1:9", released["md5"],
                  keep_archive=str(keep))
  assert result.kept_archive == str(keep / f"{EXP}.tar.gz")
  assert _extracted(tmp_path / "d2") == released["files"]


def _populated_dest(tmp_path, released):
  """A dest with one committed run and a user file; returns it + snapshot."""
  dest = tmp_path / "d"
  _fetch(dest, released["dir"], released["md5"], only="aux", ratios=[0.1],
         runs=[0])
  (dest / "notes.txt").write_text("keep me")
  return dest, synthetic.snapshot(str(dest))


def test_wrong_md5_is_refused_and_dest_untouched(released, tmp_path):
  dest, before = _populated_dest(tmp_path, released)
  wrong = hashlib.md5(b"something else").hexdigest()
  with pytest.raises(archive.ChecksumError, match="MD5 mismatch") as e:
    _fetch(dest, released["dir"], wrong, keep_archive=str(tmp_path / "k"))
  assert released["md5"] in str(e.value) and wrong in str(e.value)
  assert synthetic.snapshot(str(dest)) == before
  assert not os.path.exists(tmp_path / "k.part")
  assert not os.path.exists(tmp_path / "k")


@pytest.mark.parametrize("where", [0.3, 0.97])
def test_corrupted_byte_is_refused_and_dest_untouched(released, tmp_path,
                                                      where):
  dest, before = _populated_dest(tmp_path, released)
  with synthetic.FaultyServer({f"/{EXP}.tar.gz": released["data"]}) as server:
    server.corrupt_at = int(len(released["data"]) * where)
    with pytest.raises(archive.ArchiveError,
                       match="MD5 mismatch|corrupt|not a valid tar"):
      _fetch(dest, server.url, released["md5"],
             keep_archive=str(tmp_path / "k.tar.gz"))
  assert synthetic.snapshot(str(dest)) == before
  assert not os.path.exists(tmp_path / "k.tar.gz.part")


def test_flipped_byte_in_stored_data_is_refused(tmp_path):
  """A byte flipped inside a stored (uncompressed) gzip block is caught."""
  files = synthetic.layout_files(ratios=("0.5",), run_ids=(0,))
  good = synthetic.gzip_bytes(synthetic.tar_bytes(files), level=0)
  bad = bytearray(good)
  bad[len(bad) // 2] ^= 0x01  # Inside a stored block: gzip CRC catches it.
  src = tmp_path / "src"
  src.mkdir()
  (src / f"{EXP}.tar.gz").write_bytes(bytes(bad))
  with pytest.raises(archive.ArchiveError, match="corrupt|MD5 mismatch"):
    _fetch(tmp_path / "d", str(src), hashlib.md5(good).hexdigest())
  assert not (tmp_path / "d").exists()


def _malicious(kind):
  base = f"{EXP}/0.1/0"
  info = tarfile.TarInfo(f"{base}/aux_arrays.npz")
  if kind == "absolute":
    info.name = "/tmp/heldout_evil"
  elif kind == "dotdot":
    info.name = f"{base}/../../../../evil"
  elif kind == "symlink":
    info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
  elif kind == "hardlink":
    info.type, info.linkname = tarfile.LNKTYPE, f"{base}/checkpoints/x"
  elif kind == "chardev":
    info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
  elif kind == "blockdev":
    info.type, info.devmajor, info.devminor = tarfile.BLKTYPE, 8, 0
  elif kind == "fifo":
    info.type = tarfile.FIFOTYPE
  data = b"evil" if info.type == tarfile.REGTYPE else None
  if data:
    info.size = len(data)
  return info, data


@pytest.mark.parametrize("kind", ["absolute", "dotdot", "symlink", "hardlink",
                                  "chardev", "blockdev", "fifo"])
def test_malicious_members_are_refused(tmp_path, kind):
  info, data = _malicious(kind)
  files = synthetic.layout_files(ratios=("0.1",), run_ids=(0,), ckpt_bytes=1000)
  src = tmp_path / "src"
  _, _, md5 = synthetic.write_archive(str(src), files, [(info, data)])
  dest = tmp_path / "d"
  dest.mkdir()
  with pytest.raises(archive.UnsafeMemberError) as e:
    _fetch(dest, str(src), md5)
  assert repr(info.name) in str(e.value)
  assert os.listdir(dest) == []
  assert not os.path.exists("/tmp/heldout_evil")


def test_members_outside_layout_are_ignored(tmp_path):
  files = synthetic.layout_files(ratios=("0.1",), run_ids=(0,), ckpt_bytes=1000)
  stray = {f"{EXP}/README.txt": b"hi", "other/0.1/0/aux_arrays.npz": b"x",
           f"{EXP}/0.1/notarun/f": b"y", f"{EXP}/0.1/\u00b2/f": b"z",
           f"{EXP}/nan?/0/f": b"w"}
  src = tmp_path / "src"
  _, _, md5 = synthetic.write_archive(str(src), {**stray, **files})
  result = _fetch(tmp_path / "d", str(src), md5)
  assert _extracted(tmp_path / "d") == files
  assert sorted(result.ignored_members) == sorted(stray)


def test_rerun_skips_committed_runs(released, tmp_path):
  dest = tmp_path / "d"
  first = _fetch(dest, released["dir"], released["md5"], only="aux",
                 ratios=[0.1])
  assert len(first.committed) == 3
  aux = dest / EXP / "0.1" / "1" / "aux_arrays.npz"
  inode = os.stat(aux).st_ino

  second = _fetch(dest, released["dir"], released["md5"], only="aux")
  assert sorted(second.committed) == [("0.7", 0), ("0.7", 1), ("0.7", 2)]
  assert len(second.already_committed) == 3 and second.files == 3
  assert os.stat(aux).st_ino == inode

  # Everything requested is on disk and the manifest lists the archive's
  # runs: no download at all (the source is gone).
  os.rename(released["path"], released["path"] + ".away")
  try:
    third = _fetch(dest, released["dir"], released["md5"], only="aux")
    assert not third.downloaded and len(third.already_committed) == 6
    assert "Nothing to download" in third.summary()
    with pytest.raises(archive.DownloadError, match="not found"):
      _fetch(dest, released["dir"], released["md5"], only="checkpoints",
             runs=[2])
    with pytest.raises(archive.ArchiveError, match=r"no run .* \[0.1, 0.7\]"):
      _fetch(dest, released["dir"], released["md5"], ratios=[0.3])
  finally:
    os.rename(released["path"] + ".away", released["path"])

  # Upgrading aux -> all adds checkpoints without rewriting aux.
  fourth = _fetch(dest, released["dir"], released["md5"], only="all",
                  runs=[1])
  assert fourth.files == 4  # 2 checkpoint files x 2 ratios.
  assert os.stat(aux).st_ino == inode
  assert _extracted(dest) == {
      **_expected(released["files"], only="aux"),
      **_expected(released["files"], run_ids=[1])}


def test_stale_staging_from_a_crash_is_cleaned(released, tmp_path):
  dest = tmp_path / "d"
  stale = dest / f"{archive.STAGING_PREFIX}{EXP}-crashed" / EXP / "0.1"
  stale.mkdir(parents=True)
  (stale / "junk").write_bytes(b"half")
  _fetch(dest, released["dir"], released["md5"], only="aux", runs=[0])
  assert sorted(os.listdir(dest)) == [EXP]


def test_multi_member_gzip(tmp_path):
  files = synthetic.layout_files(ratios=("0.2",), run_ids=(0, 1), ckpt_bytes=5000)
  tar = synthetic.tar_bytes(files)
  data = synthetic.gzip_bytes(tar[:7000]) + synthetic.gzip_bytes(tar[7000:])
  (tmp_path / "src").mkdir()
  (tmp_path / "src" / f"{EXP}.tar.gz").write_bytes(data)
  _fetch(tmp_path / "d", str(tmp_path / "src"), hashlib.md5(data).hexdigest())
  assert _extracted(tmp_path / "d") == files


def test_truncated_archive_is_refused(released, tmp_path):
  (tmp_path / "src").mkdir()
  cut = released["data"][:len(released["data"]) - 100]
  (tmp_path / "src" / f"{EXP}.tar.gz").write_bytes(cut)
  with pytest.raises(archive.ArchiveError, match="truncated"):
    _fetch(tmp_path / "d", str(tmp_path / "src"), hashlib.md5(cut).hexdigest())
  assert not (tmp_path / "d").exists()


def test_gcs_emulator(released, tmp_path, monkeypatch):
  # Many ranged GETs.
  monkeypatch.setattr(archive.transport, "GCS_CHUNK_BYTES", 50_000)
  with synthetic.gcs_emulator() as endpoint:
    fs = archive.transport.gcs_filesystem(endpoint)
    fs.pipe(f"bucket/ckpts/{EXP}.tar.gz", released["data"])
    # Two ranged reads fail (a stall, then after progress): resumed from the
    # current offset with the same MD5 and decompressor state.
    # (fsspec caches filesystem instances: the kit gets this same `fs`.)
    cat_file = fs.cat_file
    starts = []
    fail_at = {0: 1, 150_000: 1}

    def flaky_cat_file(path, start=None, end=None, **kwargs):
      starts.append(start)
      if fail_at.get(start):
        fail_at[start] -= 1
        raise ConnectionResetError("injected")
      return cat_file(path, start=start, end=end, **kwargs)

    monkeypatch.setattr(fs, "cat_file", flaky_cat_file)
    result = _fetch(tmp_path / "d", "gs://bucket/ckpts", released["md5"],
                    gcs_endpoint=endpoint, only="aux", ratios=[0.7])
    assert result.archive_bytes == len(released["data"])
    assert starts[:6] == [0, 0, 50_000, 100_000, 150_000, 150_000]
    assert _extracted(tmp_path / "d") == _expected(
        released["files"], ratios=["0.7"], only="aux")
    monkeypatch.undo()

    # The CLI, in a process where gcsfs may pick its zonal/HNS filesystem:
    # the kit's reads must not wait on that filesystem's gRPC bucket probe.
    env = {k: v for k, v in os.environ.items()
           if k != "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"}
    proc = _cli("--experiment", EXP, "--root", str(tmp_path / "c"),
                "--base_url", "gs://bucket/ckpts", "--gcs_endpoint", endpoint,
                "--md5", released["md5"], "--only", "aux", "--runs", "1",
                "--noprogress", env=env, timeout=40)
    assert proc.returncode == 0, proc.stderr
    assert _extracted(tmp_path / "c") == _expected(
        released["files"], run_ids=[1], only="aux")
    # The object's stored MD5 disagrees with --md5: refused before download.
    wrong = hashlib.md5(b"x").hexdigest()
    with pytest.raises(archive.ChecksumError, match="server reports"):
      _fetch(tmp_path / "e", "gs://bucket/ckpts", wrong, gcs_endpoint=endpoint)
    with pytest.raises(archive.DownloadError, match="not found"):
      _fetch(tmp_path / "e", "gs://bucket/none", wrong, gcs_endpoint=endpoint)
  assert not (tmp_path / "e").exists()


def test_verify_file(released):
  assert archive.verify_file(released["path"], released["md5"],
                             progress=False) == released["md5"]
  with pytest.raises(archive.ChecksumError, match=released["path"]):
    archive.verify_file(released["path"], "0" * 32, progress=False)


def test_registry_sums_match_checksums_md5():
  """--md5 defaults to the registry, which must agree with checksums.md5."""
  with open(os.path.join(REPO, "checksums.md5")) as f:
    listed = dict(reversed(line.split()) for line in f if line.strip())
  assert listed == {e.archive: e.md5 for e in experiments_lib.RELEASED.values()}


def test_archive_url():
  assert archive.archive_url(EXP, "gs") == (
      f"gs://gresearch/heldout-training-checkpoints/{EXP}.tar.gz")
  assert archive.archive_url(EXP, "https").startswith(
      "https://storage.googleapis.com/gresearch/")
  assert archive.archive_url(EXP, base_url="/a/b/") == f"/a/b/{EXP}.tar.gz"


def _cli(*args, env=None, timeout=120):
  env = dict(os.environ if env is None else env, PYTHONPATH=REPO,
             TF_CPP_MIN_LOG_LEVEL="2")
  return subprocess.run([sys.executable, "-m", "heldout_tf.cli.download", *args],
                        capture_output=True, text=True, env=env,
                        timeout=timeout, cwd=REPO)


def test_cli_end_to_end(released, tmp_path):
  with synthetic.FaultyServer({f"/h/{EXP}.tar.gz": released["data"]}) as server:
    server.drops = [50_000]
    proc = _cli("--experiment", EXP, "--root", str(tmp_path / "d"),
                "--source", "https", "--base_url", server.url + "/h",
                "--md5", released["md5"], "--only", "aux", "--ratios", "0.1",
                "--runs", "0,2", "--backoff", "0.01")
    assert proc.returncode == 0, proc.stderr
    assert "Committed 2 run(s)" in proc.stdout
    assert _extracted(tmp_path / "d") == _expected(
        released["files"], ["0.1"], [0, 2], "aux")

    proc = _cli("--experiment", EXP, "--root", str(tmp_path / "e"),
                "--base_url", server.url + "/h", "--md5", "f" * 32,
                "--noprogress")
    assert proc.returncode == 1
    assert "MD5 mismatch" in proc.stderr and "f" * 32 in proc.stderr
    assert not (tmp_path / "e").exists()

  proc = _cli("--verify_only", released["path"], "--md5", released["md5"])
  assert proc.returncode == 0 and "OK" in proc.stdout
  # The file is named like a released archive: its default sum is the
  # released one, which this small archive does not match.
  proc = _cli("--verify_only", released["path"])
  assert proc.returncode == 1 and "MD5 mismatch" in proc.stderr


def _within(seconds, fn):
  """Runs `fn()` in a thread; fails (instead of hanging) if it takes longer."""
  outcome = {}

  def target():
    try:
      outcome["value"] = fn()
    except BaseException as e:  # pylint: disable=broad-except
      outcome["error"] = e

  thread = threading.Thread(target=target, daemon=True)
  thread.start()
  thread.join(seconds)
  assert not thread.is_alive(), f"still running after {seconds} s (hung?)"
  if "error" in outcome:
    raise outcome["error"]
  return outcome["value"]


def test_tar_without_end_blocks_does_not_hang(tmp_path):
  files = synthetic.layout_files(ratios=("0.2",), run_ids=(0,), ckpt_bytes=5000)
  data = synthetic.gzip_bytes(synthetic.tar_bytes(files, end_blocks=False))
  (tmp_path / "src").mkdir()
  (tmp_path / "src" / f"{EXP}.tar.gz").write_bytes(data)
  _within(30, lambda: _fetch(tmp_path / "d", str(tmp_path / "src"),
                             hashlib.md5(data).hexdigest()))
  assert _extracted(tmp_path / "d") == files


def test_complete_part_file_is_not_fetched_again(released, tmp_path):
  keep = tmp_path / f"{EXP}.tar.gz"
  (tmp_path / f"{EXP}.tar.gz.part").write_bytes(released["data"])
  with synthetic.FaultyServer({f"/{EXP}.tar.gz": released["data"]}) as server:
    result = _fetch(tmp_path / "d", server.url, released["md5"],
                    keep_archive=str(keep), only="aux", retries=1)
    gets = [r for m, _, r in server.requests if m == "GET"]
  assert gets == []  # A range past the end would be HTTP 416.
  assert result.kept_archive == str(keep)
  assert keep.read_bytes() == released["data"]
  assert not (tmp_path / f"{EXP}.tar.gz.part").exists()
  assert _extracted(tmp_path / "d") == _expected(released["files"], only="aux")


def test_damaged_kept_archive_is_moved_aside(released, tmp_path):
  keep = tmp_path / f"{EXP}.tar.gz"
  bad = released["data"] + bytes(512)  # Zero padding: only the MD5 differs.
  keep.write_bytes(bad)
  with pytest.raises(archive.ChecksumError, match="kept archive") as e:
    _fetch(tmp_path / "d", released["dir"], released["md5"],
           keep_archive=str(keep))
  assert str(keep) in str(e.value) and ".bad" in str(e.value)
  assert not keep.exists()
  assert (tmp_path / f"{EXP}.tar.gz.bad").read_bytes() == bad
  assert not (tmp_path / "d").exists()
  # The re-run the message asks for downloads the archive again.
  result = _fetch(tmp_path / "d", released["dir"], released["md5"],
                  keep_archive=str(keep))
  assert keep.read_bytes() == released["data"]
  assert result.kept_archive == str(keep)
  assert _extracted(tmp_path / "d") == released["files"]


def test_corrupt_kept_archive_is_moved_aside(released, tmp_path):
  keep = tmp_path / f"{EXP}.tar.gz"
  bad = bytearray(released["data"])
  bad[len(bad) // 2] ^= 0xFF  # The inflater fails before the MD5 is known.
  keep.write_bytes(bytes(bad))
  with pytest.raises(archive.ChecksumError, match="kept archive"):
    _fetch(tmp_path / "d", released["dir"], released["md5"],
           keep_archive=str(keep))
  assert (tmp_path / f"{EXP}.tar.gz.bad").read_bytes() == bytes(bad)
  assert not keep.exists() and not (tmp_path / "d").exists()


def test_empty_selection_is_refused(released, tmp_path):
  for kwargs in (dict(ratios=[]), dict(runs=[])):
    with pytest.raises(ValueError, match="empty"):
      _fetch(tmp_path / "d", released["dir"], released["md5"], **kwargs)
  assert not (tmp_path / "d").exists()


def test_gcs_without_gcsfs_is_a_download_error(monkeypatch):
  monkeypatch.setitem(sys.modules, "gcsfs", None)  # Import fails.
  with pytest.raises(archive.DownloadError, match="needs gcsfs"):
    archive.open_source("gs://bucket/x.tar.gz")


def test_cli_errors_without_traceback(released, tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("not a directory")
  proc = _cli("--experiment", EXP, "--root", str(blocker / "d"),
              "--base_url", released["dir"], "--md5", released["md5"],
              "--noprogress")
  assert proc.returncode == 1, proc.stderr
  assert "error:" in proc.stderr and str(blocker) in proc.stderr
  assert "Traceback" not in proc.stderr
  for flag in ("--ratios=", "--runs="):
    proc = _cli("--experiment", EXP, "--root", str(tmp_path / "d"),
                "--base_url", released["dir"], "--md5", released["md5"], flag)
    assert proc.returncode == 2
    assert f"error: {flag[:-1]}: nothing in ''" in proc.stderr
    assert "Traceback" not in proc.stderr
  assert not (tmp_path / "d").exists()


def _archive_without(tmp_path, *left_out):
  """A 2 ratios x 2 runs archive without the members `left_out`."""
  files = synthetic.layout_files(ratios=("0.1", "0.7"), run_ids=(0, 1),
                          ckpt_bytes=1000)
  for name in left_out:
    del files[name]
  path, _, md5 = synthetic.write_archive(str(tmp_path / "src"), files)
  return files, path, md5


@pytest.mark.parametrize("only,left_out,missing", [
    ("aux", [layout.AUX_FILENAME], ["aux"]),
    ("checkpoints", ["checkpoints/ckpt-10.index",
                     "checkpoints/ckpt-10.data-00000-of-00001"],
     ["checkpoints"]),
])
def test_run_without_the_requested_part_gets_no_directory(tmp_path, only,
                                                          left_out, missing):
  files, path, md5 = _archive_without(
      tmp_path, *[f"{EXP}/0.7/1/{name}" for name in left_out])
  src, dest = os.path.dirname(path), tmp_path / "d"
  result = _fetch(dest, src, md5, only=only)
  assert not (dest / EXP / "0.7" / "1").exists()
  assert [(r.ratio_name, r.run) for r in layout.list_runs(str(dest), EXP)] == [
      ("0.1", 0), ("0.1", 1), ("0.7", 0)]
  assert _extracted(dest) == _expected(files, only=only)
  assert len(result.committed) == 3
  assert result.incomplete_runs == [("0.7", 1, missing)]
  part = archive.EXPECTED_PARTS[missing[0]]
  assert "Warning: 1 run(s) lack requested parts" in result.summary()
  assert f"  0.7/1: no {part}" in result.summary()

  # A re-run knows from the manifest that nothing more can be had.
  os.rename(path, path + ".away")
  try:
    again = _fetch(dest, src, md5, only=only)
  finally:
    os.rename(path + ".away", path)
  assert not again.downloaded and len(again.already_committed) == 3
  assert again.incomplete_runs == [("0.7", 1, missing)]
  assert f"  0.7/1: no {part}" in again.summary()

  # Asking for all of that run writes what it has, still with the warning.
  full = _fetch(dest, src, md5, ratios=[0.7], runs=[1])
  assert full.committed == [("0.7", 1)]
  assert full.incomplete_runs == [("0.7", 1, missing)]
  assert _extracted(dest) == {**_expected(files, only=only),
                              **_expected(files, ["0.7"], [1])}


def test_cli_warns_about_runs_without_aux(tmp_path):
  _, path, md5 = _archive_without(tmp_path, f"{EXP}/0.1/0/aux_arrays.npz")
  proc = _cli("--experiment", EXP, "--root", str(tmp_path / "d"),
              "--base_url", os.path.dirname(path), "--md5", md5,
              "--only", "aux", "--noprogress")
  assert proc.returncode == 0, proc.stderr
  assert "Committed 3 run(s)" in proc.stdout
  assert "0.1/0: no aux_arrays.npz" in proc.stdout
  assert not (tmp_path / "d" / EXP / "0.1" / "0").exists()


def test_nothing_to_download_still_reports_absent_ratios(released, tmp_path):
  _fetch(tmp_path, released["dir"], released["md5"], only="aux")
  result = _fetch(tmp_path, "/nonexistent", released["md5"], only="aux",
                  ratios=[0.1, 0.3], runs=[0, 9])
  assert not result.downloaded
  assert result.missing_ratios == [0.3] and result.missing_runs == [9]
  assert "ratio(s) [0.3]" in result.summary()


def test_manifest_without_kinds_and_malformed_records(released, tmp_path):
  _fetch(tmp_path, released["dir"], released["md5"], only="aux")
  manifest = tmp_path / EXP / archive.MANIFEST_FILENAME
  # A manifest from before kinds were recorded: every kind counts as there.
  manifest.write_text(json.dumps({
      "archive_md5": released["md5"],
      "runs": [[r, n] for r in ("0.1", "0.7") for n in range(3)]}))
  result = _fetch(tmp_path, "/nonexistent", released["md5"], only="aux")
  assert not result.downloaded and len(result.already_committed) == 6
  assert not result.incomplete_runs
  # Malformed records are ignored (the archive is read again), not a crash.
  manifest.write_text(json.dumps({"archive_md5": released["md5"], "runs": 5}))
  marker = tmp_path / EXP / "0.1" / "0" / archive.MARKER_FILENAME
  marker.write_text("[]")
  result = _fetch(tmp_path, released["dir"], released["md5"], only="aux")
  assert result.downloaded and result.committed == [("0.1", 0)]
  assert _extracted(tmp_path) == _expected(released["files"], only="aux")


def test_non_finite_ratio_directories_are_ignored(tmp_path):
  files = synthetic.layout_files(ratios=("0.1",), run_ids=(0,), ckpt_bytes=1000)
  stray = {f"{EXP}/nan/0/aux_arrays.npz": b"x", f"{EXP}/inf/0/f": b"y"}
  _, _, md5 = synthetic.write_archive(str(tmp_path / "src"), {**files, **stray})
  result = _fetch(tmp_path / "d", str(tmp_path / "src"), md5)
  assert result.committed == [("0.1", 0)]
  assert sorted(result.ignored_members) == sorted(stray)
  assert _extracted(tmp_path / "d") == files


def test_staging_is_locked_from_the_moment_it_is_visible(tmp_path):
  pytest.importorskip("fcntl")
  dest = tmp_path / "d"
  dest.mkdir()
  with archive.staging.staging_dir(str(dest), EXP) as staging:
    assert os.path.basename(staging).startswith(archive.STAGING_PREFIX)
    assert os.listdir(dest) == [os.path.basename(staging)]
    assert files.try_lock(staging) is files.BUSY  # Held: not removable.
    archive.staging.remove_stale_staging(str(dest), EXP)
    assert os.path.isdir(staging)
  assert os.listdir(dest) == []


def test_stale_staging_is_removed_where_locks_are_unsupported(
    released, tmp_path, monkeypatch):
  fcntl = pytest.importorskip("fcntl")
  dest = tmp_path / "d"
  stale = dest / f"{archive.STAGING_PREFIX}{EXP}-crashed"
  (stale / "x").mkdir(parents=True)

  def no_locks(fd, operation):
    raise OSError(errno.ENOLCK, "No locks available")

  monkeypatch.setattr(fcntl, "flock", no_locks)
  _fetch(dest, released["dir"], released["md5"], only="aux", runs=[0])
  assert sorted(os.listdir(dest)) == [EXP]


def test_staging_of_a_live_download_is_left_alone(released, tmp_path):
  fcntl = pytest.importorskip("fcntl")
  dest = tmp_path / "d"
  live = dest / f"{archive.STAGING_PREFIX}{EXP}-live"
  (live / "x").mkdir(parents=True)
  fd = os.open(live, os.O_RDONLY)  # As a concurrent fetch holds it.
  try:
    fcntl.flock(fd, fcntl.LOCK_EX)
    _fetch(dest, released["dir"], released["md5"], only="aux", runs=[0])
    assert (live / "x").is_dir()
  finally:
    os.close(fd)
  # Once unlocked it is stale: the next run removes it.
  _fetch(dest, released["dir"], released["md5"], only="aux", runs=[1])
  assert sorted(os.listdir(dest)) == [EXP]


def test_sizes_are_formatted_in_binary_units():
  assert [sizes.format_bytes(n) for n in (0, 512, 1536, 3 * 2**30)] == [
      "0 B", "512 B", "1.5 KiB", "3.0 GiB"]
  result = archive.FetchResult(EXP, "/d", "0" * 32, downloaded=True,
                               archive_bytes=3 * 2**30, seconds=2.0,
                               bytes_written=5 * 2**20)
  assert "Streamed 3.0 GiB in 2.0 s (1.5 GiB/s)" in result.summary()
  assert "(0 files, 5.0 MiB)" in result.summary()


# ------------------------------------------------ issue 11: size, disk ---


def _one_run_archive(tmp_path, extra_members=(), ckpt_bytes=1000, **files):
  """A 1-run archive (+ `extra_members`); returns (files, source dir, md5)."""
  files = {**synthetic.layout_files(ratios=("0.1",), run_ids=(0,),
                             ckpt_bytes=ckpt_bytes), **files}
  src = tmp_path / "src"
  _, _, md5 = synthetic.write_archive(str(src), files, extra_members)
  return files, str(src), md5


@pytest.mark.parametrize("fmt", ["gnu", "pax"])
def test_sparse_member_is_refused_before_writing(tmp_path, fmt):
  name = f"{EXP}/0.1/1/{layout.AUX_FILENAME}"
  sparse = synthetic.sparse_member(name, declared_size=8 * 2**20, fmt=fmt)
  _, src, md5 = _one_run_archive(tmp_path, [sparse])
  assert os.path.getsize(os.path.join(src, f"{EXP}.tar.gz")) < 10_000
  dest = tmp_path / "d"
  with pytest.raises(archive.UnsafeMemberError, match="sparse") as e:
    _fetch(dest, src, md5)
  assert repr(name) in str(e.value)
  assert not dest.exists()


def test_other_member_types_are_refused(tmp_path):
  info = tarfile.TarInfo(f"{EXP}/0.1/0/checkpoints/extra")
  info.type = tarfile.CONTTYPE
  info.size = 4
  _, src, md5 = _one_run_archive(tmp_path, [(info, b"data")])
  with pytest.raises(archive.UnsafeMemberError, match="tar type") as e:
    _fetch(tmp_path / "d", src, md5)
  assert repr(info.name) in str(e.value)


def test_gzip_bomb_is_refused_by_the_member_size_limit(tmp_path):
  bomb = f"{EXP}/0.1/1/{layout.AUX_FILENAME}"
  files, src, md5 = _one_run_archive(tmp_path, **{bomb: bytes(4 * 2**20)})
  dest = tmp_path / "d"
  with pytest.raises(archive.MemberTooLargeError) as e:
    _fetch(dest, src, md5, max_member_size={"aux": "1MiB"})
  assert repr(bomb) in str(e.value) and "--max_member_size aux=" in str(e.value)
  assert not dest.exists()
  # Members not selected are not limited; a raised limit lets it through.
  _fetch(dest, src, md5, only="checkpoints",
         max_member_size={"aux": "1MiB"})
  result = _fetch(dest, src, md5, max_member_size={"aux": "8MiB"})
  assert result.committed == [("0.1", 0), ("0.1", 1)]  # Their aux files.
  assert _extracted(dest) == files


@pytest.mark.parametrize("kind,sub,size", [
    ("index", "checkpoints/ckpt-10.index", 2**20),
    ("data", "checkpoints/ckpt-10.data-00000-of-00001", 2**21),
    ("other", "notes.txt", 2**20),
])
def test_each_kind_has_its_limit(tmp_path, kind, sub, size):
  name = f"{EXP}/0.1/3/{sub}"
  _, src, md5 = _one_run_archive(tmp_path, **{name: bytes(size)})
  with pytest.raises(archive.MemberTooLargeError, match=f"for {kind} members"):
    _fetch(tmp_path / "d", src, md5, max_member_size={kind: size - 1})
  _fetch(tmp_path / "d", src, md5, max_member_size={kind: size})


def test_size_limits_parse():
  limits = archive.parse_size_limits("aux=1GiB, data=4GiB")
  assert limits == {**archive.DEFAULT_SIZE_LIMITS, "aux": 2**30,
                    "data": 4 * 2**30}
  assert archive.parse_size_limits(None) == archive.DEFAULT_SIZE_LIMITS
  for bad, match in [("weights=1GiB", "unknown member kind 'weights'"),
                     ("aux", "KIND=SIZE"), ("aux=lots", "cannot parse"),
                     ("data=0", "must be positive")]:
    with pytest.raises(errors.UsageError, match=match) as e:
      archive.parse_size_limits(bad)
    assert "--max_member_size" in str(e.value)


def test_member_larger_than_free_space_is_refused(released, tmp_path,
                                                  monkeypatch):
  real = shutil.disk_usage

  def nearly_full(path):
    return real(path)._replace(free=50_000)  # Aux files fit, data does not.

  monkeypatch.setattr(shutil, "disk_usage", nearly_full)
  dest = tmp_path / "d"
  _fetch(dest, released["dir"], released["md5"], only="aux")
  with pytest.raises(archive.DiskSpaceError) as e:
    _fetch(dest, released["dir"], released["md5"], only="checkpoints")
  target = os.path.join(str(dest), EXP, "0.1", "0", "checkpoints",
                        "ckpt-10.data-00000-of-00001")
  assert target in str(e.value)
  assert "needs 58.6 KiB, 48.8 KiB free" in str(e.value)
  assert _extracted(dest) == _expected(released["files"], only="aux")


# --------------------------------------------- issue 11: layout names ---


@pytest.mark.parametrize("twin_first", [False, True])
def test_non_canonical_twin_of_a_selected_ratio_is_an_error(tmp_path,
                                                            twin_first):
  files = synthetic.layout_files(ratios=("0.1", "0.7"), run_ids=(0,),
                          ckpt_bytes=100)
  twin = {f"{EXP}/0.70/0/{layout.AUX_FILENAME}": b"which one?"}
  ordered = {**twin, **files} if twin_first else {**files, **twin}
  _, _, md5 = synthetic.write_archive(str(tmp_path / "src"), ordered)
  with pytest.raises(archive.AmbiguousMemberError, match="'0.70'.*'0.7'"):
    _fetch(tmp_path / "d", str(tmp_path / "src"), md5)
  with pytest.raises(layout.LayoutError):  # The layout's own error, too.
    _fetch(tmp_path / "d", str(tmp_path / "src"), md5, ratios=[0.7])
  assert not (tmp_path / "d").exists()
  # Its canonical twin not selected: skipped with a warning.
  result = _fetch(tmp_path / "d", str(tmp_path / "src"), md5, ratios=[0.1])
  assert result.committed == [("0.1", 0)]
  assert any("0.70" in line for line in result.skipped_names)


def test_non_canonical_run_twin_is_an_error(tmp_path):
  files = synthetic.layout_files(ratios=("0.1",), run_ids=(0, 1), ckpt_bytes=100)
  twin = {f"{EXP}/0.1/00/{layout.AUX_FILENAME}": b"x"}
  _, _, md5 = synthetic.write_archive(str(tmp_path / "src"), {**files, **twin})
  with pytest.raises(archive.AmbiguousMemberError, match="'00'.*'0'"):
    _fetch(tmp_path / "d", str(tmp_path / "src"), md5)
  result = _fetch(tmp_path / "d", str(tmp_path / "src"), md5, runs=[1])
  assert result.committed == [("0.1", 1)]


def test_non_canonical_names_are_skipped_and_listed(tmp_path):
  files = synthetic.layout_files(ratios=("0.1",), run_ids=(0,), ckpt_bytes=100)
  stray = {f"{EXP}/0.70/0/{layout.AUX_FILENAME}": b"a",
           f"{EXP}/0.1/02/{layout.AUX_FILENAME}": b"b",
           f"{EXP}/1/0/{layout.AUX_FILENAME}": b"c"}
  _, _, md5 = synthetic.write_archive(str(tmp_path / "src"), {**files, **stray})
  result = _fetch(tmp_path / "d", str(tmp_path / "src"), md5)
  assert _extracted(tmp_path / "d") == files
  assert result.committed == [("0.1", 0)]
  assert sorted(result.ignored_members) == sorted(stray)
  summary = result.summary()
  assert "skipped 3 directory name(s)" in summary
  for where in (f"{EXP}/0.70/", f"{EXP}/0.1/02/", f"{EXP}/1/"):
    assert where in summary


# ------------------------------------- issue 11: markers are not trusted ---


@pytest.mark.parametrize("removed", ["checkpoints", layout.AUX_FILENAME,
                                     "checkpoints/ckpt-10.index"])
def test_deleted_files_of_a_committed_run_are_extracted_again(
    released, tmp_path, removed):
  dest = tmp_path / "d"
  _fetch(dest, released["dir"], released["md5"])
  path = dest / EXP / "0.1" / "1" / removed
  if path.is_dir():
    shutil.rmtree(path)
  else:
    path.unlink()
  result = _fetch(dest, released["dir"], released["md5"])
  assert result.downloaded and result.committed == [("0.1", 1)]
  assert len(result.already_committed) == 5
  assert _extracted(dest) == released["files"]
  # A file cut short counts as missing too.
  path = dest / EXP / "0.7" / "2" / layout.AUX_FILENAME
  path.write_bytes(path.read_bytes()[:100])
  again = _fetch(dest, released["dir"], released["md5"], only="aux")
  assert again.committed == [("0.7", 2)]
  assert _extracted(dest) == released["files"]


# --------------------------------- issue 11: concurrency and bad --dest ---


def test_concurrent_download_into_one_dest_is_refused(released, tmp_path):
  dest = tmp_path / "d"
  with synthetic.FaultyServer({f"/{EXP}.tar.gz": released["data"]}) as server:
    server.hold_at = len(released["data"]) // 2
    first = threading.Thread(
        target=lambda: _fetch(dest, server.url, released["md5"], only="aux"),
        daemon=True)
    first.start()
    try:
      _within(20, lambda: _wait_for_staging(dest))
      with pytest.raises(archive.ArchiveError, match="another download") as e:
        _fetch(dest, server.url, released["md5"], only="checkpoints")
      assert isinstance(e.value, archive.DestinationBusyError)
      assert str(dest) in str(e.value)
    finally:
      server.release.set()
      first.join(20)
  assert _extracted(dest) == _expected(released["files"], only="aux")
  _fetch(dest, released["dir"], released["md5"], only="checkpoints")
  assert _extracted(dest) == released["files"]


def _wait_for_staging(dest):
  while not (dest.is_dir() and any(
      n.startswith(archive.STAGING_PREFIX) for n in os.listdir(dest))):
    threading.Event().wait(0.02)


def _error_lines(stderr):
  return [line for line in stderr.splitlines() if line.startswith("error:")]


def test_cli_concurrent_dest_file_dest_and_unwritable_dest(released,
                                                           tmp_path):
  fcntl = pytest.importorskip("fcntl")
  common = ("--experiment", EXP, "--base_url", released["dir"], "--md5",
            released["md5"], "--noprogress")
  dest = tmp_path / "busy"
  dest.mkdir()
  fd = os.open(dest, os.O_RDONLY)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX)  # As a download in another process does.
    proc = _cli(*common, "--root", str(dest))
  finally:
    os.close(fd)
  assert proc.returncode == 1 and "Traceback" not in proc.stderr
  assert len(_error_lines(proc.stderr)) == 1, proc.stderr
  assert "another download" in proc.stderr and str(dest) in proc.stderr
  assert os.listdir(dest) == []

  blocker = tmp_path / "file"
  blocker.write_text("x")
  proc = _cli(*common, "--root", str(blocker))
  assert proc.returncode == 1 and "Traceback" not in proc.stderr
  assert _error_lines(proc.stderr) == [
      f"error: cannot write {blocker}: not a directory"]


def test_unwritable_dest_is_a_path_error(released, tmp_path, monkeypatch):
  parent = tmp_path / "ro"
  parent.mkdir()
  real_makedirs = os.makedirs

  def read_only(path, *args, **kwargs):
    if str(path).startswith(str(parent)):
      raise PermissionError(errno.EACCES, "Permission denied", str(path))
    return real_makedirs(path, *args, **kwargs)

  monkeypatch.setattr(os, "makedirs", read_only)
  with pytest.raises(errors.PathError,
                     match=f"cannot write {parent / 'd'}: Permission denied"):
    _fetch(parent / "d", released["dir"], released["md5"])


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0,
                    reason="root writes to read-only directories")
def test_cli_read_only_dest(released, tmp_path):
  parent = tmp_path / "ro"
  parent.mkdir()
  parent.chmod(0o500)
  try:
    proc = _cli("--experiment", EXP, "--root", str(parent / "d"),
                "--base_url", released["dir"], "--md5", released["md5"],
                "--noprogress")
  finally:
    parent.chmod(0o700)
  assert proc.returncode == 1 and "Traceback" not in proc.stderr
  assert _error_lines(proc.stderr) == [
      f"error: cannot write {parent / 'd'}: Permission denied"]


# ------------------------------------------ issue 11: fail fast offline ---


@pytest.mark.parametrize("scheme", ["gs", "http"])
def test_cli_unreachable_source_fails_fast_with_one_error_line(tmp_path,
                                                               scheme):
  port = synthetic.free_port()  # Nothing listens: the connection is refused.
  where = (("--base_url", "gs://bucket/x", "--gcs_endpoint",
            f"http://127.0.0.1:{port}") if scheme == "gs" else
           ("--base_url", f"http://127.0.0.1:{port}/x"))
  env = {k: v for k, v in os.environ.items()
         if k != "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"}
  # gcsfs alone would retry for ~35 s, logging tracebacks.
  proc = _cli("--experiment", EXP, "--root", str(tmp_path / "d"), *where,
              "--noprogress", env=env, timeout=20)
  assert proc.returncode == 1
  assert "Traceback" not in proc.stderr, proc.stderr
  lines = _error_lines(proc.stderr)
  assert len(lines) == 1 and f"127.0.0.1:{port}" in lines[0], proc.stderr
  assert not (tmp_path / "d").exists()


# ------------------------------------------------------- issue 11: CLI ---


def test_download_cli_imports_neither_tensorflow_nor_flags():
  code = ("import sys; from absl import flags; "
          "import heldout_tf.cli.download, heldout_tf.archive; "
          "heldout_tf.cli.download.build_parser().parse_args(['--experiment', 'x']); "
          "print(sorted(m for m in sys.modules "
          "if m.split('.')[0] in ('tensorflow', 'sonnet', 'keras')), "
          "'experiment' in flags.FLAGS)")
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True,
                        text=True, cwd=REPO, timeout=60,
                        env=dict(os.environ, PYTHONPATH=REPO))
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.split() == ["[]", "False"]


def _run_cli_in_process(capsys, *args):
  """`python -m heldout_tf.cli.download ARGS` in this process: (code, stderr)."""
  from heldout_tf import cli  # pylint: disable=g-import-not-at-top
  from heldout_tf.cli import download  # pylint: disable=g-import-not-at-top
  with pytest.raises(SystemExit) as e:
    cli.run(download.main, list(args))
  return e.value.code, capsys.readouterr().err


def test_cli_flag_errors(released, tmp_path, capsys):
  common = ("--experiment", EXP, "--root", str(tmp_path / "d"), "--base_url",
            released["dir"], "--md5", released["md5"], "--noprogress")
  for flags, message in [
      (("--retries", "-1"), "--retries must be >= 0"),
      (("--backoff", "nan"), "--backoff must be >= 0"),
      (("--max_member_size", "weights=1GiB"), "--max_member_size"),
      (("--max_member_size", "aux=lots"), "--max_member_size aux"),
      (("--runs", "0,abc"), "--runs"), (("--runs", "3-1"), "--runs"),
      (("--ratios", "0.1,2"), "--ratios")]:
    code, stderr = _run_cli_in_process(capsys, *common, *flags)
    lines = _error_lines(stderr)
    assert code == 2 and len(lines) == 1 and message in lines[0], stderr
  code, stderr = _run_cli_in_process(capsys, *common, "--max_member_size",
                                     "aux=1KiB", "--only", "aux")
  assert code == 1 and "over the 1.0 KiB limit" in stderr
  assert not (tmp_path / "d").exists()


def test_cli_run_ids_and_ratios_as_everywhere(released, tmp_path, capsys):
  """`--runs 02` is run 2 and `--ratios 0.70` ratio 0.7, as in evaluate."""
  code, stderr = _run_cli_in_process(
      capsys, "--experiment", EXP, "--root", str(tmp_path / "d"),
      "--base_url", released["dir"], "--md5", released["md5"], "--noprogress",
      "--only", "aux", "--ratios", "0.70", "--runs", "02")
  assert code == 0, stderr
  assert _extracted(tmp_path / "d") == _expected(
      released["files"], ["0.7"], [2], "aux")
  code, stderr = _run_cli_in_process(
      capsys, "--experiment", EXP, "--root", str(tmp_path / "e"),
      "--base_url", released["dir"], "--md5", released["md5"], "--noprogress",
      "--only", "aux", "--ratios", "0.1", "--runs", "0-1")
  assert code == 0, stderr
  assert _extracted(tmp_path / "e") == _expected(
      released["files"], ["0.1"], [0, 1], "aux")


def test_cli_progress_in_a_redirected_log_is_plain_lines(released, tmp_path):
  proc = subprocess.run(  # Bytes: text mode would turn '\r' into '\n'.
      [sys.executable, "-m", "heldout_tf.cli.download", "--experiment", EXP,
       "--root", str(tmp_path / "d"), "--base_url", released["dir"], "--md5",
       released["md5"], "--only", "aux"], capture_output=True, cwd=REPO,
      env=dict(os.environ, PYTHONPATH=REPO), timeout=120)
  assert proc.returncode == 0, proc.stderr
  assert b"\r" not in proc.stderr
  assert f"{EXP}.tar.gz: ".encode() in proc.stderr  # The closing line.
