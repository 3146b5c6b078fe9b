"""Per-epoch training signals of each run, aggregated per example as it trains.

Data-quality scores (`heldout_tf.quality.scores`) need, besides each run's final
correctness, what happened *during* training. The trainer
(`heldout_tf.training.trainer`, with `signals=True`) evaluates each model at
the end of every epoch on its own training subset (float32, evaluation
mode, through the model's `features_and_logits`) and adds, per example,

  margin   logit of the trained label minus the largest other logit (AUM);
  correct  1 if the model predicts the trained label;
  tracin   lr * ||a||^2 * ||p - y||^2, the squared gradient norm of softmax
           cross-entropy with respect to the last Linear layer's weights
           (`a` its input, `p` the softmax, `y` the one-hot trained label):
           TracIn self-influence at this checkpoint (Captum's TracInCPFast);

to running sums (`margins` and `tracin_terms` here). After the last epoch
it keeps each model's softmax on the examples it did *not* train on
(out-of-sample probabilities). With a second training phase on the
held-out complement (second-split forgetting, SSFT) it records the epoch
after which each first-split example stays misclassified.

Memory is bounded by the run: `[m]` running sums, never
`[runs, epochs, n]`. Each run's aggregates are saved as one small file,
`<run>/signals.npz` (`RunSignals`, written atomically), and `load_totals`
sums the files of a collection per example, so a resumed or re-trained run
replaces its file instead of being counted twice.
"""

import dataclasses
import os
from typing import Iterable, Optional

import numpy as np

from heldout_tf.core import errors
from heldout_tf.core import files
from heldout_tf.collection import layout
from heldout_tf.core import npz
from heldout_tf.core import progress as progress_lib
from heldout_tf.collection import runs as runs_lib

SIGNALS_FILENAME = layout.SIGNALS_FILENAME
FORMAT_VERSION = 1


class SignalsError(errors.HeldoutError, ValueError):
  """A signals file is unreadable or inconsistent (names file and key)."""


# ------------------------------------------------------------ per example --


def softmax(logits: np.ndarray) -> np.ndarray:
  """Softmax over the last axis, float64."""
  z = np.asarray(logits, np.float64)
  z = z - z.max(axis=-1, keepdims=True)
  e = np.exp(z)
  return e / e.sum(axis=-1, keepdims=True)


def _label_index(labels, shape):
  return np.broadcast_to(np.asarray(labels, np.int64), shape[:-1])[..., None]


