"""TracIn train x test on the last layer, from a collection's trajectory
checkpoints (Pruthi et al. 2020; the last-layer variant of Captum's
`TracInCPFast`).

A run trained with `heldout train --trajectory_runs K` (runs 0..K-1) keeps
every epoch's checkpoint, `<run>/trajectory/ckpt-<epoch>`. TracIn scores
training example i's effect on test example j as the sum, over those
checkpoints c, of the learning rate times the dot product of the two
examples' loss gradients. On the last linear layer (`logits = a W + b`,
softmax cross-entropy) the gradient with respect to W is the outer product
a (p - y)^T, so the dot product factorises:

  tracin_c(i, j) = lr_c (a_i . a_j) ((p_i - y_i) . (p_j - y_j))
  tau(i, j)      = mean over the trajectory runs of sum_c tracin_c(i, j)

with a the layer's input and p the softmax at checkpoint c
(`models.features_and_logits`, evaluation mode, float32), y the one-hot
label (of the training set as the runs trained on it, label noise
included), and lr_c the learning rate of the last step of the checkpoint's
epoch (as the data-quality TracIn self-influence,
`collection.signals.tracin_terms`). Positive: a step on i lowers j's loss
(a proponent), so raises its margin. Every training example is scored at
every checkpoint, whether the run trained on it or not (what a step on it
would have done).

Settings (ours): the bias's gradient is left out (as Captum's fast
variant; it would add (p_i - y_i) . (p_j - y_j)); plain cross-entropy,
without the recipe's label smoothing; a scaled head (ResNet-9 multiplies
its logits by 0.125) scales every score alike; several runs' trajectories
are averaged (an ensemble).

Memory: one checkpoint's features at a time (float64 [n, d + classes] for
the training and the test set). The linear datamodeling score needs only
each evaluation run's predicted group effect g_r(j) = sum_{i in S_r}
tau(i, j), which factorises as well,

  g_r(j) = sum_c lr_c sum_{k, l} a_jk (p_j - y_j)_l  sum_{i in S_r} a_ik (p_i - y_i)_l

so `TracIn.group_effects` streams the checkpoints once and holds a [runs,
d x classes] sum, never the [n_test, n_train] scores; `TracIn.scores(cols)`
gives the dense scores of a block of test examples.

  source = tracin.source(root, "digits-mlp", fit_run_ids=range(700))
  results = lds.score(eval_runs, [source])

TensorFlow is imported only to restore and evaluate checkpoints.
"""

import dataclasses
import glob
import os
import re
from typing import Iterator, List, Optional, Sequence, Tuple
import weakref

import numpy as np

from heldout_tf.collection import layout
from heldout_tf.collection import selection
from heldout_tf.collection import runs as runs_lib
from heldout_tf.collection import signals
from heldout_tf.core import errors
from heldout_tf.estimates import attributions
from heldout_tf.estimates import counting

NAME = "TracIn, last layer"
_CKPT_RE = re.compile(r"ckpt-(\d+)\.index")
_CHUNK_BYTES = 64 << 20  # Outer products a (p - y)^T formed at a time.
_SCORE_BLOCK = 1024  # Test examples per block of `Source.scores`.
_FORWARD = weakref.WeakKeyDictionary()  # model -> compiled forward pass.


class TracInError(errors.HeldoutError, ValueError):
  """No trajectories to score with, or a trajectory that does not fit its
  collection (names the file)."""


@dataclasses.dataclass(frozen=True)
class Checkpoint:
  """One trajectory checkpoint and the learning rate of its epoch."""
  ratio: float
  run: int
  epoch: int  # 1-based: the checkpoint after this many epochs.
  prefix: str  # `<run>/trajectory/ckpt-<epoch>`.
  learning_rate: float


def trajectory_dir(run_path: str) -> str:
  """`<run>/trajectory/`."""
  return os.path.join(run_path, layout.TRAJECTORY_DIRNAME)


def epochs_on_disk(run_path: str) -> List[int]:
  """The epochs of the run's trajectory checkpoints, sorted (empty: none)."""
  found = glob.glob(os.path.join(glob.escape(trajectory_dir(run_path)),
                                 "ckpt-*.index"))
  return sorted(int(m.group(1)) for m in (
      _CKPT_RE.fullmatch(os.path.basename(f)) for f in found) if m)


def trajectory_runs(root: str, experiment: str, ratios=None,
                    run_ids: Optional[Sequence[int]] = None
                    ) -> List[layout.RunPath]:
  """The finished runs (of `run_ids`, at `ratios`; None: all) with
  trajectory checkpoints, sorted."""
  wanted = None if run_ids is None else set(int(r) for r in run_ids)
  return [r for r in layout.list_runs(root, experiment, ratios)
          if (wanted is None or r.run in wanted) and
          os.path.isfile(os.path.join(r.path, layout.AUX_FILENAME)) and
          epochs_on_disk(r.path)]


