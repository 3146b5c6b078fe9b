"""Everything a report shows, gathered from one collection (no TensorFlow).

`gather(root, experiment)` reads the runs (`heldout_tf.estimates.load_runs`),
takes the estimates from the collection's estimates file or computes them
(`heldout_tf.estimates.compute`), adds the quality scores, detection and
removal tables when the quality pipeline wrote them, and derives the
summary: counts at the thresholds, standard errors and the too-few-runs
warnings (`estimates.uncertainty`), test accuracy of the runs, each score's
top candidates and how much the scores agree.

Every per-example score is a `Column`, float64 `[n_train]`, NaN where the
runs do not define it; `suspicious` says which end flags an example
(memorization: high; C-score: low; every quality score: high).
"""

import dataclasses
import datetime
import io
import os
from typing import Dict, List, Optional, Tuple

import numpy as np

import heldout_tf
from heldout_tf.quality import detection
from heldout_tf import estimates
from heldout_tf.collection import released
from heldout_tf.quality import scores as scores_lib
from heldout_tf.collection import signals as signals_lib
from heldout_tf.report import inputs

# Quality scores (`heldout_tf.quality.scores.SCORES`): labels shown on the page.
SCORE_LABELS = {
    "memorization": "memorization", "cscore": "1 \u2212 C-score",
    "loss": "held-out loss", "tracin": "TracIn self-influence",
    "aum": "\u2212AUM (margin)", "ssft": "second-split forgetting",
    "confident_learning": "confident learning"}
MAX_PAIRS = 20_000  # Shown on the page: the strongest (counts: all).
MNIST_CLASS_NAMES = [str(c) for c in range(10)]


@dataclasses.dataclass
class Column:
  """One per-example score of the training set."""
  key: str                  # Unique id on the page ('memorization', ...).
  label: str                # What the page calls it.
  values: np.ndarray        # float64 [n_train]; NaN: undefined.
  se: Optional[np.ndarray]  # float64 [n_train] standard error, or None.
  suspicious: int           # +1: high values flag an example; -1: low.
  about: str                # One line: what it measures.


@dataclasses.dataclass
class ReportData:
  """What `page.render` draws (arrays in canonical example order)."""
  experiment: str
  provenance: dict           # JSON-able: dataset, model, runs, settings...
  columns: List[Column]
  n_in: np.ndarray           # int [n_train]: runs that trained on each.
  n_out: np.ndarray          # int [n_train]: runs that held it out.
  test_correct: np.ndarray   # int [n_test]: runs right on each test example.
  num_runs: int
  pairs: Dict[str, np.ndarray]   # tr_idx, tt_idx int64, infl float64 [p].
  thresholds: Dict[str, float]   # 'infl', 'mem' (NaN: no pairs).
  mean_rank: np.ndarray      # float64 [n_train]: mean suspicion rank.
  labels: Optional[np.ndarray] = None        # int [n_train] given labels.
  clean_labels: Optional[np.ndarray] = None  # int [n_train] before noise.
  noisy_idx: Optional[np.ndarray] = None     # int64, known noisy examples.
  prediction: Optional[np.ndarray] = None    # int [n_train], -1 undefined.
  test_labels: Optional[np.ndarray] = None   # int [n_test].
  class_names: Optional[List[str]] = None
  summary: dict = dataclasses.field(default_factory=dict)
  detection: Optional[List[dict]] = None
  removal: Optional[List[dict]] = None
  downloads: List[Tuple[str, bytes]] = dataclasses.field(
      default_factory=list)  # (file name, bytes) offered on the page.
  warnings: List[str] = dataclasses.field(default_factory=list)
  notes: List[str] = dataclasses.field(default_factory=list)
  config: Optional[dict] = None  # The collection's config.json.

  @property
  def n_train(self) -> int:
    return len(self.n_in)

  @property
  def n_test(self) -> int:
    return len(self.test_correct)