def margins(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """Logit of `labels` minus the largest other logit.

  Args:
    logits: float `[..., n, classes]`.
    labels: int, broadcastable to `[..., n]`.

  Returns:
    float64 `[..., n]`; negative where the label is not predicted.
  """
  logits = np.asarray(logits, np.float64)
  index = _label_index(labels, logits.shape)
  own = np.take_along_axis(logits, index, axis=-1)[..., 0]
  others = logits.copy()
  np.put_along_axis(others, index, -np.inf, axis=-1)
  return own - others.max(axis=-1)


def tracin_terms(features: np.ndarray, logits: np.ndarray,
                 labels: np.ndarray, learning_rate: float) -> np.ndarray:
  """`lr * ||a||^2 * ||softmax(logits) - onehot(labels)||^2`.

  The squared norm of d(cross-entropy)/dW for a last layer `logits = a W + b`
  is `||a||^2 ||p - y||^2` (the gradient is the outer product `a (p - y)^T`).

  Args:
    features: float `[..., n, hidden]`, the last layer's input `a`.
    logits: float `[..., n, classes]`.
    labels: int, broadcastable to `[..., n]`.
    learning_rate: the step size at this checkpoint.

  Returns:
    float64 `[..., n]`.
  """
  a = np.asarray(features)
  squared_norm = np.einsum("...h,...h->...", a, a).astype(np.float64)
  p = softmax(logits)
  p_label = np.take_along_axis(p, _label_index(labels, p.shape), axis=-1)
  residual = np.sum(p * p, axis=-1) - 2.0 * p_label[..., 0] + 1.0
  return learning_rate * squared_norm * residual


# --------------------------------------------------------------- one run --


@dataclasses.dataclass
class RunSignals:
  """One run's per-example aggregates over its training epochs.

  `subset` are the examples the run trained on (sorted), `heldout` the rest.
  Sums run over the run's `epochs` epoch-end checkpoints.
  """
  n_train: int
  num_classes: int
  epochs: int
  learning_rate: float
  subset: np.ndarray          # int64 [m]
  margin_sum: np.ndarray      # float64 [m]: sum over epochs of the margin.
  correct_epochs: np.ndarray  # int32 [m]: epochs ending correct.
  tracin_sum: np.ndarray      # float64 [m]: sum over epochs of the term.
  heldout: np.ndarray         # int64 [k]: examples not trained on.
  heldout_probs: np.ndarray   # float32 [k, classes]: final softmax.
  ssft_epochs: int = 0        # Second-phase epochs (0: no SSFT).
  # int32 [m]: second-phase epoch after which the example stays
  # misclassified (0: already wrong after phase 1; ssft_epochs + 1: never).
  forget_epoch: Optional[np.ndarray] = None

  def save(self, path: str):
    """Writes the run's signals atomically to `path` (an .npz file)."""
    arrays = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
    if arrays["forget_epoch"] is None:
      arrays["forget_epoch"] = np.zeros([0], np.int32)
    for key, dtype in _STORED_DTYPES.items():  # About half the bytes.
      arrays[key] = np.asarray(arrays[key]).astype(dtype)
    arrays["version"] = FORMAT_VERSION
    files.save_npz(path, **{k: np.asarray(v) for k, v in arrays.items()})


_INT_SCALARS = ("n_train", "num_classes", "epochs", "ssft_epochs")
# On disk: int32 indices, float32 sums (summed in float64 while recording),
# int16 epoch counts. Real MNIST: ~1.5 MB per run.
_STORED_DTYPES = {"subset": np.int32, "heldout": np.int32,
                  "margin_sum": np.float32, "tracin_sum": np.float32,
                  "correct_epochs": np.int16, "forget_epoch": np.int16,
                  "heldout_probs": np.float32}


# Bounds of a signals file's scalars (beyond what the caller expects).
MAX_EXAMPLES = runs_lib.MAX_EXAMPLES
MAX_CLASSES = 100_000


def _scalar(reader, key: str, kinds: str, low, high=None):
  """Scalar member `key` of `kinds`, finite and within [low, high]."""
  path = reader.path
  value = reader.read(key, kinds=kinds, shape=())
  value = float(value) if kinds == "f" else int(value)
  if not np.isfinite(value) or value < low or (high is not None and
                                               value > high):
    bound = f"at least {low}" if high is None else f"in {low}..{high}"
    raise SignalsError(f"{path}: key {key!r} is {value}, must be {bound}")
  return value


def _expected(path, key, value, expected):
  if expected is not None and value != expected:
    raise SignalsError(f"{path}: key {key!r} is {value}, but the runs have "
                       f"{expected}")


def read_run_signals(path: str, n_train: Optional[int] = None,
                     num_classes: Optional[int] = None) -> RunSignals:
  """Reads and checks one `signals.npz` (a file or its run directory).

  The file is untrusted: read by `heldout_tf.core.npz` (regular files only, each
  member refused from its header unless its dtype and shape are the ones
  the scalars imply); scalars must be finite numbers in range and equal
  `n_train` / `num_classes` when given; counts must be within the epochs.

  Raises:
    SignalsError: missing file or key, or inconsistent values (names both).
  """
  if os.path.isdir(path):
    path = signals_path(path)
  with npz.Reader(path, SignalsError, max_total_bytes="auto") as reader:
    reader.require([f.name for f in dataclasses.fields(RunSignals)])
    values = dict(
        n_train=_scalar(reader, "n_train", "iu", 1, MAX_EXAMPLES),
        num_classes=_scalar(reader, "num_classes", "iu", 1, MAX_CLASSES),
        epochs=_scalar(reader, "epochs", "iu", 1),
        learning_rate=_scalar(reader, "learning_rate", "f", 0.0),
        ssft_epochs=_scalar(reader, "ssft_epochs", "iu", 0))
    _expected(path, "n_train", values["n_train"], n_train)
    _expected(path, "num_classes", values["num_classes"], num_classes)
    n, classes = values["n_train"], values["num_classes"]
    subset = reader.read("subset", kinds="iu", ndim=1, max_elements=n)
    m, k = len(subset), n - len(subset)
    values.update(
        subset=subset,
        heldout=reader.read("heldout", kinds="iu", shape=(k,)),
        margin_sum=reader.read("margin_sum", kinds="f", shape=(m,)),
        correct_epochs=reader.read("correct_epochs", kinds="iu",
                                   shape=(m,)),
        tracin_sum=reader.read("tracin_sum", kinds="f", shape=(m,)),
        heldout_probs=reader.read("heldout_probs", kinds="f",
                                  shape=(k, classes)),
        forget_epoch=(reader.read("forget_epoch", kinds="iu", shape=(m,))
                      if values["ssft_epochs"] else None))
  signals = RunSignals(**values)
  _check(signals, path)
  return signals


def _check(s: RunSignals, path: str):
  """Shapes, the subset/heldout split and count ranges of `s`."""
  m, k = len(s.subset), len(s.heldout)
  if m + k != s.n_train:
    raise SignalsError(f"{path}: keys 'subset' ({m}) and 'heldout' ({k}) "
                       f"do not add up to n_train={s.n_train}")
  for key in ("margin_sum", "correct_epochs", "tracin_sum") + (
      ("forget_epoch",) if s.forget_epoch is not None else ()):
    if getattr(s, key).shape != (m,):
      raise SignalsError(f"{path}: key {key!r} has shape "
                         f"{getattr(s, key).shape}, expected ({m},)")
  if s.heldout_probs.shape != (k, s.num_classes):
    raise SignalsError(f"{path}: key 'heldout_probs' has shape "
                       f"{s.heldout_probs.shape}, expected "
                       f"({k}, {s.num_classes})")
  both = np.concatenate([s.subset, s.heldout])
  if both.size and (not np.issubdtype(both.dtype, np.integer) or
                    both.min() < 0 or both.max() >= s.n_train or
                    len(np.unique(both)) != s.n_train):
    raise SignalsError(f"{path}: keys 'subset' and 'heldout' must split "
                       f"0..{s.n_train - 1} into two disjoint sets")
  for key, high in (("correct_epochs", s.epochs),
                    ("forget_epoch", s.ssft_epochs + 1)):
    values = getattr(s, key)
    if values is not None and values.size and (values.min() < 0 or
                                               values.max() > high):
      bad = values.min() if values.min() < 0 else values.max()
      raise SignalsError(f"{path}: key {key!r} must be in 0..{high}, has "
                         f"{bad}")


# ------------------------------------------------------------ collection --


@dataclasses.dataclass
class Totals:
  """Per-example sums over the runs of a collection."""
  n_in: np.ndarray            # int64 [n]: runs that trained on i.
  epochs_in: np.ndarray       # int64 [n]: their epochs, summed.
  margin_sum: np.ndarray      # float64 [n]
  correct_epochs: np.ndarray  # int64 [n]
  tracin_sum: np.ndarray      # float64 [n]
  n_out: np.ndarray           # int64 [n]: runs that held i out.
  prob_sum: np.ndarray        # float64 [n, classes]: their final softmax.
  ssft_runs: np.ndarray       # int64 [n]: runs with forgetting recorded.
  forget_fraction_sum: np.ndarray  # float64 [n]: forget_epoch/(epochs+1).
  num_runs: int = 0

  @classmethod
  def zeros(cls, n_train: int, num_classes: int) -> "Totals":
    z = lambda dtype: np.zeros(n_train, dtype)
    return cls(n_in=z(np.int64), epochs_in=z(np.int64),
               margin_sum=z(np.float64), correct_epochs=z(np.int64),
               tracin_sum=z(np.float64), n_out=z(np.int64),
               prob_sum=np.zeros([n_train, num_classes]),
               ssft_runs=z(np.int64), forget_fraction_sum=z(np.float64))

  @property
  def n_train(self) -> int:
    return len(self.n_in)

  @property
  def num_classes(self) -> int:
    return self.prob_sum.shape[1]

  def add(self, s: RunSignals, where: str = "signals"):
    """Adds one run's signals (checked against the totals' sizes)."""
    if (s.n_train, s.num_classes) != (self.n_train, self.num_classes):
      raise SignalsError(
          f"{where}: has n_train={s.n_train}, num_classes={s.num_classes}; "
          f"the other runs {self.n_train}, {self.num_classes}")
    i, o = s.subset, s.heldout
    self.n_in[i] += 1
    self.epochs_in[i] += s.epochs
    self.margin_sum[i] += s.margin_sum
    self.correct_epochs[i] += s.correct_epochs
    self.tracin_sum[i] += s.tracin_sum
    self.n_out[o] += 1
    self.prob_sum[o] += s.heldout_probs
    if s.forget_epoch is not None:
      self.ssft_runs[i] += 1
      self.forget_fraction_sum[i] += s.forget_epoch / (s.ssft_epochs + 1.0)
    self.num_runs += 1


def check_run(s: RunSignals, path: str):
  """Raises unless signals `s` (read from `path`) belong to the run whose
  directory holds `path`: its subset must be the `subsample_idx` of the
  run's `aux_arrays.npz`, over the same training set.

  Raises:
    SignalsError: they do not (e.g. a file copied from another run).
    runs.AuxArraysError: the run's aux arrays are missing or unreadable.
  """
  run_path = os.path.dirname(os.path.abspath(path))
  aux = runs_lib.read_aux(run_path, n_train=s.n_train)
  aux_n_train = len(aux["index_train"]) + len(aux["index_removed"])
  trained = np.unique(aux["subsample_idx"])
  if aux_n_train != s.n_train or not np.array_equal(np.sort(s.subset),
                                                    trained):
    raise SignalsError(
        f"{path}: not the signals of its run: they cover {len(s.subset)} "
        f"of {s.n_train} examples, the run's {runs_lib.AUX_FILENAME} trained "
        f"on {len(trained)} of {aux_n_train}"
        + ("" if len(trained) != len(s.subset) or aux_n_train != s.n_train
           else " (other examples)") + "; was it copied from another run?")


def load_totals(paths: Iterable[str], n_train: int, num_classes: int,
                progress: bool = True, check_runs: bool = True) -> Totals:
  """Sums the `signals.npz` of `paths` (files or run directories).

  Each file is read by `read_run_signals` (with `n_train` and `num_classes`
  expected) and, when `check_runs`, checked against its run (`check_run`:
  the run's `aux_arrays.npz` beside it); all files must share `epochs`,
  `ssft_epochs` and `learning_rate` (one collection's settings).

  Memory: `O(n_train * num_classes)`, whatever the number of runs.

  Raises:
    SignalsError, runs.AuxArraysError: naming the file at fault.
  """
  paths = [signals_path(p) if os.path.isdir(p) else p for p in paths]
  totals = Totals.zeros(n_train, num_classes)
  first = None
  with progress_lib.bar(len(paths), "reading signals", "run",
                        enabled=progress) as bar:
    for path in paths:
      s = read_run_signals(path, n_train, num_classes)
      if check_runs:
        check_run(s, path)
      settings = (s.epochs, s.ssft_epochs, s.learning_rate)
      if first is None:
        first = (settings, path)
      elif settings != first[0]:
        raise SignalsError(
            f"{path}: epochs, ssft_epochs, learning_rate {settings} differ "
            f"from {first[0]} in {first[1]}: not one collection's signals")
      totals.add(s, path)
      bar.update(1)
  return totals


def signals_path(run_path: str) -> str:
  """`<run>/signals.npz`."""
  return os.path.join(run_path, SIGNALS_FILENAME)