def checkpoints_of(run: layout.RunPath, recipe) -> List[Checkpoint]:
  """Run `run`'s trajectory checkpoints with their learning rates, by
  `recipe` (a `training.recipes.Recipe`) on the run's subset (its aux
  arrays' size). TracInError unless it has every epoch's, 1..epochs."""
  size = len(runs_lib.read_aux(run.path)["index_train"])
  rates = recipe.learning_rates(size)
  steps = recipe.steps_per_epoch(size)
  epochs = epochs_on_disk(run.path)
  if epochs != list(range(1, recipe.epochs + 1)):
    raise TracInError(
        f"{trajectory_dir(run.path)}: checkpoints of epochs "
        f"{selection.format_run_ids(epochs)}; the recipe trains "
        f"{recipe.epochs} (a trajectory is every epoch's)")
  return [Checkpoint(run.ratio, run.run, epoch,
                     os.path.join(trajectory_dir(run.path), f"ckpt-{epoch}"),
                     float(rates[epoch * steps - 1])) for epoch in epochs]


def residuals(logits, labels) -> np.ndarray:
  """float64 `softmax(logits) - onehot(labels)` [n, classes]: the gradient
  of cross-entropy with respect to the logits."""
  r = signals.softmax(logits)
  r[np.arange(len(r)), np.asarray(labels, np.int64)] -= 1.0
  return r


@dataclasses.dataclass
class Terms:
  """One checkpoint's factors: last-layer inputs a and residuals p - y."""
  learning_rate: float
  a_train: np.ndarray  # float64 [n_train, d]
  r_train: np.ndarray  # float64 [n_train, classes]
  a_test: np.ndarray   # float64 [n_test, d]
  r_test: np.ndarray   # float64 [n_test, classes]


@dataclasses.dataclass
class Trajectories:
  """The trajectory checkpoints of some runs of one collection, with the
  model they restore into and the data they are evaluated on."""
  checkpoints: List[Checkpoint]
  model: object  # A built snt.Module of the collection's architecture.
  data: object   # The `ImageData` the runs were trained on.
  batch_size: int = 200


def _outer(a, r, rows) -> np.ndarray:
  """float64 [k, d * classes]: a_i (p_i - y_i)^T of `rows`, flattened."""
  return (a[rows, :, None] * r[rows, None, :]).reshape(
      rows.stop - rows.start, -1)


