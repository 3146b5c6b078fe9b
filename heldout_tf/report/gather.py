"""Everything a report shows, gathered from one collection (no TensorFlow).

`gather(root, experiment)` reads the runs (`heldout_tf.estimates.load_runs`),
takes the estimates from the collection's estimates file or computes them
(`results.read_estimates`), adds the quality scores, detection and removal
tables when `heldout quality` wrote them completely (its manifest lists
them), and derives the summary: counts at the thresholds, standard errors
and the too-few-runs warnings (`results.uncertainty`), test accuracy of the
runs, each score's top candidates and how much the scores agree. The
scores themselves are `columns.Column`s.
"""

import dataclasses
import datetime
import os
from typing import Dict, List, Optional, Tuple

import numpy as np

import heldout_tf
from heldout_tf import estimates
from heldout_tf.collection import layout
from heldout_tf.collection import signals as signals_lib
from heldout_tf.quality import detection
from heldout_tf.report import attribution as attribution_lib
from heldout_tf.report import columns as columns_lib
from heldout_tf.report import describe
from heldout_tf.report import inputs
from heldout_tf.report import results

MAX_PAIRS = 20_000  # Shown on the page: the strongest (counts: all).
MNIST_CLASS_NAMES = [str(c) for c in range(10)]


@dataclasses.dataclass
class ReportData:
  """What `page.build` draws (arrays in canonical example order)."""
  experiment: str
  provenance: dict           # JSON-able: dataset, model, runs, settings...
  columns: List[columns_lib.Column]
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
  attribution: attribution_lib.Attribution = dataclasses.field(
      default_factory=attribution_lib.Attribution)  # LDS, influencers.

  @property
  def n_train(self) -> int:
    return len(self.n_in)

  @property
  def n_test(self) -> int:
    return len(self.test_correct)


def _prediction(found, n_train, num_classes, progress, totals=None
                ) -> Optional[np.ndarray]:
  """Held-out predicted class (argmax of the mean out-of-sample softmax)
  from every run's signals.npz (or their `totals`, already read), or None
  when a run has none."""
  if totals is None:
    paths = [signals_lib.signals_path(r.path) for r in found]
    if not num_classes or not all(os.path.isfile(p) for p in paths):
      return None
    totals = signals_lib.load_totals(paths, n_train, num_classes,
                                     progress=progress)
  prediction = np.argmax(totals.prob_sum, axis=1).astype(np.int64)
  return np.where(totals.n_out > 0, prediction, -1)


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
    top = columns_lib.top_k(column, k)
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
class _Located:
  """Where a report's inputs are."""
  runs: list                 # layout.RunPath of every run covered.
  estimates: Optional[str]   # The estimates file, None: computed.
  scores: Optional[str]      # The quality scores file, None: none.
  lds: Optional[str]         # `heldout lds`'s table, None: none.
  attribution: Optional[str]  # A score file for influencers, None: none.
  config: Optional[dict]     # config.json.
  config_path: str
  notes: List[str]
  warnings: List[str]


def _locate(root, experiment, ratio, estimates_path, scores_path,
            lds_path=None, attribution_path=None) -> _Located:
  """The runs and result files of the report (a ratio's own files only
  when the report covers one ratio); quality scores without a manifest
  listing them are left out with a warning."""
  found = inputs.choose_ratio(root, experiment, ratio)
  ratios = {r.ratio for r in found}
  paths = inputs.result_paths(os.path.dirname(found[0].path))
  notes, warnings = [], []
  if len(ratios) > 1:
    notes.append(f"{len(ratios)} ratios: estimates over all runs (C-scores "
                 "averaged over ratios); pass --ratios for one ratio's "
                 "files")
  for given, flag in ((estimates_path, "--estimates"),
                      (scores_path, "--scores"), (lds_path, "--lds"),
                      (attribution_path, "--attribution")):
    if given is not None and not os.path.lexists(given):
      raise inputs.ReportInputError(f"{flag} {given}: file not found")
  if len(ratios) == 1:
    if estimates_path is None and os.path.isfile(paths["estimates"]):
      estimates_path = paths["estimates"]
    if scores_path is None and os.path.lexists(paths["scores"]):
      incomplete = inputs.incomplete_quality(paths)
      if incomplete:
        warnings.append(incomplete)
      else:
        scores_path = paths["scores"]
    if lds_path is None and os.path.isfile(paths["lds"]):
      lds_path = paths["lds"]
    if attribution_path is None and os.path.isfile(paths["datamodels"]):
      attribution_path = paths["datamodels"]
  # Every ratio of a collection shares its dataset and model.
  return _Located(found, estimates_path, scores_path, lds_path,
                  attribution_path, inputs.read_json(paths["config"]),
                  paths["config"], notes, warnings)


