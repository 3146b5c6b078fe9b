"""Models per hour at CIFAR shape: the kit's trainer vs a plain Keras `fit`.

For ResNet-9 (recipe 'resnet9', batch 512) and SmallInception (recipe
'released', batch 128), on random 32x32x3 images in one process:

- kit: `heldout_tf.training.trainer.RunTrainer` (the group engine's trainer:
  one compiled step per run, data on the device, per-step learning rate,
  stateless seeded augmentation), in each requested precision, timed with
  and without the recipe's augmentation;
- plain Keras: the same architecture written with `tf.keras.layers`,
  `model.compile(SGD(momentum, nesterov))` and `model.fit` on NumPy arrays
  at the same batch size, no augmentation (what one typically writes for
  one model).

Each method is warmed up (tracing excluded), then `--steps` training steps
are timed. Models per hour project the full recipe (ratio 0.7 of 50 000
training images, the recipe's epochs) plus evaluating every model on the
60 000 train and test images (measured too). The ratio kit / Keras is
printed per model; the load average is printed first and last, since other
processes make the figures noisy.

  python benchmarks/train_models.py
  python benchmarks/train_models.py --steps 2 --models resnet9 --width 0.5
"""

import argparse
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

if __name__ == "__main__":
  from heldout_tf import cli  # pylint: disable=g-import-not-at-top
  cli.quiet_tensorflow()

# pylint: disable=g-import-not-at-top,g-bad-import-order
import numpy as np
import tensorflow as tf

from heldout_tf.data import image_data
from heldout_tf.training import recipes
from heldout_tf.training import settings as settings_lib
from heldout_tf.training import trainer as trainer_lib
# pylint: enable=g-import-not-at-top,g-bad-import-order

CIFAR = dict(n_train=50_000, n_test=10_000, ratio=0.7)
RECIPE_OF = {"resnet9": "resnet9", "small_inception": "released"}


def keras_resnet9(num_classes, width):
  """ResNet-9 as `models.ResNet9`, in Keras layers."""
  layers = tf.keras.layers
  ch = lambda c: max(1, int(round(c * width)))

  def cbr(x, c):
    x = layers.Conv2D(c, 3, padding="same", use_bias=False)(x)
    return layers.ReLU()(layers.BatchNormalization(momentum=0.9)(x))

  def res(x, c):
    return layers.Add()([x, cbr(cbr(x, c), c)])

  inputs = tf.keras.Input((32, 32, 3))
  x = cbr(inputs, ch(64))
  x = res(layers.MaxPool2D()(cbr(x, ch(128))), ch(128))
  x = layers.MaxPool2D()(cbr(x, ch(256)))
  x = res(layers.MaxPool2D()(cbr(x, ch(512))), ch(512))
  x = layers.GlobalMaxPool2D()(x)
  x = layers.Dense(num_classes, use_bias=False)(x)
  return tf.keras.Model(inputs, layers.Rescaling(0.125)(x))


def keras_small_inception(num_classes):
  """SmallInception as `models.SmallInception`, in Keras layers."""
  layers = tf.keras.layers

  def cbr(x, c, k, stride=1):
    x = layers.Conv2D(c, k, stride, padding="same", use_bias=False)(x)
    return layers.ReLU()(layers.BatchNormalization(momentum=0.99)(x))

  def stage(x, blocks, down):
    for c1, c3 in blocks:
      x = layers.Concatenate()([cbr(x, c1, 1), cbr(x, c3, 3)])
    return cbr(x, down, 3, 2) if down else x

  inputs = tf.keras.Input((32, 32, 3))
  x = cbr(inputs, 96, 3)
  x = stage(x, [(32, 32), (32, 48)], 160)
  x = stage(x, [(112, 48), (96, 64), (80, 80), (48, 96)], 240)
  x = stage(x, [(176, 160), (176, 160)], None)
  x = layers.Dense(num_classes)(layers.GlobalMaxPool2D()(x))
  return tf.keras.Model(inputs, x)


def random_data(n_train, n_test, seed=0):
  rng = np.random.default_rng(seed)
  return image_data.ImageData(
      "random", "random 32x32x3",
      rng.integers(0, 256, (n_train, 32, 32, 3), dtype=np.uint8),
      rng.integers(0, 10, n_train), rng.integers(
          0, 256, (n_test, 32, 32, 3), dtype=np.uint8),
      rng.integers(0, 10, n_test), 10)