def _same(a, b) -> bool:
  """Equal up to float noise, NaN where the other is NaN."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return a.shape == b.shape and bool(np.allclose(a, b, equal_nan=True))


def _vector(arrays, key, n, path, dtype=np.float64) -> Optional[np.ndarray]:
  """arrays[key] as a [n] vector, None if absent; error naming the key."""
  if key not in arrays:
    return None
  value = np.asarray(arrays[key])
  if value.shape != (n,) or not (np.issubdtype(value.dtype, np.number) or
                                 value.dtype == bool):
    raise inputs.ReportInputError(
        f"{path}: key {key!r} must be a number vector of length {n}, has "
        f"shape {value.shape} and dtype {value.dtype}")
  return value.astype(dtype)


def _indices(arrays, key, n, path) -> np.ndarray:
  value = np.asarray(arrays.get(key, np.zeros([0], np.int64)))
  if value.ndim != 1 or not np.issubdtype(value.dtype, np.integer) or (
      value.size and (value.min() < 0 or value.max() >= n)):
    raise inputs.ReportInputError(
        f"{path}: key {key!r} must hold integer indices in [0, {n})")
  return value.astype(np.int64)


# --------------------------------------------------------------- estimates --


def _estimates_npz_bytes(result: dict) -> bytes:
  buffer = io.BytesIO()
  np.savez(buffer, **{k: np.asarray(v) for k, v in result.items()})
  return buffer.getvalue()


def _estimates(runs, path: Optional[str], infl_threshold, mem_threshold,
               progress) -> Tuple[dict, str, bytes]:
  """`(result, source, file bytes)`: the estimates file's arrays (checked
  against the runs) or, without a file, `estimates.compute` on the runs."""
  if path is None:
    result = estimates.compute(runs, ("mem", "pairs", "cscores"),
                               infl_threshold=infl_threshold,
                               mem_threshold=mem_threshold, progress=progress)
    return result, "computed from the runs", _estimates_npz_bytes(result)
  result = inputs.read_npz(path)
  n_train, n_test = runs.n_train, runs.n_test
  if "memorization" not in result or "cscores" not in result:
    # E.g. pairs only: the per-example estimates come from the runs.
    computed = estimates.compute(runs, ("mem", "cscores"), progress=progress)
    for key in ("memorization", "memorization_se", "cscores", "cscores_se"):
      result.setdefault(key, computed[key])
  for key in ("memorization", "memorization_se", "cscores", "cscores_se",
              "n_in", "n_out"):
    if key in result:
      result[key] = _vector(result, key, n_train, path)
  counted = estimates.counts(runs.mask, runs.correct_train)
  for key, value in (("n_in", counted.n_in), ("n_out", counted.n_out)):
    if key not in result:
      result[key] = value
    elif not np.array_equal(result[key], value):
      raise inputs.ReportInputError(
          f"{path}: key {key!r} differs from the runs' counts: the file "
          "was made from other runs (pass the matching --estimates)")
  if "tr_idx" in result:
    result["tr_idx"] = _indices(result, "tr_idx", n_train, path)
    result["tt_idx"] = _indices(result, "tt_idx", n_test, path)
    result["infl"] = np.asarray(result["infl"], np.float64)
    if not (len(result["tr_idx"]) == len(result["tt_idx"]) ==
            len(result["infl"])):
      raise inputs.ReportInputError(
          f"{path}: keys 'tr_idx', 'tt_idx', 'infl' differ in length")
  return result, path, inputs.read_bytes(path)


def _uncertainty(result: dict) -> Tuple[dict, List[str]]:
  """Median standard errors and the thresholds-too-close warnings."""
  u = estimates.uncertainty(result)
  out = {"worst_case_se": None if np.isnan(u.bound) else u.bound,
         "memorization_se": (None if u.memorization_se is None or
                             np.isnan(u.memorization_se)
                             else u.memorization_se)}
  return out, [w[len("warning: "):] if w.startswith("warning: ") else w
               for w in u.warnings]


# ------------------------------------------------------------------ scores --


def _quality_columns(scores: dict, path: str, n: int,
                     base: List[Column]) -> Tuple[List[Column], List[str]]:
  """The quality scores as columns; a score equal to an estimate's column
  (memorization, 1 - C-score) is said once."""
  by_key = {c.key: c for c in base}
  columns, notes = [], []
  for name in scores_lib.SCORES:
    values = _vector(scores, name, n, path)
    if values is None:
      continue
    se = _vector(scores, f"{name}_se", n, path)
    if name == "memorization" and _same(values, by_key[name].values):
      notes.append("scores.npz's memorization equals the estimate's")
      continue
    if name == "cscore" and _same(values, 1.0 - by_key["cscore"].values):
      notes.append("scores.npz's cscore is 1 \u2212 the C-score shown")
      continue
    key = f"quality_{name}" if name in by_key else name
    columns.append(Column(key, SCORE_LABELS[name], values, se, +1,
                          f"quality score {name!r} (high: suspicious)"))
  return columns, notes


def _oriented(column: Column) -> np.ndarray:
  return column.values * column.suspicious


def ranks(column: Column) -> np.ndarray:
  """1-based suspicion rank of each example (ties by index, NaN last)."""
  order = detection.ranking(_oriented(column))
  out = np.empty(len(order), np.int64)
  out[order] = np.arange(1, len(order) + 1)
  return out


def mean_rank(columns: List[Column]) -> np.ndarray:
  """float64 [n_train]: mean of the examples' suspicion ranks."""
  return np.mean([ranks(c) for c in columns], axis=0)


