r"""Benchmarks heldout_tf.estimates against a plain float64 numpy reference.

  python benchmarks/estimates.py [--imagenet_hard 8000] [--imagenet_slice 16000]
      [--load_runs 2000] [--runs 2000 --n_train 60000 --n_test 10000]
      [--stages mnist,load,imagenet]

1. MNIST scale (2000 runs x 60 000 train x 10 000 test, synthetic): times
   memorization, high-influence pairs and the dense influence against the
   float64 reference (same process), checks they agree (pairs set equal,
   values within 1e-6) and reports peak working memory (tracemalloc: numpy
   allocations made during the call, inputs excluded).
2. load_runs on --load_runs MNIST-size aux_arrays.npz files (every file
   through `runs.read_aux`, the bounded reader).
3. ImageNet scale (2000 x 1 281 167 x 50 000, inputs memory-mapped, 4 GB
   budget): the pairs extraction end to end where --imagenet_hard training
   examples are memorized, then a contiguous slice of --imagenet_slice rows
   all selected, to project the full run for larger memorized fractions.
"""

import os
import shutil
import sys
import tempfile
import threading
import time
import tracemalloc

from absl import app
from absl import flags
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from heldout_tf import estimates  # pylint: disable=g-import-not-at-top
from heldout_tf.collection import runs as runs_lib  # pylint: disable=g-import-not-at-top

counting = estimates.counting
estimators = estimates.estimators

_RUNS = flags.DEFINE_integer("runs", 2000, "Runs at MNIST scale.")
_N_TRAIN = flags.DEFINE_integer("n_train", 60_000, "MNIST-scale n_train.")
_N_TEST = flags.DEFINE_integer("n_test", 10_000, "MNIST-scale n_test.")
_LOAD_RUNS = flags.DEFINE_integer("load_runs", 2000,
                                  "aux_arrays.npz files to load (0: skip).")
_IMAGENET_HARD = flags.DEFINE_integer(
    "imagenet_hard", 8000,
    "Memorized training examples in the ImageNet-scale run (0: skip it).")
_IMAGENET_N_TRAIN = flags.DEFINE_integer(
    "imagenet_n_train", 1_281_167, "ImageNet-scale n_train (smaller: smoke).")
_IMAGENET_SLICE = flags.DEFINE_integer(
    "imagenet_slice", 16_000,
    "Train rows timed with all selected, to project larger fractions.")
_TMP = flags.DEFINE_string("tmp", None, "Scratch directory (default: TMPDIR).")
_STAGES = flags.DEFINE_list("stages", ["mnist", "load", "imagenet"],
                            "Stages to run, from mnist,load,imagenet.")

GB = 2**30


def measure(fn, *args, **kwargs):
  """(result, seconds, peak bytes of numpy/Python allocations during fn)."""
  tracemalloc.start()
  tracemalloc.reset_peak()
  start = time.perf_counter()
  result = fn(*args, **kwargs)
  seconds = time.perf_counter() - start
  peak = tracemalloc.get_traced_memory()[1]
  tracemalloc.stop()
  return result, seconds, peak


