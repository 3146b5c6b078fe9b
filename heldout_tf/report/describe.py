"""What a report's provenance section says about a collection: its dataset
and model (from config.json, else the released experiment's), the runs'
test accuracy, the recorded settings and the number of classes.

Everything here is text shown on the page: a recorded model that names a
user module ('pkg.mod:fn') is only shown, never imported.
"""

from typing import Dict, List, Optional, Tuple

import numpy as np

from heldout_tf.collection import experiments
from heldout_tf.report import inputs


def _model(config: dict) -> Optional[str]:
  """The model config.json records: `model` (`heldout train`, `heldout
  quality`) with its `model_options`, or `mnist_example.train`'s `hidden`
  layers, or `arch`; None when it records none."""
  model = config.get("model")
  if isinstance(model, str) and model:
    options = config.get("model_options")
    if isinstance(options, dict) and options:
      shown = ", ".join(f"{k}={v}" for k, v in sorted(options.items()))
      return f"{model} ({shown})"
    return model
  hidden = config.get("hidden")
  if isinstance(hidden, list) and hidden:
    return f"MLP, hidden layers {'-'.join(map(str, hidden))}"
  arch = config.get("arch")
  return str(arch) if arch else None


def dataset_and_model(experiment: str,
                      config: Optional[dict]) -> Tuple[str, str]:
  """`(dataset, model)` as the page names them ('unknown' when neither
  config.json nor the released experiments say)."""
  config = config or {}
  dataset, model = config.get("dataset"), _model(config)
  if experiment in experiments.RELEASED:
    e = experiments.RELEASED[experiment]
    dataset, model = dataset or e.dataset, model or e.arch
  return str(dataset or "unknown"), model or "unknown"


def num_classes(experiment: str, config: Optional[dict], labels,
                where: str = "config.json") -> int:
  """Classes: config.json's (at `where`) `num_classes`, the released
  experiment's, or 1 + the largest label (0 without labels)."""
  if config and "num_classes" in config:
    value = config["num_classes"]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
      raise inputs.ReportInputError(
          f"{where}: num_classes must be a whole number >= 0, got "
          f"{str(value)[:40]!r}")
    return value
  if experiment in experiments.RELEASED:
    return experiments.RELEASED[experiment].num_classes
  return int(labels.max()) + 1 if labels is not None and len(labels) else 0


def accuracy(runs) -> List[dict]:
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


def settings(config: Optional[dict]) -> Dict[str, str]:
  """config.json's settings as text, by name."""
  if not config:
    return {}
  return {k: (v if isinstance(v, str) else repr(v) if not isinstance(
      v, (list, dict)) else str(v)) for k, v in sorted(config.items())}