def top_k(column: Column, k: int) -> np.ndarray:
  return detection.ranking(_oriented(column))[:k]


def agreement(columns: List[Column], k: int) -> List[List[float]]:
  """[i][j]: fraction of score i's top k also in score j's top k."""
  tops = [set(top_k(c, k).tolist()) for c in columns]
  return [[len(a & b) / k for b in tops] for a in tops]


# ------------------------------------------------------------- provenance --


def _dataset_and_model(experiment: str, config: Optional[dict]):
  if config and "dataset" in config:
    hidden = config.get("hidden")
    model = (f"MLP, hidden layers {'-'.join(map(str, hidden))}"
             if hidden else config.get("arch", "unknown"))
    return str(config["dataset"]), model
  if experiment in released.EXPERIMENTS:
    e = released.EXPERIMENTS[experiment]
    return e.dataset, e.arch
  return "unknown", "unknown"


def _accuracy(runs) -> List[dict]:
  """Mean and sd (over runs) of each ratio's test accuracy."""
  per_run = runs.correct_test.mean(axis=1) if runs.n_test else np.full(
      runs.num_runs, np.nan)
  rows = []
  for ratio in np.unique(runs.ratios):
    acc = per_run[runs.ratios == ratio]
    rows.append({"ratio": float(ratio), "runs": int(len(acc)),
                 "mean": float(np.mean(acc)),
                 "sd": float(np.std(acc, ddof=1)) if len(acc) > 1 else 0.0})
  return rows


def _settings(config: Optional[dict]) -> Dict[str, str]:
  if not config:
    return {}
  return {k: (v if isinstance(v, str) else repr(v) if not isinstance(
      v, (list, dict)) else str(v)) for k, v in sorted(config.items())}


# -------------------------------------------------------------- prediction --


def _prediction(found, n_train, num_classes, progress) -> Optional[np.ndarray]:
  """Held-out predicted class (argmax of the mean out-of-sample softmax)
  from every run's signals.npz, or None when a run has none."""
  paths = [signals_lib.signals_path(r.path) for r in found]
  if not num_classes or not all(os.path.isfile(p) for p in paths):
    return None
  totals = signals_lib.load_totals(paths, n_train, num_classes,
                                   progress=progress)
  prediction = np.argmax(totals.prob_sum, axis=1).astype(np.int64)
  return np.where(totals.n_out > 0, prediction, -1)


# ------------------------------------------------------------------ gather --


def _summary(data: ReportData, result: dict, k: int,
             pair_counts: dict) -> dict:
  """Counts at the thresholds, and each score's top-k candidates."""
  mem = data.columns[0].values
  thresholds = data.thresholds
  out = {"n_train": data.n_train, "n_test": data.n_test,
         "num_runs": data.num_runs, "k": k,
         "memorized": int(np.sum(mem >= thresholds["mem"]))
         if not np.isnan(thresholds["mem"]) else None,
         "memorized_half": int(np.sum(mem >= 0.5)),
         "low_cscore": int(np.sum(data.columns[1].values < 0.5)),
         "never_held_out": int(result.get("num_never_held_out", np.sum(
             data.n_out == 0))),
         "never_trained": int(result.get("num_never_trained", np.sum(
             data.n_in == 0))), **pair_counts}
  noisy = (set(data.noisy_idx.tolist()) if data.noisy_idx is not None
           else set())
  rows = []
  for column in data.columns:
    top = top_k(column, k)
    row = {"key": column.key, "label": column.label,
           "defined": int(np.sum(~np.isnan(column.values))), "top": int(
               np.sum(~np.isnan(column.values[top])))}
    if data.prediction is not None and data.labels is not None:
      row["disagree"] = int(np.sum(
          (data.prediction[top] >= 0) &
          (data.prediction[top] != data.labels[top])))
    if noisy:
      row["noisy"] = int(sum(int(i) in noisy for i in top))
    rows.append(row)
  out["candidates"] = rows
  return out


