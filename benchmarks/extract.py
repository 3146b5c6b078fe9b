r"""Benchmark: `--only aux` extraction vs copying the whole archive + tar xzf.

Generates a released-layout `<experiment>.tar.gz` of >= 1 GB in a temporary
directory (checkpoint-like float32 weights, which gzip barely shrinks, plus a
small aux_arrays.npz per run), then measures on the same file:

  * plain `gzip -dc archive > /dev/null` (decode baseline);
  * the kit: `python -m heldout_tf.cli.download --only aux --base_url <dir>`
    (stream once, MD5, inflate, walk the tar, stage and commit the aux files),
    and the same with `--only all` (everything extracted);
  * "download whole + tar xzf": `cp` the archive into the destination, then
    `tar xzf` it there.

Wall time, decode throughput (compressed bytes / s) and peak extra disk (the
largest disk usage of the destination directory, polled every few ms) are
printed with the kit / baseline ratios. Targets: kit peak disk <= 1% of the
archive; kit throughput >= 80% of plain gzip decoding.

  flock /tmp/bench.lock python benchmarks/extract.py [--archive_gb 1.05]
"""

import argparse
import hashlib
import io
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

# pylint: disable=g-import-not-at-top
from heldout_tf.collection import layout
from heldout_tf.synthetic import archives
# pylint: enable=g-import-not-at-top

EXPERIMENT = "cifar10-inception"
RATIOS = ("0.1", "0.7")
RUNS_PER_RATIO = 5
# gzip -6 keeps ~92% of float32 N(0, 0.05) weights.
FLOAT_GZIP_RATIO = 0.92
POLL_S = 0.005


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--archive_gb", type=float, default=1.05,
                      help="Approximate compressed archive size (GB).")
  parser.add_argument("--repeats", type=int, default=2,
                      help="Timed repeats of gzip and `--only aux` (best "
                      "kept).")
  parser.add_argument("--workdir",
                      help="Where to build the archive (default: a temp "
                      "dir).")
  return parser.parse_args(argv)


def _add(tar, name, data=None, size=None):
  info = tarfile.TarInfo(name)
  info.mode = 0o755 if data is None and size is None else 0o644
  if data is None and size is None:
    info.type = tarfile.DIRTYPE
    tar.addfile(info)
  else:
    info.size = len(data) if size is None else size
    tar.addfile(info, io.BytesIO(data) if size is None else data)


class _FloatStream(io.RawIOBase):
  """`size` bytes of float32 N(0, 0.05) weights, generated as read."""

  def __init__(self, rng, size):
    super().__init__()
    self._rng = rng
    self._left = size
    self._buf = b""
    self._pos = 0

  def readable(self):
    return True

  def read(self, n=-1):
    n = self._left if n is None or n < 0 else min(n, self._left)
    if self._pos == len(self._buf) and n:
      block = self._rng.standard_normal(1 << 22, dtype=np.float32) * 0.05
      self._buf, self._pos = block.tobytes(), 0
    out = self._buf[self._pos:self._pos + n]
    self._pos += len(out)
    self._left -= len(out)
    return out


def make_archive(directory, archive_gb, seed=0):
  """Writes `<directory>/<EXPERIMENT>.tar.gz`; returns (path, md5, n_aux)."""
  rng = np.random.default_rng(seed)
  n_runs = len(RATIOS) * RUNS_PER_RATIO
  ckpt_bytes = int(archive_gb * 1e9 / FLOAT_GZIP_RATIO / n_runs) // 4 * 4
  path = os.path.join(directory, f"{EXPERIMENT}.tar.gz")
  with open(path, "wb") as out:
    gz = subprocess.Popen(["gzip", "-6", "-n", "-c"], stdin=subprocess.PIPE,
                          stdout=out)
    with tarfile.open(fileobj=gz.stdin, mode="w|",
                      format=tarfile.GNU_FORMAT) as tar:
      _add(tar, EXPERIMENT)
      for ratio in RATIOS:
        _add(tar, f"{EXPERIMENT}/{ratio}")
        for run in range(RUNS_PER_RATIO):
          base = f"{EXPERIMENT}/{ratio}/{run}"
          _add(tar, base)
          _add(tar, f"{base}/checkpoints")
          _add(tar, f"{base}/checkpoints/checkpoint",
               b'model_checkpoint_path: "ckpt-100"\n')
          _add(tar, f"{base}/checkpoints/ckpt-100.index", rng.bytes(20_000))
          _add(tar, f"{base}/checkpoints/ckpt-100.data-00000-of-00001",
               _FloatStream(rng, ckpt_bytes), size=ckpt_bytes)
          # In the released archives aux_arrays.npz follows the checkpoints.
          _add(tar, f"{base}/{layout.AUX_FILENAME}",
               archives.aux_bytes(rng, n_train=50_000, n_test=10_000,
                                   ratio=float(ratio)))
    gz.stdin.close()
    if gz.wait():
      raise RuntimeError("gzip failed")
  digest = hashlib.md5()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(8 << 20), b""):
      digest.update(block)
  return path, digest.hexdigest(), n_runs


def disk_usage(root):
  """Bytes allocated on disk under `root` (0 if it does not exist)."""
  total = 0
  for dirpath, dirnames, filenames in os.walk(root):
    for name in dirnames + filenames:
      try:
        total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
      except FileNotFoundError:
        pass
  return total


