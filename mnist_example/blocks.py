"""The block trainer of `mnist_example.train` (`heldout_tf.collection`'s
protocol): what a process (the driver's or a Ray worker's) trains blocks
with. Imports TensorFlow; the command lines import it after parsing.
"""

from heldout_tf.core import errors
from heldout_tf.training import ensemble
from mnist_example import common


class TrainBlocks(ensemble.EnsembleBlocks):
  """`mnist_example.train`'s runs: MLP ensembles on the pipeline's data.

  Built from small picklable values; the data is loaded on the first block
  (in a Ray worker: from the worker's own --data_dir) and must have the
  driver's `fingerprint`.
  """

  def __init__(self, options, precision: str, group_size: int,
               fingerprint: str, data=None):
    super().__init__(common.train_config(options, precision), group_size,
                     options.save_checkpoints, data=data)
    self.options = options
    self.fingerprint = fingerprint

  def read_data(self):
    from mnist_example import train  # pylint: disable=g-import-not-at-top
    data = train.load_data(self.options)
    return data, train.data_fingerprint(data)

  def load_data(self):
    data, fingerprint = self.read_data()
    if fingerprint != self.fingerprint:
      raise errors.ConfigError(
          f"this process loaded other {data.name} data than the driver: "
          "every node needs the same --data_dir contents")
    return data
