"""Data provenance: where a collection's data comes from, and the one way
back from a recorded config to that data.

  source = provenance.DataSource("npz:/abs/my_data.npz", noise="label:0.1",
                                 seed=0)
  data, noisy = source.load_noisy()        # cut, noise applied
  config.update(source.recorded(data))     # what config.json keeps
  data, noisy = provenance.load_recorded(config, "config.json")

A collection records its source (`source`: a `--dataset` value that loads
the data again), the noise spec and seed that rebuild its noisy training
set, the cut (`train_size`, `test_size`) and the data's fingerprint
(`ImageData.fingerprint`); `load_recorded` rebuilds the data from them
and refuses data whose fingerprint differs. The data is known by its
fingerprint: `source` (and the dataset's name) say where the first call
found it, for later commands to find it again, and are not compared
(`collection.store.INFORMATION_KEYS`): the same bytes at another path
resume the collection, and a command whose recorded file moved takes
--dataset. Nothing a config names is imported: sources load through
`heldout_tf.data` only.
"""

import dataclasses
import os
from typing import Optional

from heldout_tf.core import errors
from heldout_tf.data import image_data
from heldout_tf.data import noise as noise_lib
from heldout_tf.data import sources


class ProvenanceError(errors.HeldoutError, ValueError):
  """A collection's recorded data cannot be loaded again (names the config
  and what to pass instead)."""


def absolute_source(dataset: str) -> str:
  """`--dataset` as recorded: `npz:FILE` made absolute (workers and later
  commands may run in another directory); other sources as given."""
  if dataset.startswith(sources.NPZ_PREFIX):
    return sources.NPZ_PREFIX + os.path.abspath(sources.npz_file(dataset))
  return dataset


@dataclasses.dataclass(frozen=True)
class DataSource:
  """Where a collection's data comes from (picklable; workers reload it).

  With `noise` (a `heldout_tf.data.noise` spec, e.g. 'label:0.1') the
  training set is the loaded one with that noise applied from `seed`: the
  same examples and values in every process.
  """
  dataset: str  # 'mnist', 'digits', 'npz:FILE' (absolute) or a tfds name.
  data_dir: Optional[str] = None
  download: bool = False
  noise: str = ""
  seed: int = 0
  train_size: int = 0  # Only the first N training examples (0: all).
  test_size: int = 0

  def load(self):
    """The `image_data.ImageData` the runs train on (cut, noise applied)."""
    return self.load_noisy()[0]

  def load_noisy(self):
    """`(data, noisy)`: the data, cut to its first `train_size` /
    `test_size` examples, with the noise applied, and the
    `noise.NoisyTrainSet` saying what it changed (None without noise)."""
    data = image_data.first_examples(
        sources.load(self.dataset, self.data_dir, self.download),
        self.train_size, self.test_size)
    specs = noise_lib.parse(self.noise)
    if not specs:
      return data, None
    return noise_lib.apply_to_images(data, specs, self.seed)

  def recorded(self, data) -> dict:
    """What a collection's config.json records of its data: the source,
    the dataset's name, sizes, classes, image shape, fingerprint, and the
    noise and cut when there are any."""
    config = dict(dataset=data.name, source=self.dataset,
                  num_classes=data.num_classes,
                  image_shape=list(data.image_shape),
                  n_train=len(data.train_labels),
                  n_test=len(data.test_labels),
                  data_fingerprint=data.fingerprint())
    if self.noise:  # Rebuilt from (source, noise, seed); fingerprinted.
      config["noise"] = self.noise
    for key in ("train_size", "test_size"):  # The cut, when there is one.
      if getattr(self, key):
        config[key] = getattr(self, key)
    return config


def recorded_dataset(config: dict, where: str) -> str:
  """The `--dataset` value that loads the data config.json names: the
  recorded source (`heldout train` records it), else the dataset's name
  (mnist, digits and tfds names; a `.npz` file's bare name cannot be found
  again)."""
  if isinstance(config.get("source"), str) and config["source"]:
    return config["source"]
  name = config.get("dataset")
  if not isinstance(name, str) or not name:
    raise ProvenanceError(f"{where}: no 'dataset' recorded; pass --dataset")
  return name


def source_of(config: dict, where: str, dataset: str = "",
              data_dir: Optional[str] = None) -> DataSource:
  """The `DataSource` config.json (at `where`) records; `dataset`, when
  given, replaces the recorded source (e.g. a moved npz file)."""
  return DataSource(
      dataset or recorded_dataset(config, where), data_dir, False,
      str(config.get("noise", "")), int(config.get("seed", 0)),
      int(config.get("train_size", 0)), int(config.get("test_size", 0)))


def load_recorded(config: dict, where: str, dataset: str = "",
                  data_dir: Optional[str] = None):
  """`(data, noisy)`: the data the runs were trained on, with the recorded
  noise rebuilt (`DataSource.load_noisy`), and the `noise.NoisyTrainSet`
  (None without noise).

  Raises:
    ProvenanceError: the recorded dataset cannot be loaded (pass
      --dataset);
    errors.ConfigError: the data's fingerprint differs from the recorded.
  """
  source = source_of(config, where, dataset, data_dir)
  try:
    data, noisy = source.load_noisy()
  except errors.UsageError:
    raise
  except errors.HeldoutError as e:
    if dataset:
      raise
    raise ProvenanceError(
        f"cannot load the dataset {source.dataset!r} recorded in {where} "
        f"({e}); pass --dataset (npz:FILE, a tfds name or mnist) and "
        "--data_dir") from None
  recorded = config.get("data_fingerprint")
  if recorded and data.fingerprint() != recorded:
    raise errors.ConfigError(
        f"--dataset {source.dataset}: not the data the runs in {where} "
        f"were trained on (fingerprint {data.fingerprint()}, recorded "
        f"{recorded}); pass the --dataset and --data_dir they were trained "
        "with")
  return data, noisy
