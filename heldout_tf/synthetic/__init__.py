"""Offline stand-ins for the released data, runs and archives: the one
package tests and benchmarks build them with. Nothing here touches the
network.

  release   random CIFAR arrays, a tiny tfds CIFAR, runs in the released
            layout (checkpoint + aux_arrays.npz from the model itself)
  imagenet  random JPEGs as indexed TFRecords or a tiny tfds imagenet2012
  archives  small released-layout `.tar.gz` archives, hostile members
  servers   loopback HTTP (with faults) and GCS emulator, tree snapshots
  simulated collections with simulated correctness (no training)
  planted   collections whose margins are a planted linear function of
            the training mask (ground truth for attribution)
  fifo      calling a reader on a FIFO without hanging the test
  arrays    small npz image files a model learns in a few steps

Each name is importable from here (`synthetic.write_release_run`), loading
only its module: `archives`, `servers`, `simulated` and `planted` need no
TensorFlow, nor does `arrays`.
"""

from heldout_tf.core import lazy

__getattr__, __dir__, __all__ = lazy.front_door(__name__, {
    "release": ("CIFAR_SHAPE", "experiment", "random_cifar_arrays",
                "in_memory_dataset", "write_synthetic_cifar", "randomize",
                "predictions_correct", "write_release_run"),
    "imagenet": ("random_jpegs", "write_imagenet_records",
                 "write_imagenet_tfds"),
    "archives": ("EXPERIMENT", "aux_bytes", "layout_files", "tar_bytes",
                 "gzip_bytes", "write_archive", "sparse_member"),
    "servers": ("snapshot", "free_port", "FaultyServer", "gcs_emulator"),
    "simulated": ("SimulatedRun", "simulated_runs"),
    "planted": ("Planted", "planted_theta", "planted_collection"),
    "fifo": ("refusals",),
    "arrays": ("brightness_npz",),
})