class PeakDisk(threading.Thread):
  """Polls `disk_usage(root)` until stopped; `.peak` is the largest seen."""

  def __init__(self, root):
    super().__init__(daemon=True)
    self.root = root
    self.peak = 0
    self._stop_event = threading.Event()

  def run(self):
    while not self._stop_event.is_set():
      self.peak = max(self.peak, disk_usage(self.root))
      time.sleep(POLL_S)

  def __enter__(self):
    self.start()
    return self

  def __exit__(self, *args):
    self._stop_event.set()
    self.join()
    self.peak = max(self.peak, disk_usage(self.root))


def timed(cmd, dest=None, **kwargs):
  """Runs `cmd`; returns (seconds, peak disk usage of `dest`)."""
  with PeakDisk(dest or "/nonexistent") as peak:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, **kwargs)
    seconds = time.perf_counter() - start
  return seconds, peak.peak


def _gb(n):
  return f"{n / 1e9:.3f} GB"


def main(argv=None):
  args = parse_args(argv)
  parent = args.workdir or tempfile.gettempdir()
  free = shutil.disk_usage(parent).free
  need = 3.5 * args.archive_gb * 1e9
  if free < need:
    sys.exit(f"{parent}: {_gb(free)} free, need ~{_gb(need)}")
  work = tempfile.mkdtemp(prefix="heldout-bench-extract-", dir=parent)
  env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")
  try:
    src = os.path.join(work, "src")
    os.makedirs(src)
    start = time.perf_counter()
    path, md5, n_aux = make_archive(src, args.archive_gb)
    size = os.path.getsize(path)
    print(f"Generated {path}: {_gb(size)}, {n_aux} runs, in "
          f"{time.perf_counter() - start:.0f} s", flush=True)

    gzip_s = min(timed(["gzip", "-dc", path], stdout=subprocess.DEVNULL)[0]
                 for _ in range(args.repeats))
    print(f"gzip -dc > /dev/null: {gzip_s:.2f} s "
          f"({size / gzip_s / 1e6:.0f} MB/s)", flush=True)

    dest = os.path.join(work, "kit")

    def kit_run(only):
      shutil.rmtree(dest, ignore_errors=True)
      return timed(
          [sys.executable, "-m", "heldout_tf.cli.download", "--experiment",
           EXPERIMENT, "--root", dest, "--base_url", src, "--md5", md5,
           "--only", only, "--noprogress"], dest, env=env,
          stdout=subprocess.DEVNULL)

    kit_s, kit_peak = min(kit_run("aux") for _ in range(args.repeats))
    aux = [found for found in layout.list_runs(dest, EXPERIMENT)
           if os.path.isfile(os.path.join(found.path, layout.AUX_FILENAME))]
    assert len(aux) == n_aux, aux
    kit_final = disk_usage(dest)
    print(f"kit --only aux: {kit_s:.2f} s ({size / kit_s / 1e6:.0f} MB/s), "
          f"peak disk {kit_peak / 1e6:.1f} MB, final {kit_final / 1e6:.1f} MB",
          flush=True)
    all_s, all_peak = kit_run("all")
    print(f"kit --only all: {all_s:.2f} s, peak disk {_gb(all_peak)}",
          flush=True)
    shutil.rmtree(dest)

    # Download whole (here: copy) + tar xzf, into one destination.
    dest = os.path.join(work, "tar")
    os.makedirs(dest)
    with PeakDisk(dest) as peak:
      start = time.perf_counter()
      subprocess.run(["cp", path, dest], check=True)
      copy_s = time.perf_counter() - start
      subprocess.run(["tar", "xzf", os.path.basename(path)], cwd=dest,
                     check=True)
      base_s = time.perf_counter() - start
    base_peak = peak.peak
    print(f"cp + tar xzf: {base_s:.2f} s (cp {copy_s:.2f} s), peak disk "
          f"{_gb(base_peak)}", flush=True)
    shutil.rmtree(dest)

    throughput = gzip_s / kit_s
    disk_frac = kit_peak / size
    print()
    print(f"machine: {platform.node()} {platform.processor() or ''} "
          f"{os.cpu_count()} cpus, Python {platform.python_version()}")
    print(f"archive: {_gb(size)}, {n_aux} aux files")
    print(f"{'':24}{'wall s':>9}{'MB/s':>9}{'peak disk':>14}")
    for name, s, disk in [("gzip -dc > /dev/null", gzip_s, None),
                          ("kit --only aux", kit_s, kit_peak),
                          ("kit --only all", all_s, all_peak),
                          ("cp + tar xzf", base_s, base_peak)]:
      disk_text = "-" if disk is None else f"{disk / 1e6:.1f} MB"
      print(f"{name:24}{s:9.2f}{size / s / 1e6:9.0f}{disk_text:>14}")
    print(f"kit throughput / gzip -dc: {throughput:.2f} (target >= 0.80: "
          f"{'met' if throughput >= 0.8 else 'NOT met'})")
    print(f"kit peak disk / archive:   {disk_frac:.4%} (target <= 1%: "
          f"{'met' if disk_frac <= 0.01 else 'NOT met'})")
    print(f"kit --only aux / cp + tar xzf: wall {kit_s / base_s:.2f}, peak "
          f"disk {kit_peak / base_peak:.4f}")
    print(f"kit --only all / cp + tar xzf: wall {all_s / base_s:.2f}, peak "
          f"disk {all_peak / base_peak:.2f}")
  finally:
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
  main()