def time_kit(name, recipe, data, precision, width, steps):
  """Seconds per training step and per evaluated image of the kit."""
  options = {"width": width} if name == "resnet9" else {}
  settings = settings_lib.TrainSettings(recipe, name, CIFAR["ratio"],
                                        precision=precision,
                                        model_options=options)
  trainer = trainer_lib.RunTrainer(settings, data)
  b = recipe.batch_size
  idx = [tf.constant(np.arange(i * b, (i + 1) * b, dtype=np.int32)
                     % len(data.train_labels)) for i in range(steps)]
  seed = tf.constant([1, 2], tf.int64)
  trainer.compiled_step(idx[0], tf.constant(0.01), seed)
  start = time.perf_counter()
  for i in idx:
    loss = trainer.compiled_step(i, tf.constant(0.01), seed)
  loss.numpy()
  per_step = (time.perf_counter() - start) / steps
  trainer.correctness(split="test")  # Warm-up (traces the forward pass).
  start = time.perf_counter()
  trainer.correctness(split="test")
  per_image = (time.perf_counter() - start) / len(data.test_labels)
  return per_step, per_image


def time_keras(name, recipe, data, width, steps):
  model = (keras_resnet9(10, width) if name == "resnet9"
           else keras_small_inception(10))
  model.compile(optimizer=tf.keras.optimizers.SGD(
      0.01, momentum=recipe.momentum, nesterov=recipe.nesterov),
                loss=tf.keras.losses.SparseCategoricalCrossentropy(
                    from_logits=True))
  b = recipe.batch_size
  x = image_data.as_float(data.train_images[:b])
  y = data.train_labels[:b]
  model.fit(x, y, batch_size=b, epochs=1, verbose=0)  # Warm-up.
  xs = np.concatenate([x] * steps)
  ys = np.concatenate([y] * steps)
  start = time.perf_counter()
  model.fit(xs, ys, batch_size=b, epochs=1, verbose=0, shuffle=False)
  return (time.perf_counter() - start) / steps


def project(recipe, per_step, per_image):
  """Seconds per model of the full recipe at CIFAR size, models per hour."""
  subset = int(round(CIFAR["ratio"] * CIFAR["n_train"]))
  steps = recipe.epochs * math.ceil(subset / recipe.batch_size)
  seconds = steps * per_step + (CIFAR["n_train"] + CIFAR["n_test"]) * per_image
  return seconds, 3600.0 / seconds


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--models", default="resnet9,small_inception")
  parser.add_argument("--precisions", default="float32,bfloat16")
  parser.add_argument("--steps", type=int, default=3)
  parser.add_argument("--width", type=float, default=1.0,
                      help="ResNet-9 width multiplier (1.0: the recipe's)")
  parser.add_argument("--n_test", type=int, default=400,
                      help="images the evaluation rate is measured on")
  args = parser.parse_args()
  print(f"load average at start: {os.getloadavg()}")
  print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPUs, GPUs: "
        f"{len(tf.config.list_physical_devices('GPU'))}")
  rows = []
  for name in args.models.split(","):
    recipe = recipes.get(RECIPE_OF[name])
    data = random_data(max(recipe.batch_size * args.steps, 64), args.n_test)
    plain = recipe.replace(flip=False, translate=0, cutout=0)
    keras = time_keras(name, plain, data, args.width, args.steps)
    k_seconds, k_rate = project(plain, keras, 0.0)
    rows.append((name, "keras fit, float32, no augmentation", keras,
                 None, k_seconds, k_rate, 1.0))
    for precision in args.precisions.split(","):
      for label, r in (("no augmentation", plain), ("recipe", recipe)):
        per_step, per_image = time_kit(name, r, data, precision, args.width,
                                       args.steps)
        seconds, rate = project(r, per_step, per_image)
        rows.append((name, f"kit, {precision}, {label}", per_step, per_image,
                     seconds, rate, keras / per_step))
  print()
  print("| model | method | s/step | ms/eval image | s/model (projected) | "
        "models/h | step speed vs keras |")
  print("|---|---|---|---|---|---|---|")
  for name, method, step, image, seconds, rate, ratio in rows:
    image = "-" if image is None else f"{1000 * image:.2f}"
    print(f"| {name} | {method} | {step:.3f} | {image} | {seconds:,.0f} | "
          f"{rate:.2f} | {ratio:.2f}x |")
  print(f"\n(width {args.width}, {args.steps} timed steps; projection: "
        "ratio 0.7 of 50 000, recipe epochs, evaluation of 60 000 images; "
        "the keras row's projection omits evaluation)")
  print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
  main()
