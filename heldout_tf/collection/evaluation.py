"""Evaluating a model on a split, and checking it against a run's record.

  result = evaluation.evaluate(model, dataset, "test")   # logits, labels
  check = evaluation.cross_check(aux, result, "test")     # "N out of M match"

`evaluate` is the one evaluation pass of the kit: the trainers record each
run's correctness (and margins) with it, and `collection.reevaluation`
re-runs it on restored runs to cross-check their `aux_arrays.npz`. A split
that fits in memory is read once (`read_split`) for many models.
"""

import dataclasses
import re
from typing import Iterable, Optional
import weakref

import numpy as np
import tensorflow as tf

from heldout_tf import models
from heldout_tf.data import image_data
from heldout_tf.core import errors
from heldout_tf.core import progress as progress_lib

class CrossCheckError(errors.HeldoutError, ValueError):
  """aux_arrays.npz and the evaluation do not cover the same examples."""


_COMPILED = weakref.WeakKeyDictionary()
# `evaluate_runs` reads a split into memory once when its images take at
# most this many bytes (CIFAR train: 614 MB as float32); larger ones stream.
READ_ONCE_MAX_BYTES = 2 << 30


def _eval_options():
  """tf.data options for one evaluation pass.

  With autotuning on, destroying the iterator at the end of a pass sometimes
  waited ~0.4-0.9 s for tf.data's tuning thread (measured on 2 CPU cores):
  a fixed cost per run that evaluating many runs should not pay.
  """
  options = tf.data.Options()
  options.autotune.enabled = False
  return options


@dataclasses.dataclass
class EvalResult:
  """Per-example evaluation of one model on one split, in dataset order."""
  logits: np.ndarray  # float32 [n, num_classes]
  labels: np.ndarray  # int64 [n]
  index: np.ndarray  # int64 [n], canonical example index

  @property
  def predictions(self) -> np.ndarray:
    return np.argmax(self.logits, axis=-1)

  @property
  def correct(self) -> np.ndarray:
    return self.predictions == self.labels

  @property
  def accuracy(self) -> float:
    return float(np.mean(self.correct)) if len(self.labels) else float("nan")


@dataclasses.dataclass
class CrossCheck:
  """How many recomputed correctness bits equal the recorded ones."""
  split: str
  matched: int
  total: int
  mismatched_index: np.ndarray  # canonical indices that disagree

  @property
  def ok(self) -> bool:
    return self.matched == self.total

  def __str__(self):
    return f"{self.matched} out of {self.total} predictions match"


def compiled_forward(model):
  """The model's evaluation-mode forward pass, traced once per model.

  The function holds the model weakly: a strong reference from the cached
  value would keep every model (and its graph) alive forever.
  """
  fn = _COMPILED.get(model)
  if fn is None:
    model_ref = weakref.ref(model)
    fn = tf.function(lambda images: models.call(model_ref(), images),
                     reduce_retracing=True)
    _COMPILED[model] = fn
  return fn


def op_error_message(error: tf.errors.OpError) -> str:
  """A TensorFlow op error's message without the op and node trace."""
  lines = [line.strip() for line in error.message.splitlines()
           if line.strip()]
  for line in lines:
    if "assertion failed: [" in line:
      # tf.debugging.Assert prints a single string as "[...]".
      text = line.split("assertion failed: [", 1)[1]
      return text[:text.rindex("]")] if "]" in text else text
  for line in lines:
    if not line.startswith(("Graph execution error:", "Detected at node",
                            "File ")):
      line = re.sub(r"\{\{[^}]*\}\}\s*", "", line)
      return re.sub(r"\s*\[Op:[^\]]*\].*$", "", line)
  return str(error)


@dataclasses.dataclass
class SplitBatches:
  """One split of a dataset, batched: read from the pipeline on every pass,
  or once into memory (`read_split`)."""
  name: str  # The dataset's name, for messages.
  split: str
  batches: Iterable  # Of {'image', 'label', 'index'} batches.
  num_examples: Optional[int]


def _batches(dataset, split: str, batch_size: int) -> SplitBatches:
  batches, num_examples = dataset.batches(split, batch_size)
  return SplitBatches(dataset.name, split,
                      batches.with_options(_eval_options()), num_examples)


def _read_batches(source: SplitBatches):
  """Yields `source`'s batches; `image_data.DataError` for data that cannot
  be read (an undecodable image, an ImageNet file name missing from the
  index map)."""
  try:
    yield from source.batches
  except tf.errors.InvalidArgumentError as e:
    raise image_data.DataError(f"{op_error_message(e)} (reading "
                               f"{source.name} {source.split})") from e