def _detection_rows(columns: List[Column], noisy_idx) -> List[dict]:
  return [dict(method=c.label, **detection.metrics(_oriented(c), noisy_idx))
          for c in columns]


def _pairs(result: dict, notes: List[str]) -> Tuple[dict, dict]:
  """`(pairs shown, counts of all pairs)`: at most MAX_PAIRS, strongest
  first chosen (ties by training, then test index)."""
  pairs = ({k: result[k] for k in ("tr_idx", "tt_idx", "infl")}
           if "tr_idx" in result else
           {"tr_idx": np.zeros([0], np.int64),
            "tt_idx": np.zeros([0], np.int64), "infl": np.zeros([0])})
  counts = {"pairs": len(pairs["tr_idx"]),
            "pair_train": len(np.unique(pairs["tr_idx"])),
            "pair_test": len(np.unique(pairs["tt_idx"]))}
  if len(pairs["tr_idx"]) > MAX_PAIRS:
    keep = np.sort(np.lexsort((pairs["tt_idx"], pairs["tr_idx"],
                               -pairs["infl"]))[:MAX_PAIRS])
    notes.append(f"{len(pairs['tr_idx'])} high-influence pairs: the page "
                 f"shows the {MAX_PAIRS} with the highest influence")
    pairs = {k: v[keep] for k, v in pairs.items()}
  return pairs, counts


@dataclasses.dataclass
class _Labels:
  """What the estimates and scores files say about the labels."""
  labels: Optional[np.ndarray] = None
  clean: Optional[np.ndarray] = None
  noisy: Optional[np.ndarray] = None
  test: Optional[np.ndarray] = None

  def update(self, arrays: dict, where: str, n: int, n_test: int,
             names=("labels", "clean_train_labels")):
    """Takes the arrays' labels (`names`: given, clean), noisy_idx and
    test_labels where present."""
    for attr, key in zip(("labels", "clean"), names):
      value = _vector(arrays, key, n, where, np.int64)
      if value is not None:
        setattr(self, attr, value)
    if "noisy_idx" in arrays:
      self.noisy = _indices(arrays, "noisy_idx", n, where)
    test = _vector(arrays, "test_labels", n_test, where, np.int64)
    if test is not None:
      self.test = test


def _locate(root, experiment, ratio, estimates_path, scores_path):
  """`(runs found, estimates path, scores path, config, notes)`."""
  found = inputs.choose_ratio(root, experiment, ratio)
  single = len({r.ratio for r in found}) == 1
  paths = inputs.result_paths(os.path.dirname(found[0].path))
  notes = []
  if not single:
    notes.append(f"{len({r.ratio for r in found})} ratios: estimates over "
                 "all runs (C-scores averaged over ratios); pass --ratio for "
                 "one ratio's files")
  for given, flag in ((estimates_path, "--estimates"),
                      (scores_path, "--scores")):
    if given is not None and not os.path.isfile(given):
      raise inputs.ReportInputError(f"{flag} {given}: file not found")
  if estimates_path is None and single and os.path.isfile(
      paths["estimates"]):
    estimates_path = paths["estimates"]
  if scores_path is None and single and os.path.isfile(paths["scores"]):
    scores_path = paths["scores"]
  # Every ratio of a collection shares its dataset and model.
  config = inputs.read_json(paths["config"])
  return found, estimates_path, scores_path, config, notes


def _num_classes(experiment, config, labels) -> int:
  if config and "num_classes" in config:
    return int(config["num_classes"])
  if experiment in released.EXPERIMENTS:
    return released.EXPERIMENTS[experiment].num_classes
  return int(labels.max()) + 1 if labels is not None and len(labels) else 0