def gather(root: str, experiment: str = "", ratio: Optional[float] = None,
           estimates_path: Optional[str] = None,
           scores_path: Optional[str] = None, progress: bool = True,
           infl_threshold: float = 0.15, mem_threshold: float = 0.25,
           now: Optional[datetime.datetime] = None,
           lds_path: Optional[str] = None,
           attribution_path: Optional[str] = None, runs=None,
           totals=None) -> ReportData:
  """Reads a collection's runs and results into a `ReportData`.

  Args:
    root: the collection root holding `<experiment>/<ratio>/<run>/`.
    experiment: the experiment directory name; '': the only one.
    ratio: the subset ratio to report on; None: the only one, or all runs
      (C-scores averaged over ratios) when there are several.
    estimates_path: an estimates npz (`heldout estimate`'s, or
      `mnist_example.train`'s); None: the ratio's estimates.npz if there is
      one, else computed from the runs.
    scores_path: a quality scores.npz; None: the ratio's quality/scores.npz
      if `heldout quality` finished writing it (its manifest.json lists it).
    progress: progress bars while loading and computing.
    infl_threshold, mem_threshold: pairs thresholds when computing.
    now: the time stamp shown (default: now, UTC).
    lds_path: a `heldout lds` table; None: the ratio's
      attribution/lds.npz if there is one.
    attribution_path: a score file whose top influencers the test cards
      show (`report.attribution`); None: the ratio's
      attribution/datamodels.npz if there is one.
    runs, totals: the runs at `ratio` (`estimates.Runs`) and their
      signals' `Totals`, when the caller has read them (`heldout quality`
      just did): not read again.

  Raises:
    inputs.ReportInputError naming a missing or inconsistent file;
    errors.UsageError when `experiment` is '' and `root` holds several;
    runs.AuxArraysError for a bad aux file.
  """
  experiment = inputs.choose_experiment(root, experiment)
  at = _locate(root, experiment, ratio, estimates_path, scores_path,
               lds_path, attribution_path)
  ratios = sorted({r.ratio for r in at.runs})
  if runs is None:
    runs = estimates.load_runs(root, experiment, ratios, progress=progress)
  result, source, estimates_bytes = results.read_estimates(
      runs, at.estimates, infl_threshold, mem_threshold, progress)
  n, notes = runs.n_train, at.notes
  columns = columns_lib.estimate_columns(result)
  labels = results.Labels()
  labels.update(result, "clean_train_labels")
  downloads = [(os.path.basename(at.estimates) if at.estimates
                else "estimates.npz", estimates_bytes)]
  sources = {"estimates": source}
  attributed = attribution_lib.read(at.lds, at.attribution, n, runs.n_test)
  sources.update(attributed.sources)
  detection_rows = removal_rows = None
  if at.scores is not None:
    scores = results.read_scores(at.scores, n, runs.n_test)
    quality, more = columns_lib.quality_columns(scores, columns)
    columns += quality
    notes += more
    labels.update(scores, "clean_labels")
    downloads = [(os.path.basename(at.scores), inputs.read_bytes(at.scores))]
    sources["scores"] = at.scores
    quality_dir = os.path.dirname(at.scores)
    detection_rows = inputs.read_csv(
        os.path.join(quality_dir, layout.DETECTION_FILENAME))
    removal_rows = inputs.read_csv(
        os.path.join(quality_dir, layout.REMOVAL_FILENAME))
  if labels.noisy is not None and len(labels.noisy) and not detection_rows:
    detection_rows = [
        dict(method=c.label, **detection.metrics(columns_lib.oriented(c),
                                                 labels.noisy))
        for c in columns]
  pairs, pair_counts = _pairs(result, notes)
  dataset, model = describe.dataset_and_model(experiment, at.config)
  num_classes = describe.num_classes(experiment, at.config, labels.labels,
                                     at.config_path)
  se, warnings = results.uncertainty(result)
  now = now or datetime.datetime.now(datetime.timezone.utc)
  provenance = {
      "experiment": experiment, "root": os.path.abspath(root),
      "dataset": dataset, "model": model,
      "ratios": [float(r) for r in ratios],
      "runs_per_ratio": [int(np.sum(runs.ratios == r)) for r in ratios],
      "num_runs": runs.num_runs, "n_train": n, "n_test": runs.n_test,
      "accuracy": describe.accuracy(runs),
      "settings": describe.settings(at.config), "sources": sources,
      "kit_version": heldout_tf.__version__,
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
      mean_rank=columns_lib.mean_rank(columns), labels=labels.labels,
      clean_labels=labels.clean, noisy_idx=labels.noisy,
      test_labels=labels.test,
      class_names=(MNIST_CLASS_NAMES if dataset in ("mnist", "digits")
                   else None),
      detection=detection_rows, removal=removal_rows, downloads=downloads,
      warnings=at.warnings + warnings, notes=notes, config=at.config,
      prediction=_prediction(at.runs, n, num_classes, progress, totals),
      attribution=attributed)
  k = (len(labels.noisy) if labels.noisy is not None and len(labels.noisy)
       else max(1, min(n, int(round(0.01 * n)))))
  data.summary = _summary(data, result, k, pair_counts)
  return data
