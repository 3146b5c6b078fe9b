"""Data-quality scores of any collection: the workflow of
`python -m heldout_tf.cli.quality`.

  result = workflow.score(workflow.ScoreOptions(
      root="./runs", experiment="cifar10-resnet9"))
  result.paths["scores"]     # <root>/<experiment>/<ratio>/quality/scores.npz

reads a collection trained with per-epoch signals (`python -m
heldout_tf.cli.train ... --signals`: each run's `aux_arrays.npz` and
`signals.npz`), computes every score of `heldout_tf.quality.scores` (second-split
forgetting only where the runs recorded it) with the labels the runs were
trained with, and writes, into `<ratio>/quality/` (or `out`):

  scores.npz     the scores, `<score>_se`, `num_nan_<score>`, `noisy_idx`,
                 `noisy_idx_<kind>`, `labels`, `clean_labels`, `noise`
                 (the keys `mnist_example.quality` writes);
  detection.csv  how well each score finds the noisy examples
                 (`heldout_tf.quality.detection`), when the collection was trained
                 with known noise (`noise` in its config.json);
  report.html    with `report` set: the browsable report, written by the
                 `write_report` the caller passes (`heldout_tf.report.
                 write_for_quality`: the report is a higher stage, so this
                 module never imports it);
  manifest.json  written last: the files above that belong together.

The labels come from the collection's data, loaded again (`dataset`, else
the one its config.json names) with its recorded noise rebuilt from the
recorded seed, and must have the recorded data fingerprint. Every run's
signals are checked against its aux arrays (`signals.load_totals(...,
check_runs=True)`), so a file copied from another run is refused. Scores
are computed before anything is removed; then the previous outputs and
manifest go, so a re-run that fails half-way leaves no manifest and never
new scores beside an old table.

`train_and_score` first makes (or resumes) a collection with signals
(`heldout_tf.training.workflow.make`, e.g. with `noise='label:0.1'`) and then
scores it.
"""

import csv
import dataclasses
import json
import os
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from heldout_tf import collection
from heldout_tf.collection import provenance
from heldout_tf.quality import detection
from heldout_tf.core import errors
from heldout_tf.core import files
from heldout_tf.collection import layout
from heldout_tf.quality import figures as quality_figures
from heldout_tf.quality import removal
from heldout_tf.collection import signals as signals_lib

# What a previous run of this or `mnist_example.quality` may have left in
# the output directory that the report reads: removed before writing.
OUTPUT_FILENAMES = (layout.SCORES_FILENAME, layout.DETECTION_FILENAME,
                    layout.REMOVAL_FILENAME, layout.REPORT_FILENAME
                    ) + quality_figures.FILENAMES


class QualityError(errors.HeldoutError, ValueError):
  """A collection cannot be scored (names the file or flag at fault)."""


@dataclasses.dataclass(frozen=True)
class ScoreOptions:
  """What `score` reads and writes (the scoring flags, as a value)."""
  root: str
  experiment: str = ""  # '': the only experiment under `root`.
  ratio: Optional[float] = None  # None: the only ratio of the experiment.
  out: Optional[str] = None  # Output directory; None: <ratio>/quality.
  dataset: str = ""  # '': the dataset config.json names.
  data_dir: Optional[str] = None
  report: bool = False  # report.html, by `score`'s `write_report`.
  figures: bool = True  # ROC, precision at k, top examples, removal.
  removal_models: int = 0  # Models per removal set (0: no ablation).
  removal_fractions: str = detection.DEFAULT_REMOVAL_FRACTIONS
  # --model as given: the ablation imports a recorded user module only
  # when this names it.
  model: str = ""
  progress: bool = True


@dataclasses.dataclass
class Result:
  """What `score` computed and wrote."""
  store: collection.Store
  run_ids: List[int]
  data: object  # The `image_data.ImageData` trained on (noise applied).
  noise: str  # The recorded noise spec ('' for none).
  noisy_idx: np.ndarray  # int64, sorted: the examples the noise touched.
  scores: object  # `heldout_tf.quality.scores.Scores`.
  detection: Optional[List[dict]]  # Rows of DETECTION_COLUMNS, if noise.
  removal: List[dict]  # Rows of REMOVAL_COLUMNS ([] without an ablation).
  # 'scores', 'detection', 'removal', 'report', 'manifest' (those written).
  paths: Dict[str, str]
  figures: List[str]  # The PNG figures written.
  training: Optional[dict] = None  # `training.workflow.make`'s report.
  # Scores left out, one line each (e.g. confident learning without
  # cleanlab).
  warnings: List[str] = dataclasses.field(default_factory=list)