class TracIn:
  """TracIn scores of a collection, over the checkpoints of its
  trajectory runs (several models' trajectories may be given)."""

  def __init__(self, trajectories: Sequence[Trajectories]):
    self.trajectories = list(trajectories)
    if not any(t.checkpoints for t in self.trajectories):
      raise TracInError("no trajectory checkpoints to score with")
    first = self.trajectories[0].data
    self.n_train = len(first.train_labels)
    self.n_test = len(first.test_labels)
    self.runs = sorted({(c.ratio, c.run) for t in self.trajectories
                        for c in t.checkpoints})

  @property
  def num_checkpoints(self) -> int:
    return sum(len(t.checkpoints) for t in self.trajectories)

  def terms(self) -> Iterator[Terms]:
    """Each checkpoint's `Terms`, restored and evaluated one at a time."""
    from heldout_tf.collection import checkpoints as checkpoints_lib  # pylint: disable=g-import-not-at-top
    for t in self.trajectories:
      for c in t.checkpoints:
        checkpoints_lib.restore(t.model, c.prefix)
        a_train, logits = _features(t.model, t.data.train_images,
                                    t.batch_size)
        r_train = residuals(logits, t.data.train_labels)
        a_test, logits = _features(t.model, t.data.test_images, t.batch_size)
        yield Terms(c.learning_rate, a_train, r_train, a_test,
                    residuals(logits, t.data.test_labels))

  def scores(self, cols: slice) -> np.ndarray:
    """float64 [t, n_train]: tau of the test examples `cols` (every
    checkpoint restored once per call)."""
    out = None
    for term in self.terms():
      block = term.learning_rate * (
          (term.a_test[cols] @ term.a_train.T) *
          (term.r_test[cols] @ term.r_train.T))
      out = block if out is None else out + block
    return out / len(self.runs)

  def group_effects(self, mask) -> np.ndarray:
    """float64 [runs, n_test]: sum over each run's training examples
    (`mask` bool [runs, n_train]) of tau, by the factorised sum (every
    checkpoint restored once)."""
    mask = np.asarray(mask, np.float64)
    out = np.zeros([len(mask), self.n_test])
    for term in self.terms():
      width = term.a_train.shape[1] * term.r_train.shape[1]
      rows = max(1, _CHUNK_BYTES // (8 * width))
      summed = np.zeros([len(mask), width])  # sum_{i in S_r} a_i r_i^T.
      for chunk in counting.chunks(self.n_train, rows):
        summed += mask[:, chunk] @ _outer(term.a_train, term.r_train, chunk)
      for chunk in counting.chunks(self.n_test, rows):
        out[:, chunk] += term.learning_rate * (
            summed @ _outer(term.a_test, term.r_test, chunk).T)
    return out / len(self.runs)


def _features(model, images, batch_size: int
              ) -> Tuple[np.ndarray, np.ndarray]:
  """`(a float64 [n, d], logits float32 [n, classes])` of `model` on uint8
  `images` (evaluation mode, float32)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from heldout_tf import models  # pylint: disable=g-import-not-at-top
  from heldout_tf.data import image_data  # pylint: disable=g-import-not-at-top
  forward = _FORWARD.get(model)
  if forward is None:  # Traced once per model; holds it weakly.
    model_ref = weakref.ref(model)
    forward = tf.function(
        lambda x: models.features_and_logits(model_ref(), x),
        reduce_retracing=True)
    _FORWARD[model] = forward
  features, logits = [], []
  for start in range(0, len(images), batch_size):
    a, z = forward(tf.constant(image_data.as_float(
        images[start:start + batch_size])))
    features.append(a.numpy())
    logits.append(z.numpy())
  return (np.concatenate(features).astype(np.float64),
          np.concatenate(logits))


class Source(attributions.Source):
  """TracIn as an attribution to judge (`heldout_tf.estimates.lds`)."""

  def __init__(self, tracin: TracIn, name: str = ""):
    super().__init__(name or f"{NAME} ({describe(tracin)})", tracin.runs)
    self.tracin = tracin

  def check(self, n_train, n_test):
    if (self.tracin.n_train, self.tracin.n_test) != (n_train, n_test):
      raise attributions.ScoresError(
          f"{self.name}: the trajectories' data has (n_train, n_test) = "
          f"{(self.tracin.n_train, self.tracin.n_test)}, the collection "
          f"{(n_train, n_test)}")

  def scores(self):
    """Blocks of dense scores (every checkpoint restored once a block)."""
    for cols in counting.chunks(self.tracin.n_test, _SCORE_BLOCK):
      yield cols, self.tracin.scores(cols)

  def predictions(self, mask_eval):
    yield slice(0, self.tracin.n_test), self.tracin.group_effects(mask_eval)


def describe(tracin: TracIn) -> str:
  """'trajectories of 2 runs (ratio 0.5: runs 0-1), 20 checkpoints'."""
  parts = []
  for ratio in sorted({ratio for ratio, _ in tracin.runs}):
    ids = [run for r, run in tracin.runs if r == ratio]
    parts.append(f"ratio {ratio:g}: runs {selection.format_run_ids(ids)}")
  return (f"trajectories of {len(tracin.runs)} runs ({'; '.join(parts)}), "
          f"{tracin.num_checkpoints} checkpoints")


def from_collection(root: str, experiment: str, ratios=None,
                    run_ids: Optional[Sequence[int]] = None, model: str = "",
                    dataset: str = "", data_dir: Optional[str] = None
                    ) -> TracIn:
  """TracIn over the trajectory runs of `run_ids` (None: every run) at
  `ratios`, each ratio's model built from its recorded config.json.

  `model`: --model as given (a recorded user module is imported only when
  named again, `models.recorded_model`); `dataset`, `data_dir`: where the
  recorded data is, when not where it was (`provenance.load_recorded`).

  Raises:
    TracInError: no trajectory checkpoints among the runs;
    errors.ConfigError / provenance errors: a config.json or data that
      cannot rebuild the runs' model and training set.
  """
  # pylint: disable=g-import-not-at-top
  from heldout_tf import collection
  from heldout_tf import models
  from heldout_tf.collection import provenance
  from heldout_tf.training import settings as settings_lib
  # pylint: enable=g-import-not-at-top
  found = trajectory_runs(root, experiment, ratios, run_ids)
  if not found:
    raise TracInError(
        f"no trajectory checkpoints (<run>/{layout.TRAJECTORY_DIRNAME}/"
        f"ckpt-<epoch>) among the fitting runs under "
        f"{os.path.join(root, experiment)}: train with --trajectory_runs K "
        "to keep runs 0..K-1's")
  groups, loaded = [], {}
  for ratio in sorted({r.ratio for r in found}):
    store = collection.Store(root, experiment, ratio)
    config = store.require_config()
    settings = settings_lib.from_config(config, store.config_path, model)
    key = (config.get("source"), config.get("data_fingerprint"))
    if key not in loaded:
      loaded[key] = provenance.load_recorded(config, store.config_path,
                                             dataset, data_dir)[0]
    data = loaded[key]
    net = models.build_model(settings.model, data.num_classes, **settings.options)
    models.ensure_built(net, shape=data.image_shape)
    checkpoints = [c for r in found if r.ratio == ratio
                   for c in checkpoints_of(r, settings.recipe)]
    groups.append(Trajectories(checkpoints, net, data,
                               settings.recipe.eval_batch_size))
  return TracIn(groups)
