"""What the MNIST pipelines share: their options, flags and data.

`MnistOptions` is `heldout_tf.collection.Options` plus the data flags
(--dataset, --data_dir, --train_size, --test_size); `mnist_example.train`
and `mnist_example.quality` extend it. No TensorFlow is imported here.
"""

import argparse
import dataclasses
import os
from typing import Optional

from heldout_tf import collection
from heldout_tf.collection import layout
from heldout_tf.collection import options as options_lib
from mnist_example import data as data_lib

EXPERIMENT = "mnist-mlp"
# The papers' MNIST setup (`--preset paper`): explicit flags override it.
PAPER_PRESET = dict(num_runs=2000, ratio=0.7, epochs=10, batch_size=128,
                    learning_rate=0.1, dataset="mnist")


@dataclasses.dataclass(frozen=True)
class MnistOptions(collection.Options):
  """A collection of MLPs on MNIST (or the embedded digits)."""
  root: str = "./heldout_mnist"
  dataset: str = "auto"
  data_dir: Optional[str] = None
  train_size: int = 0  # 0: the whole split.
  test_size: int = 0

  def check(self):
    super().check()
    need = options_lib.need
    need(self.dataset in data_lib.DATASETS, "dataset",
         f"must be one of {data_lib.DATASETS}", self.dataset)
    need(self.train_size >= 0 and self.train_size != 1, "train_size",
         "must be 0 (all) or >= 2: a run must train on some examples and "
         "hold others out", self.train_size)
    need(self.test_size >= 0, "test_size", "must be >= 0 (0: all)",
         self.test_size)


def add_data_flags(parser: argparse.ArgumentParser, defaults: MnistOptions):
  parser.add_argument(
      "--dataset", choices=data_lib.DATASETS, default=defaults.dataset,
      help="'mnist' (tfds), 'digits' (the 5 000 embedded digits) or 'auto' "
      "(mnist if prepared locally, else digits).")
  parser.add_argument("--data_dir", default=defaults.data_dir,
                      metavar="DIR", help="tfds data directory holding mnist.")
  parser.add_argument("--train_size", type=int, default=defaults.train_size,
                      help="Use only the first N training examples (0: all).")
  parser.add_argument("--test_size", type=int, default=defaults.test_size,
                      help="Use only the first N test examples (0: all).")


def train_config(options: collection.Options, precision: str = "float32",
                 **overrides):
  """The `ensemble.TrainConfig` of `options`'s runs (imports TensorFlow)."""
  from heldout_tf.training import ensemble  # pylint: disable=g-import-not-at-top
  values = {f.name: getattr(options, f.name)
            for f in dataclasses.fields(options_lib.RunSettings)}
  values.update(overrides)
  return ensemble.TrainConfig(num_classes=data_lib.NUM_CLASSES,
                              precision=precision, **values)


def recorded_config(config, group_size: int, data, **extra) -> dict:
  """What every run of one `<root>/mnist-mlp/<ratio>` shares: the train
  config, G, the data's name, sizes and fingerprint, and `extra`."""
  recorded = dataclasses.asdict(config)
  recorded["hidden"] = list(recorded["hidden"])
  recorded.update(group_size=group_size, dataset=data.name,
                  train_size=len(data.train_labels),
                  test_size=len(data.test_labels), **extra)
  return recorded


def write_report(options, experiment: str, directory: str, data,
                 estimates_path=None, scores_path=None) -> str:
  """Writes `<directory>/report.html` (`heldout_tf.report`) of the
  collection `options.root`/`experiment` at `options.ratio`, with `data`'s
  images (no reload); returns its path."""
  from heldout_tf import report  # pylint: disable=g-import-not-at-top
  images = report.Images(
      data.train_images, data.test_images, data.description,
      [str(c) for c in range(data_lib.NUM_CLASSES)], data.train_labels,
      data.test_labels)
  return report.write(
      options.root, experiment,
      os.path.join(directory, layout.REPORT_FILENAME), ratio=options.ratio,
      estimates=estimates_path, scores=scores_path,
      data_dir=options.data_dir, progress=options.progress,
      images=images).path