# -------------------------------------------------------------- locating --


def _experiments(root: str) -> List[str]:
  """Names under `root` holding at least one canonical run directory."""
  if not os.path.isdir(root):
    raise QualityError(f"--root {root}: no such directory" + (
        " (a file)" if os.path.exists(root) else ""))
  return layout.list_experiments(root)


def find_collection(root: str, experiment: str = "",
                    ratio: Optional[float] = None) -> collection.Store:
  """The `collection.Store` of `<root>/<experiment>/<ratio>`; an empty
  `experiment` or None `ratio` means the only one there is.

  Raises:
    QualityError: nothing there; errors.UsageError: several to choose from.
  """
  if not experiment:
    found = _experiments(root)
    if not found:
      raise QualityError(f"--root {root}: no collection there (no "
                         "<experiment>/<ratio>/<run>/ directories)")
    if len(found) > 1:
      raise errors.UsageError(f"--root {root} holds {len(found)} "
                              f"experiments ({', '.join(found)}): pass "
                              "--experiment")
    experiment = found[0]
  runs = layout.list_runs(root, experiment)
  if not runs:
    raise QualityError(f"{os.path.join(root, experiment)}: no runs (no "
                       "<ratio>/<run>/ directories); check --root and "
                       "--experiment")
  ratios = sorted({r.ratio for r in runs})
  shown = ", ".join(layout.format_ratio(r) for r in ratios)
  if ratio is None:
    if len(ratios) > 1:
      raise errors.UsageError(f"{os.path.join(root, experiment)} holds "
                              f"ratios {shown}: pass --ratios")
    ratio = ratios[0]
  elif float(layout.format_ratio(ratio)) not in ratios:
    raise QualityError(f"{os.path.join(root, experiment)}: no runs at "
                       f"ratio {layout.format_ratio(ratio)} (it has "
                       f"{shown})")
  return collection.Store(root, experiment, ratio)


def finished_runs(store: collection.Store) -> List[int]:
  """Run ids 0..n-1 of the collection, every one finished.

  Raises:
    collection.IncompleteRunsError: a run is missing or unfinished;
    QualityError: fewer than two runs.
  """
  ids = store.run_ids_on_disk()
  if ids:
    store.check_complete(ids[-1] + 1, hint=(
        "Finish them (re-run the same train command) before scoring."))
  if len(ids) < 2:
    raise QualityError(f"{store.path}: {len(ids)} run(s); held-out scores "
                       "need at least 2")
  return ids


def check_signals(store: collection.Store, config: dict,
                  run_ids: Sequence[int]):
  """QualityError unless the collection was trained with signals and
  every run has its `signals.npz`."""
  if not config.get("signals"):
    raise QualityError(
        f"{store.config_path}: the runs were trained without per-epoch "
        "signals: train the collection with --signals (python -m "
        "heldout_tf.cli.train ... --signals, into a new --root) to score it")
  for run in run_ids:
    path = signals_lib.signals_path(store.run_dir(run))
    if not os.path.isfile(path):
      raise QualityError(f"{path}: missing; the collection records "
                         "signals, so re-run its train command (with "
                         "--signals) to write it")


# ------------------------------------------------------------------ data --


# --------------------------------------------------------------- scoring --


def compute(store: collection.Store, run_ids: Sequence[int], data,
            progress: bool = True, warnings: Optional[List[str]] = None):
  """`(scores, runs, totals)`: the `heldout_tf.quality.scores.Scores` of
  the runs `run_ids` of `store` with `data`'s training labels, and the
  `estimates.Runs` and signal `Totals` they came from (read once; the
  report reuses them). Every run's signals are checked against its aux
  arrays. SSFT only when the runs recorded a second phase; confident
  learning only when cleanlab is installed (else one line in
  `warnings`)."""
  # pylint: disable=g-import-not-at-top
  from heldout_tf import estimates
  from heldout_tf.collection import runs as runs_lib
  from heldout_tf.quality import scores as scores_lib
  # pylint: enable=g-import-not-at-top
  run_dirs = [store.run_dir(r) for r in run_ids]
  runs = estimates.load_runs_from(run_dirs, ratios=[store.ratio] *
                                  len(run_dirs), run_ids=list(run_ids),
                                  experiment=store.experiment,
                                  progress=progress)
  n = len(data.train_labels)
  if (runs.n_train, runs.n_test) != (n, len(data.test_labels)):
    raise runs_lib.AuxArraysError(
        f"{store.path}: the runs cover {runs.n_train} training / "
        f"{runs.n_test} test examples, the data has {n} / "
        f"{len(data.test_labels)}")
  totals = signals_lib.load_totals(
      [signals_lib.signals_path(d) for d in run_dirs], n, data.num_classes,
      progress=progress, check_runs=True)
  names = scores_lib.SCORES
  if not totals.ssft_runs.any():
    names = tuple(s for s in names if s != "ssft")
  missing = scores_lib.missing_package("confident_learning")
  if missing:
    names = tuple(s for s in names if s != "confident_learning")
    if warnings is not None:
      warnings.append(missing)
  return (scores_lib.compute(runs.mask, runs.correct_train, totals,
                             data.train_labels, names), runs, totals)