def synthetic(rng, num_runs, n_train, n_test, hard, ratio=0.7, out=None):
  """Runs where `hard` (bool [n_train]) examples are memorized.

  Easy examples are right 97% of the time held out; hard ones 0-70%. A fifth
  of the test examples copy a hard training example: right 90% of the time
  when the run trained on it, 30% otherwise. `out` may hold preallocated
  (memory-mapped) mask and correct_train.
  """
  mask, correct_train = out or (np.empty((num_runs, n_train), bool),
                                np.empty((num_runs, n_train), bool))
  p_out = np.where(hard, rng.random(n_train) * 0.7, 0.97).astype(np.float32)
  t_in = np.uint8(0.7 * 256)
  for rows in counting.chunks(num_runs, max(1, (64 << 20) // n_train)):
    shape = (rows.stop - rows.start, n_train)
    m = rng.integers(0, 256, shape, np.uint8) < t_in
    u = rng.random(shape, np.float32)
    mask[rows] = m
    correct_train[rows] = np.where(m, u < 0.99, u < p_out)
  hard_idx = np.flatnonzero(hard)
  copies = rng.random(n_test) < 0.2
  source = rng.choice(hard_idx, n_test)
  u = rng.random((num_runs, n_test), np.float32)
  trained = np.asarray(mask[:, source])
  correct_test = np.where(copies, np.where(trained, u < 0.9, u < 0.3),
                          u < 0.95)
  return mask, correct_train, correct_test


def reference(mask, correct_train, correct_test, infl_t, mem_t):
  """Plain float64 numpy: mem, dense infl [n_test, n_train], pairs."""
  m = mask.astype(np.float64)
  c = correct_train.astype(np.float64)
  n_in, n_out = m.sum(0), (1 - m).sum(0)
  mem = (m * c).sum(0) / n_in - ((1 - m) * c).sum(0) / n_out
  del c
  ct = correct_test.astype(np.float64)
  infl = ct.T @ m
  infl /= n_in
  np.subtract(1.0, m, out=m)  # In place: the held-out indicator.
  infl_out = ct.T @ m
  infl_out /= n_out
  infl -= infl_out
  del infl_out, m
  tt, tr = np.nonzero((infl >= infl_t) & (mem >= mem_t)[None, :])
  order = np.lexsort((tt, tr))
  tr, tt = tr[order], tt[order]
  pairs = dict(tr_idx=tr, tt_idx=tt, infl=infl[tt, tr], mem=mem[tr])
  return mem, infl, pairs


def ours(mask, correct_train, correct_test, infl_t, mem_t, budget):
  mem = estimates.memorization(mask, correct_train)
  pairs = estimates.high_influence_pairs(mask, correct_train, correct_test,
                                         infl_t, mem_t, memory_budget=budget)
  return mem, pairs


def mnist_scale():
  rng = np.random.default_rng(0)
  r, n, t = _RUNS.value, _N_TRAIN.value, _N_TEST.value
  print(f"== MNIST scale: {r} runs x {n} train x {t} test (synthetic) ==")
  hard = rng.random(n) < 0.1
  start = time.perf_counter()
  mask, correct_train, correct_test = synthetic(rng, r, n, t, hard)
  print(f"generated in {time.perf_counter() - start:.1f} s")
  infl_t, mem_t, budget = 0.15, 0.25, "4GB"

  (ref_mem, ref_infl, ref_pairs), ref_s, ref_peak = measure(
      reference, mask, correct_train, correct_test, infl_t, mem_t)
  print(f"reference (float64 numpy, mem + dense infl + pairs): {ref_s:.1f} s,"
        f" peak {ref_peak / GB:.2f} GB")

  (mem, pairs), pairs_s, pairs_peak = measure(
      ours, mask, correct_train, correct_test, infl_t, mem_t, budget)
  selected = int(np.sum(mem >= mem_t))
  print(f"ours mem + pairs ({selected} train rows with mem >= {mem_t}, "
        f"budget {budget}): {pairs_s:.2f} s, peak {pairs_peak / GB:.2f} GB")
  same = all(np.array_equal(pairs[k], ref_pairs[k])
             for k in ("tr_idx", "tt_idx"))
  print(f"  pairs: {len(pairs['tr_idx'])} (reference "
        f"{len(ref_pairs['tr_idx'])}), same set: {same}, max |d infl| "
        f"{np.max(np.abs(pairs['infl'] - ref_pairs['infl']), initial=0):.1e},"
        f" max |d mem| {np.nanmax(np.abs(mem - ref_mem)):.1e}")
  print(f"  speed-up {ref_s / pairs_s:.1f}x, peak memory "
        f"{pairs_peak / ref_peak:.3f} of the reference's")

  _, all_s, all_peak = measure(
      estimates.high_influence_pairs, mask, correct_train, correct_test,
      infl_t, -np.inf, memory_budget=budget)
  print(f"ours pairs, worst case (mem_threshold=-inf: all {n} rows): "
        f"{all_s:.1f} s, peak {all_peak / GB:.2f} GB -> speed-up "
        f"{ref_s / all_s:.1f}x")

  infl, infl_s, infl_peak = measure(estimates.influence, mask, correct_test)
  # Row blocks: a whole-matrix difference would take another 9.6 GB.
  diff = max(np.max(np.abs(infl[rows] - ref_infl[rows]))
             for rows in counting.chunks(t, 500))
  del infl, ref_infl
  print(f"ours dense influence (float32 [{t}, {n}]): {infl_s:.1f} s, peak "
        f"{infl_peak / GB:.2f} GB; max |d| vs reference {diff:.1e}; "
        f"speed-up {ref_s / infl_s:.1f}x")
  return dict(ref_s=ref_s, ref_peak=ref_peak, pairs_s=pairs_s,
              pairs_peak=pairs_peak, all_s=all_s, infl_s=infl_s,
              infl_peak=infl_peak, same=same, num_pairs=len(pairs["tr_idx"]))


def load_benchmark(tmp):
  num_runs, n, t = _LOAD_RUNS.value, _N_TRAIN.value, _N_TEST.value
  print(f"== load_runs: {num_runs} runs of {n} train / {t} test ==")
  rng = np.random.default_rng(1)
  root = os.path.join(tmp, "load")
  start = time.perf_counter()
  for run in range(num_runs):
    subset = rng.random(n) < 0.7
    train = np.flatnonzero(subset)
    removed = np.flatnonzero(~subset)
    runs_lib.write_aux(
        runs_lib.run_dir(root, "mnist", 0.7, run),
        correctness=dict(train=rng.random(len(train)) < 0.99,
                         removed=rng.random(len(removed)) < 0.9,
                         test=rng.random(t) < 0.95),
        index=dict(train=train, removed=removed, test=np.arange(t)),
        subsample_idx=train)
  print(f"wrote in {time.perf_counter() - start:.1f} s")
  loaded, load_s, _ = measure(estimates.load_runs, root, "mnist",
                              progress=False)
  print(f"load_runs: {load_s:.1f} s ({loaded.num_runs / load_s:.0f} runs/s)")
  shutil.rmtree(root)
  return dict(load_s=load_s, load_runs=num_runs)


class PeakAnonymousMemory:
  """Samples the process's anonymous RSS (not file-backed pages) in a thread.

  Unlike tracemalloc this also sees BLAS buffers; unlike ru_maxrss it
  excludes the memory-mapped inputs' page cache.
  """

  def __init__(self, interval=0.05):
    self.interval, self.peak = interval, 0
    self._done = threading.Event()
    self._thread = threading.Thread(target=self._run, daemon=True)

  @staticmethod
  def current() -> int:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith("RssAnon:"):
          return int(line.split()[1]) * 1024
    return 0

  def _run(self):
    while not self._done.wait(self.interval):
      self.peak = max(self.peak, self.current())

  def __enter__(self):
    self.peak = self.current()
    self._thread.start()
    return self

  def __exit__(self, *exc):
    self._done.set()
    self._thread.join()
    self.peak = max(self.peak, self.current())


def imagenet_scale(tmp):
  r, n, t, hard_n = 2000, _IMAGENET_N_TRAIN.value, 50_000, _IMAGENET_HARD.value
  slice_n = _IMAGENET_SLICE.value
  print(f"== ImageNet scale: {r} runs x {n} train x {t} test, {hard_n} "
        "memorized, inputs memory-mapped, budget 4GB ==")
  rng = np.random.default_rng(2)
  hard = np.zeros(n, bool)
  hard[rng.choice(n, hard_n, replace=False)] = True
  mm = [np.lib.format.open_memmap(os.path.join(tmp, f"{name}.npy"), "w+",
                                  bool, (r, n))
        for name in ("mask", "correct_train")]
  start = time.perf_counter()
  _, _, correct_test = synthetic(rng, r, n, t, hard, out=tuple(mm))
  for array in mm:
    array.flush()
  del mm
  print(f"generated {2 * r * n / GB:.1f} GB on disk in "
        f"{time.perf_counter() - start:.1f} s")
  mask = np.load(os.path.join(tmp, "mask.npy"), mmap_mode="r")
  correct_train = np.load(os.path.join(tmp, "correct_train.npy"),
                          mmap_mode="r")
  _, counts_s, _ = measure(estimates.counts, mask, correct_train)
  print(f"counts pass over all {n} columns: {counts_s:.1f} s")

  # End to end at full scale: every column, the memorized ones blocked.
  with PeakAnonymousMemory() as anon:
    pairs, pairs_s, peak = measure(
        estimates.high_influence_pairs, mask, correct_train, correct_test,
        0.15, 0.25, memory_budget="4GB")
  selected = len(np.unique(pairs["tr_idx"]))
  print(f"pairs end to end (mem_threshold 0.25): {pairs_s:.1f} s; "
        f"{len(pairs['tr_idx'])} pairs from {selected} train rows; working "
        f"memory peak {peak / GB:.2f} GB (tracemalloc), process anonymous "
        f"RSS peak {anon.peak / GB:.2f} GB incl. inputs (budget 4 GB)")

  # A contiguous slice with every row selected: the per-row cost of blocks.
  cols = slice(0, slice_n)
  with PeakAnonymousMemory() as anon_slice:
    _, slice_s, slice_peak = measure(
        estimates.high_influence_pairs, mask[:, cols], correct_train[:, cols],
        correct_test, 0.15, -np.inf, memory_budget="4GB")
  block = estimators.pairs_block_rows(r, n, t, 4 * GB, 64 << 20)
  per_row = slice_s / slice_n
  print(f"slice of {slice_n} train rows, all selected (mem_threshold=-inf):"
        f" {slice_s:.1f} s = {per_row * 1e3:.2f} ms per train row; block "
        f"{block} rows; working memory peak {slice_peak / GB:.2f} GB, "
        f"anonymous RSS peak {anon_slice.peak / GB:.2f} GB")
  projections = {}
  for fraction in (0.01, 0.1, 0.3, 1.0):
    projections[fraction] = counts_s + per_row * fraction * n
    print(f"  projected full run with {fraction:.0%} of train memorized "
          f"({int(fraction * n)} rows): "
          f"{projections[fraction] / 60:.1f} min")
  del mask, correct_train
  for name in ("mask", "correct_train"):
    os.unlink(os.path.join(tmp, f"{name}.npy"))
  return dict(pairs_s=pairs_s, counts_s=counts_s, per_row=per_row,
              peak=max(peak, slice_peak),
              anon_peak=max(anon.peak, anon_slice.peak),
              projections=projections, block=block)


def main(argv):
  del argv
  print(f"numpy {np.__version__}, {os.cpu_count()} CPUs, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
  stages = set(_STAGES.value)
  mnist = mnist_scale() if "mnist" in stages else None
  tmp = tempfile.mkdtemp(dir=_TMP.value, prefix="estimates-bench-")
  try:
    if _LOAD_RUNS.value and "load" in stages:
      load_benchmark(tmp)
    imagenet = (imagenet_scale(tmp) if _IMAGENET_HARD.value and
                "imagenet" in stages else None)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  if mnist is None:
    return
  speedup = mnist["ref_s"] / mnist["pairs_s"]
  memory = mnist["pairs_peak"] / mnist["ref_peak"]
  print("== targets ==")
  print(f"pairs >= 3x faster than the float64 reference: {speedup:.1f}x -> "
        f"{'met' if speedup >= 3 else 'NOT met'}")
  print(f"pairs peak memory <= 1/4 of the reference's: {memory:.3f} -> "
        f"{'met' if memory <= 0.25 else 'NOT met'}")
  print(f"pairs set equal to the reference's: {mnist['same']}")
  if imagenet:
    fits = imagenet["peak"] <= 4 * GB
    print(f"ImageNet-scale pairs within 4 GB: working memory peak "
          f"{imagenet['peak'] / GB:.2f} GB -> {'met' if fits else 'NOT met'}")


if __name__ == "__main__":
  app.run(main)
