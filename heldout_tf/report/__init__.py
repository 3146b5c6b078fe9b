"""A report you can browse: one self-contained HTML page per collection.

  summary = heldout_tf.report.write("./heldout_mnist", "mnist-mlp",
                                    "report.html")
  print(summary.path, summary.num_bytes)

or `heldout report --root DIR --out FILE` (`heldout_tf.cli.report`). The
page opens from `file://` with no network (data and thumbnails are
embedded; a Content-Security-Policy forbids every request and runs only
the page's own script) and shows the collection's provenance, a summary,
linked histograms, the examples grid, high-influence pairs, the
attribution results (LDS table, each test example's top influencers),
suspicious candidates, search, `#train/<i>` / `#test/<j>` example cards and downloads
with their sha256. See docs/report.md.

`write_for_quality` is the writer `heldout quality` is given (the quality
stage sits below this one and never imports it).

Modules: `inputs` (where the files are, reading them untrusted),
`results` (the estimates and scores files, checked against the runs),
`attribution` (the LDS table and the influencers),
`columns` (the scores and their rankings), `describe` (the provenance
facts), `gather` (all the numbers: `ReportData`), `images` (the dataset's
images as sprite sheets), `page` (the HTML; its sections, and the script
and style in `static/report.js`, `static/report.css`).
"""

import dataclasses
import datetime
import time
from typing import List, Optional, Tuple

import numpy as np

from heldout_tf.core import errors
from heldout_tf.core import files
from heldout_tf.report import columns as columns_lib
from heldout_tf.report import gather as gather_lib
from heldout_tf.report import images as images_lib
from heldout_tf.report import page
from heldout_tf.report.images import Images  # noqa: F401  (for `images=`)
from heldout_tf.report.inputs import ReportInputError  # noqa: F401

PRIORITY_PER_SCORE = 500  # Per end: examples first given thumbnails.


@dataclasses.dataclass(frozen=True)
class Summary:
  """What `write` made."""
  path: str
  num_bytes: int
  n_train: int
  n_test: int
  num_runs: int
  images: bool       # Thumbnails embedded.
  images_note: str   # Why not, when not.
  seconds: float
  warnings: Tuple[str, ...] = ()  # What the page warns about, one line each.


def _priority(data: gather_lib.ReportData) -> List[int]:
  """Training examples worth a thumbnail first (when not all fit)."""
  first = list(data.pairs["tr_idx"])
  influencers = data.attribution.influencers
  if influencers is not None:  # The test cards' first influencers.
    for key in ("top_pos_idx", "top_neg_idx"):
      top = influencers[key][:, :4].ravel()
      first += list(top[top >= 0])
  first += list(np.argsort(data.mean_rank, kind="stable")[:PRIORITY_PER_SCORE])
  for column in data.columns:
    ranked = columns_lib.top_k(column, len(column.values))
    first += list(ranked[:PRIORITY_PER_SCORE])
    first += list(ranked[::-1][:PRIORITY_PER_SCORE])
  return [int(i) for i in first]


def _thumbnails(data: gather_lib.ReportData, loaded: images_lib.Images,
                budget_bytes: int):
  """`(sprites by split, description)`; fills in the labels and class
  names the images' dataset knows and the estimates did not."""
  sprites = {
      "train": images_lib.sprites(loaded.train, _priority(data),
                                  budget_bytes),
      "test": images_lib.sprites(loaded.test, list(data.pairs["tt_idx"]),
                                 budget_bytes)}
  if loaded.class_names and not data.class_names:
    data.class_names = loaded.class_names
  if data.labels is None:  # The labels the runs were trained with.
    data.labels = loaded.train_labels
  if data.test_labels is None:
    data.test_labels = loaded.test_labels
  description = loaded.description
  shown = {k: int(np.sum(s.slots >= 0)) for k, s in sprites.items()}
  if shown["train"] < data.n_train or shown["test"] < data.n_test:
    description += (f" (thumbnails of {shown['train']} training and "
                    f"{shown['test']} test examples: the rest exceed the "
                    "size budget)")
  return sprites, description