def scores_arrays(scores, data, noisy, noise: str) -> Dict[str, np.ndarray]:
  """What `scores.npz` holds: every score, `<score>_se`, `num_nan_<score>`,
  `noisy_idx`, `noisy_idx_<kind>` per noise kind, `labels` (trained with),
  `clean_labels` and the `noise` spec string."""
  arrays = scores.arrays()
  labels = np.asarray(data.train_labels, np.int64)
  arrays.update(
      noisy_idx=(noisy.noisy_idx if noisy is not None
                 else np.zeros([0], np.int64)),
      labels=labels,
      clean_labels=noisy.clean_labels if noisy is not None else labels,
      noise=np.array(noise))
  if noisy is not None:
    arrays.update({f"noisy_idx_{k}": v for k, v in noisy.by_kind.items()})
  return arrays


# ---------------------------------------------------------------- output --


def write_csv(path: str, rows: Sequence[dict], columns: Sequence[str]):
  """`rows` as a CSV file with header `columns` (floats to 6 digits),
  written atomically."""
  def write(f):
    writer = csv.DictWriter(f, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for row in rows:
      writer.writerow({c: (f"{row[c]:.6g}" if isinstance(row[c], float)
                           else row[c]) for c in columns})
  files.atomic_write(path, write, mode="w")


def clear_outputs(directory: str, names: Sequence[str] = OUTPUT_FILENAMES):
  """Makes `directory`, then removes a previous manifest and the outputs
  `names` (manifest first: a half-cleared directory never looks
  complete)."""
  with errors.user_path(directory, "write"):
    os.makedirs(directory, exist_ok=True)
    for name in (layout.MANIFEST_FILENAME,) + tuple(names):
      path = os.path.join(directory, name)
      if os.path.lexists(path):
        os.remove(path)


def write_manifest(directory: str, written: Sequence[str], settings: dict):
  """`manifest.json`, written last: the outputs that belong together and
  the settings they were made with."""
  manifest = {"files": sorted(os.path.basename(p) for p in written),
              "settings": settings}
  files.atomic_write(os.path.join(directory, layout.MANIFEST_FILENAME),
                     lambda f: f.write(json.dumps(manifest, indent=2,
                                                  sort_keys=True) + "\n"),
                     mode="w")


# write_report(root=, experiment=, ratio=, out=, scores=, data=, data_dir=,
# progress=, runs=, totals=) -> the path written: e.g.
# `heldout_tf.report.write_for_quality`.
ReportWriter = Callable[..., str]


def _check_writer(options: ScoreOptions, write_report):
  if options.report and write_report is None:
    raise ValueError("ScoreOptions.report needs a write_report (e.g. "
                     "heldout_tf.report.write_for_quality)")


def _write_outputs(options: ScoreOptions, store, directory: str, data,
                   noisy, noise: str, scores, table, removal,
                   write_report: Optional[ReportWriter], read=(None, None)
                   ) -> Tuple[Dict[str, str], List[str]]:
  """Removes the previous outputs, then writes scores.npz, detection.csv
  (with `table`), removal.csv (with `removal` rows), the figures and
  report.html (`write_report`, with `options.report`); returns `(paths by
  kind, figure paths)`."""
  clear_outputs(directory)
  paths = {"scores": os.path.join(directory, layout.SCORES_FILENAME)}
  arrays = scores_arrays(scores, data, noisy, noise)
  files.save_npz(paths["scores"], **arrays)
  if table is not None:
    paths["detection"] = os.path.join(directory, layout.DETECTION_FILENAME)
    write_csv(paths["detection"], table, detection.DETECTION_COLUMNS)
  if removal:
    paths["removal"] = os.path.join(directory, layout.REMOVAL_FILENAME)
    write_csv(paths["removal"], removal, detection.REMOVAL_COLUMNS)
  figures = []
  if options.figures:
    figures = quality_figures.write_all(
        directory, data.train_images, arrays["labels"],
        arrays["clean_labels"], arrays["noisy_idx"], scores.values, removal)
  if options.report:
    paths["report"] = write_report(
        root=store.root, experiment=store.experiment, ratio=store.ratio,
        out=os.path.join(directory, layout.REPORT_FILENAME),
        scores=paths["scores"], data=data, data_dir=options.data_dir,
        progress=options.progress, runs=read[0], totals=read[1])
  return paths, figures


def score(options: ScoreOptions, settings: Optional[dict] = None,
          write_report: Optional[ReportWriter] = None) -> Result:
  """Scores the collection `options` name and writes the outputs (see the
  module docstring); returns what it computed and wrote. `settings`: more
  to record in the manifest (e.g. the training flags); `write_report`: what
  writes report.html when `options.report` is set (required then)."""
  _check_writer(options, write_report)
  store = find_collection(options.root, options.experiment, options.ratio)
  config = store.require_config()
  run_ids = finished_runs(store)
  check_signals(store, config, run_ids)
  removal_settings = None
  if options.removal_models:  # Refused before the work, not after.
    removal_settings = removal.settings_from(config, store.config_path,
                                             options.model)
  data, noisy = provenance.load_recorded(config, store.config_path,
                                         options.dataset, options.data_dir)
  warnings = []
  scores, runs, totals = compute(store, run_ids, data, options.progress,
                                 warnings)
  noise = str(config.get("noise", ""))
  noisy_idx = (noisy.noisy_idx if noisy is not None
               else np.zeros([0], np.int64))
  table = (detection.detection_table(scores.values, noisy_idx)
           if len(noisy_idx) else None)
  removal_rows = []
  if removal_settings is not None:
    removal_rows = removal.ablation(
        removal_settings, data, scores.values,
        detection.parse_fractions(options.removal_fractions),
        options.removal_models, noisy_idx,
        group_size=int(config.get("group_size", 1) or 1),
        progress=options.progress)
  # Everything is computed: only now does the previous output go.
  directory = options.out or os.path.join(store.path, layout.QUALITY_DIRNAME)
  with errors.user_path(directory, "write"):
    os.makedirs(directory, exist_ok=True)
  with files.locked(directory):  # One writer of these files at a time.
    paths, figures = _write_outputs(options, store, directory, data, noisy,
                                    noise, scores, table, removal_rows,
                                    write_report, (runs, totals))
    write_manifest(directory, list(paths.values()) + figures, dict(
        dataclasses.asdict(options), collection=store.path,
        experiment=store.experiment, ratio=store.ratio,
        num_runs=len(run_ids), noise=noise,
        data_fingerprint=data.fingerprint(), **(settings or {})))
  paths["manifest"] = os.path.join(directory, layout.MANIFEST_FILENAME)
  return Result(store=store, run_ids=list(run_ids), data=data, noise=noise,
                noisy_idx=noisy_idx, scores=scores, detection=table,
                removal=removal_rows, paths=paths, figures=figures,
                warnings=warnings)


def train_and_score(train_options, options: ScoreOptions, say=print,
                    write_report: Optional[ReportWriter] = None) -> Result:
  """Makes (or resumes) the collection of `train_options` (a
  `training.workflow.Options` of one ratio; signals always recorded), then
  scores it with `options` (its root, experiment and ratio are the
  collection's) and `write_report` (see `score`)."""
  _check_writer(options, write_report)  # Before the training.
  from heldout_tf.training import workflow as training_workflow  # pylint: disable=g-import-not-at-top
  if len(train_options.ratios) != 1:
    raise errors.UsageError(f"--ratios: one ratio to score, got "
                            f"{len(train_options.ratios)}")
  if not train_options.ratios[0] < 1.0:
    raise errors.UsageError(f"--ratios must be below 1 (runs must hold "
                            f"examples out), got {train_options.ratios[0]}")
  train_options = dataclasses.replace(train_options, signals=True)

  def check_data(data):
    if options.removal_models:
      removal.check_fractions(
          len(data.train_labels),
          detection.parse_fractions(options.removal_fractions))

  report, = training_workflow.make(train_options, say=say,
                                   check_data=check_data)
  collection.Store(train_options.root, report["experiment"],
                   report["ratio"]).check_complete(
                       train_options.num_runs[0],
                       hint="Re-run the same command.")
  options = dataclasses.replace(
      options, root=train_options.root, experiment=report["experiment"],
      ratio=report["ratio"],
      dataset=options.dataset or provenance.absolute_source(
          train_options.dataset),
      data_dir=options.data_dir or train_options.data_dir)
  settings = {"training": {k: (list(v) if isinstance(v, tuple) else v)
                           for k, v in dataclasses.asdict(
                               train_options).items()}}
  result = score(options, settings, write_report)
  result.training = report
  return result
