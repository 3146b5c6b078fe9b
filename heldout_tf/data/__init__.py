"""Data: every source a collection trains on, and the released runs'
evaluation pipelines.

  image_data  `ImageData` (uint8 images, labels), `DataError`, `load`
              (tfds names, npz:FILE, mnist, digits), checks and cuts
  mnist       tfds MNIST or the embedded offline digits
  noise       seeded noise for a training set, recorded
  pipelines   the released runs' input pipelines (CIFAR, ImageNet), the
              tfds loader and its checks, the tfds <-> original CIFAR order
"""