def write(root: str, experiment: str, out: str,
          ratio: Optional[float] = None, estimates: Optional[str] = None,
          scores: Optional[str] = None, lds: Optional[str] = None,
          attribution: Optional[str] = None, data_dir: Optional[str] = None,
          progress: bool = True, with_images: bool = True,
          images: Optional[images_lib.Images] = None,
          budget_bytes: int = images_lib.DEFAULT_BUDGET_BYTES,
          now: Optional[datetime.datetime] = None, runs=None,
          totals=None) -> Summary:
  """Writes the report of `<root>/<experiment>` to the HTML file `out`.

  Args:
    root: the collection root holding `<experiment>/<ratio>/<run>/`.
    experiment: the experiment's directory name (e.g. 'mnist-mlp'); '':
      the only one under `root`.
    out: the HTML file to write (atomically; directories are made).
    ratio: the subset ratio to report on (None: the only one, or all).
    estimates: an estimates npz; None: `<ratio>/estimates.npz` if present,
      else computed from the runs.
    scores: a quality scores npz; None: `<ratio>/quality/scores.npz` if
      `heldout quality` finished writing it (its manifest.json lists it;
      otherwise `Summary.warnings` says so and the page shows no scores).
    lds: a `heldout lds` table; None: `<ratio>/attribution/lds.npz` if
      present.
    attribution: a score file (`heldout datamodels`', an estimates file,
      your own) whose top influencers the test cards show; None:
      `<ratio>/attribution/datamodels.npz` if present.
    data_dir: the tfds data directory (MNIST, CIFAR) for the images;
      nothing is downloaded.
    progress: progress bars while loading.
    with_images: False: no thumbnails (no dataset is read).
    images: the collection's images, when the caller has them (e.g. a
      pipeline that just trained on them); None: loaded as above.
    budget_bytes: thumbnails per split beyond this many PNG bytes are left
      out (the most interesting examples keep theirs).
    now: the time stamp shown on the page (default now).
    runs, totals: the runs and signal totals the caller has read (see
      `gather_lib.gather`); None: read here.

  Returns:
    A `Summary` (`summary.path` is `out`).

  Raises:
    errors.PathError if `out` cannot be written (checked first);
    ReportInputError / other `errors.HeldoutError` for bad inputs.
  """
  start = time.perf_counter()
  files.check_writable(out)
  data = gather_lib.gather(root, experiment, ratio, estimates, scores,
                           progress=progress, now=now, lds_path=lds,
                           attribution_path=attribution, runs=runs,
                           totals=totals)
  sprites, note, description = None, "no images (not asked for)", ""
  if with_images:
    loaded, note = (images, "") if images is not None else images_lib.load(
        data.experiment, data.config, data_dir, data.n_train, data.n_test)
    if loaded is not None and (len(loaded.train), len(loaded.test)) != (
        data.n_train, data.n_test):
      raise errors.UsageError(
          f"images: {len(loaded.train)} / {len(loaded.test)} examples, the "
          f"runs have {data.n_train} / {data.n_test}")
    if loaded is not None:
      sprites, description = _thumbnails(data, loaded, budget_bytes)
  meta, blob = page.build(data, sprites, note, description)
  text = page.render(meta, blob).encode("utf-8")
  files.atomic_write(out, lambda f: f.write(text))
  return Summary(path=out, num_bytes=len(text), n_train=data.n_train,
                 n_test=data.n_test, num_runs=data.num_runs,
                 images=sprites is not None, images_note=note,
                 seconds=time.perf_counter() - start,
                 warnings=tuple(data.warnings))


def write_for_quality(*, root: str, experiment: str, ratio: float, out: str,
                      scores: str, data, data_dir: Optional[str] = None,
                      progress: bool = True, runs=None,
                      totals=None) -> str:
  """The report `heldout quality` writes beside the scores it just wrote
  (`heldout_tf.quality.workflow.score`'s `write_report`): of the collection
  at `ratio`, with the scores file `scores` and the images of `data` (the
  `ImageData` scored, not loaded again, nor the `runs` and signal
  `totals` it scored when given). Returns `out`."""
  names = (list(data.class_names) if data.class_names else
           [str(c) for c in range(data.num_classes)])
  images = Images(data.train_images, data.test_images, data.description,
                  names, data.train_labels, data.test_labels)
  return write(root, experiment, out, ratio=ratio, scores=scores,
               data_dir=data_dir, progress=progress, images=images,
               runs=runs, totals=totals).path
