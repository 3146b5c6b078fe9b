"""Data: every source a collection trains on, and the released runs'
evaluation pipelines.

  image_data  `ImageData` (uint8 images, labels), the stage's errors
              (`DataError`, `DatasetNotFoundError`), array and npz checks,
              cuts, `as_float`
  sources     `load(source)`: a tfds name, npz:FILE, mnist or digits as
              one `ImageData`
  tfds        the one tfds reader: the name / features.json guard, a
              split's arrays, a prepared builder, class names
  mnist       tfds MNIST or the embedded offline digits
  noise       seeded noise for a training set, recorded
  pipelines   the released runs' evaluation `Dataset`s (CIFAR, ImageNet)
              and the one in-memory evaluation split (`array_split`)
  imagenet    ImageNet: indexed TFRecords or tfds imagenet2012 with an
              index map, the evaluation image
  order       the tfds <-> original CIFAR order, cached
"""
