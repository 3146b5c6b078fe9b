"""Re-run evaluation of restored runs and cross-check it with aux_arrays.npz.

Evaluating many runs of one experiment reuses one model and one compiled
forward pass: only the variables change between runs (see
`heldout_tf.checkpoints.restore`).
"""

import dataclasses
import re
import weakref

import numpy as np
import tensorflow as tf
import tqdm

_COMPILED = weakref.WeakKeyDictionary()


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
    fn = tf.function(lambda images: model_ref()(images, is_training=False),
                     reduce_retracing=True)
    _COMPILED[model] = fn
  return fn


class DataError(ValueError):
  """Bad data met while reading a split: an undecodable image, an ImageNet
  file name missing from the index map."""


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


def evaluate(model, dataset, split: str, batch_size: int = 200,
             progress: bool = True) -> EvalResult:
  """Evaluates `model` on `split` of a `heldout_tf.data.Dataset`.

  Returns logits, labels and canonical indices in dataset order. Raises
  DataError (a ValueError) when the data cannot be read.
  """
  forward = compiled_forward(model)
  batches, num_examples = dataset.batches(split, batch_size)
  batches = batches.with_options(_eval_options())
  logits, labels, index = [], [], []
  with tqdm.tqdm(total=num_examples, unit="img", disable=not progress,
                 desc=f"evaluate {split}", leave=False) as bar:
    try:
      for batch in batches:
        logits.append(forward(batch["image"]).numpy())
        labels.append(batch["label"].numpy())
        index.append(batch["index"].numpy())
        bar.update(len(index[-1]))
    except tf.errors.InvalidArgumentError as e:
      raise DataError(f"{op_error_message(e)} (reading {dataset.name} "
                      f"{split})") from e
  if not logits:
    raise ValueError(f"Split {split!r} of {dataset.name} is empty")
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
    raise ValueError(f"split must be 'train' or 'test', got {split!r}")
  index = np.concatenate([np.asarray(aux[f"index_{p}"]) for p in parts])
  correct = np.concatenate(
      [np.asarray(aux[f"correctness_{p}"], bool) for p in parts])
  return index, correct


def cross_check(aux, result: EvalResult, split: str) -> CrossCheck:
  """Compares `result.correct` with the correctness recorded in `aux`.

  Examples are matched by canonical index. Raises ValueError when the two do
  not cover the same examples.
  """
  index, recorded = recorded_correctness(aux, split)
  order = np.argsort(index, kind="stable")
  index, recorded = index[order], recorded[order]
  mine_order = np.argsort(result.index, kind="stable")
  mine_index = result.index[mine_order]
  mine = result.correct[mine_order]
  if len(index) != len(mine_index) or np.any(index != mine_index):
    raise ValueError(
        f"aux_arrays {split!r} covers {len(index)} examples (indices "
        f"{_span(index)}) but the evaluation covers {len(mine_index)} "
        f"(indices {_span(mine_index)}): wrong dataset or split?")
  differ = mine != recorded
  return CrossCheck(split, int(len(index) - differ.sum()), int(len(index)),
                    index[differ])


def _span(index):
  return f"{index.min()}..{index.max()}" if len(index) else "none"
