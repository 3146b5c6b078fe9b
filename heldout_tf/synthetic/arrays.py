"""Small image-classification `.npz` files a model learns in a few steps.

  path = synthetic.brightness_npz("d.npz", n_train=40, n_test=16, classes=3)

8x8x1 uint8 images whose brightness gives the class (noise in [0, 60)
plus 60 x label), in the `npz:FILE` layout `heldout train` reads
(`x_train`, `y_train`, `x_test`, `y_test`). No TensorFlow.
"""

import numpy as np


def brightness_npz(path, n_train: int, n_test: int, classes: int,
                   seed: int = 0) -> str:
  """Writes the file at `path` (labels drawn with `seed`); returns it."""
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, classes, n_train + n_test)
  images = (rng.integers(0, 60, (n_train + n_test, 8, 8, 1))
            + 60 * labels[:, None, None, None]).astype(np.uint8)
  np.savez(path, x_train=images[:n_train], y_train=labels[:n_train],
           x_test=images[n_train:], y_test=labels[n_train:])
  return str(path)