def gather(root: str, experiment: str, ratio: Optional[float] = None,
           estimates_path: Optional[str] = None,
           scores_path: Optional[str] = None, progress: bool = True,
           infl_threshold: float = 0.15, mem_threshold: float = 0.25,
           now: Optional[datetime.datetime] = None) -> ReportData:
  """Reads a collection's runs and results into a `ReportData`.

  Args:
    root: the collection root holding `<experiment>/<ratio>/<run>/`.
    experiment: the experiment directory name.
    ratio: the subset ratio to report on; None: the only one, or all runs
      (C-scores averaged over ratios) when there are several.
    estimates_path: an estimates npz (`mnist_example.train`'s, or
      `heldout_tf.estimates.save_estimates`'); None: the ratio's
      estimates.npz if there is one, else computed from the runs.
    scores_path: a quality scores.npz; None: the ratio's quality/scores.npz
      if there is one.
    progress: progress bars while loading and computing.
    infl_threshold, mem_threshold: pairs thresholds when computing.
    now: the time stamp shown (default: now, UTC).

  Raises:
    inputs.ReportInputError naming a missing or inconsistent file;
    runs.AuxArraysError for a bad aux file.
  """
  found, estimates_path, scores_path, config, notes = _locate(
      root, experiment, ratio, estimates_path, scores_path)
  ratios = sorted({r.ratio for r in found})
  runs = estimates.load_runs(root, experiment, ratios, progress=progress)
  result, source, estimates_bytes = _estimates(
      runs, estimates_path, infl_threshold, mem_threshold, progress)
  n = runs.n_train
  columns = [
      Column("memorization", "memorization", result["memorization"],
             result.get("memorization_se"), +1,
             "mean correctness when trained on minus when held out"),
      Column("cscore", "C-score", result["cscores"],
             result.get("cscores_se"), -1,
             "held-out accuracy (low: atypical or mislabeled)")]
  labels = _Labels()
  labels.update(result, estimates_path or "estimates", n, runs.n_test)
  downloads = [(os.path.basename(estimates_path) if estimates_path
                else "estimates.npz", estimates_bytes)]
  sources = {"estimates": source}
  detection_rows = removal_rows = None
  if scores_path is not None:
    scores = inputs.read_npz(scores_path)
    quality, more = _quality_columns(scores, scores_path, n, columns)
    columns += quality
    notes += more
    labels.update(scores, scores_path, n, runs.n_test,
                  ("labels", "clean_labels"))
    downloads = [(os.path.basename(scores_path),
                  inputs.read_bytes(scores_path))]
    sources["scores"] = scores_path
    quality_dir = os.path.dirname(scores_path)
    detection_rows = inputs.read_csv(
        os.path.join(quality_dir, inputs.DETECTION_FILENAME))
    removal_rows = inputs.read_csv(
        os.path.join(quality_dir, inputs.REMOVAL_FILENAME))
  if labels.noisy is not None and len(labels.noisy) and not detection_rows:
    detection_rows = _detection_rows(columns, labels.noisy)
  pairs, pair_counts = _pairs(result, notes)
  dataset, model = _dataset_and_model(experiment, config)
  num_classes = _num_classes(experiment, config, labels.labels)
  se, warnings = _uncertainty(result)
  now = now or datetime.datetime.now(datetime.timezone.utc)
  provenance = {
      "experiment": experiment, "root": os.path.abspath(root),
      "dataset": dataset, "model": model,
      "ratios": [float(r) for r in ratios],
      "runs_per_ratio": [int(np.sum(runs.ratios == r)) for r in ratios],
      "num_runs": runs.num_runs, "n_train": n, "n_test": runs.n_test,
      "accuracy": _accuracy(runs), "settings": _settings(config),
      "sources": sources, "kit_version": heldout_tf.__version__,
      "made": now.strftime("%Y-%m-%d %H:%M UTC"), "standard_errors": se,
      "num_classes": num_classes}
  data = ReportData(
      experiment=experiment, provenance=provenance, columns=columns,
      n_in=np.asarray(result["n_in"], np.int64),
      n_out=np.asarray(result["n_out"], np.int64),
      test_correct=runs.correct_test.sum(axis=0).astype(np.int64),
      num_runs=runs.num_runs, pairs=pairs,
      thresholds={k: float(result.get(f"{k}_threshold", np.nan))
                  for k in ("infl", "mem")},
      mean_rank=mean_rank(columns), labels=labels.labels,
      clean_labels=labels.clean, noisy_idx=labels.noisy,
      test_labels=labels.test,
      class_names=(MNIST_CLASS_NAMES if dataset in ("mnist", "digits")
                   else None),
      detection=detection_rows, removal=removal_rows, downloads=downloads,
      warnings=warnings, notes=notes, config=config,
      prediction=_prediction(found, n, num_classes, progress))
  k = (len(labels.noisy) if labels.noisy is not None and len(labels.noisy)
       else max(1, min(n, int(round(0.01 * n)))))
  data.summary = _summary(data, result, k, pair_counts)
  return data