def read_split(dataset, split: str, batch_size: int = 200,
               max_bytes: int = READ_ONCE_MAX_BYTES) -> SplitBatches:
  """`split` of `dataset`, decoded once into memory when it fits.

  Evaluating many runs then pays for reading and decoding the images once,
  not once per run. A split whose images would take more than `max_bytes`
  as float32 (ImageNet) stays a pipeline, read on every pass.
  """
  source = _batches(dataset, split, batch_size)
  spec = source.batches.element_spec["image"]
  per_example = int(np.prod(spec.shape[1:])) * spec.dtype.size if (
      spec.shape[1:].is_fully_defined()) else None
  if (source.num_examples is None or per_example is None or
      source.num_examples * per_example > max_bytes):
    return source
  return dataclasses.replace(source, batches=list(_read_batches(source)))


def array_batches(name: str, split: str, images, labels,
                  batch_size: int = 200) -> SplitBatches:
  """`split`'s uint8 `images` and `labels` held in memory, batched as
  `read_split` would hold `pipelines.array_split`'s (the same float32
  `uint8 / 255.0` images, int64 labels, indices 0..n-1) without a tf.data
  pass over every example."""
  from heldout_tf.data import pipelines  # pylint: disable=g-import-not-at-top
  images, labels = pipelines.check_arrays(images, labels)
  batches = []
  for start in range(0, len(labels), batch_size):
    stop = min(start + batch_size, len(labels))
    batches.append({
        "image": pipelines.scaled(tf.constant(images[start:stop])),
        "label": labels[start:stop],
        "index": np.arange(start, stop, dtype=np.int64)})
  return SplitBatches(name, split, batches, len(labels))


def evaluate(model, dataset, split: str, batch_size: int = 200,
             progress: bool = True) -> EvalResult:
  """Evaluates `model` on `split` of a `heldout_tf.data.pipelines.Dataset` (or on a
  `SplitBatches` from `read_split`, then `split` must be its split).

  Returns logits, labels and canonical indices in dataset order. Raises
  `image_data.DataError` (a HeldoutError and ValueError) when the data
  cannot be read or the split is empty.
  """
  forward = compiled_forward(model)
  if isinstance(dataset, SplitBatches):
    source = dataset
  else:
    source = _batches(dataset, split, batch_size)
  logits, labels, index = [], [], []
  with progress_lib.bar(source.num_examples, f"evaluate {split}", "img",
                        enabled=progress) as bar:
    for batch in _read_batches(source):
      logits.append(forward(batch["image"]).numpy())
      labels.append(np.asarray(batch["label"]))
      index.append(np.asarray(batch["index"]))
      bar.update(len(index[-1]))
  if not logits:
    raise image_data.DataError(f"Split {split!r} of {source.name} is empty")
  return EvalResult(np.concatenate(logits), np.concatenate(labels),
                    np.concatenate(index))


def recorded_correctness(aux, split: str):
  """`(index, correctness)` recorded in aux_arrays for `split`.

  For 'train' this is train + removed: the whole training set.
  """
  if split == "train":
    parts = ("train", "removed")
  elif split == "test":
    parts = ("test",)
  else:
    raise errors.UsageError(
        f"split must be 'train' or 'test', got {split!r}")
  index = np.concatenate([np.asarray(aux[f"index_{p}"]) for p in parts])
  correct = np.concatenate(
      [np.asarray(aux[f"correctness_{p}"], bool) for p in parts])
  return index, correct


def cross_check(aux, result: EvalResult, split: str) -> CrossCheck:
  """Compares `result.correct` with the correctness recorded in `aux`.

  Examples are matched by canonical index. Raises CrossCheckError (a
  ValueError) when the two do not cover the same examples.
  """
  index, recorded = recorded_correctness(aux, split)
  order = np.argsort(index, kind="stable")
  index, recorded = index[order], recorded[order]
  mine_order = np.argsort(result.index, kind="stable")
  mine_index = result.index[mine_order]
  mine = result.correct[mine_order]
  if len(index) != len(mine_index) or np.any(index != mine_index):
    raise CrossCheckError(
        f"aux_arrays {split!r} covers {len(index)} examples (indices "
        f"{_span(index)}) but the evaluation covers {len(mine_index)} "
        f"(indices {_span(mine_index)}): wrong dataset or split?")
  differ = mine != recorded
  return CrossCheck(split, int(len(index) - differ.sum()), int(len(index)),
                    index[differ])


def _span(index):
  return f"{index.min()}..{index.max()}" if len(index) else "none"
