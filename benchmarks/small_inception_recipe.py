r"""Does the SmallInception `released` recipe train soundly? Variants side by
side, on the embedded digits and on a CIFAR-shaped version of them.

  python benchmarks/small_inception_recipe.py              # ~25 min, 2 CPUs
  python benchmarks/small_inception_recipe.py --epochs 2 --variants recipe
  python benchmarks/small_inception_recipe.py --quick       # a check that it runs

Trains one run (ratio 0.7) of `--model small_inception --recipe released
--epochs E` (the recipe's triangular schedule squeezed into E epochs) for
each variant on each data set, through `heldout_tf.training.workflow.make`
like `heldout train`, and prints its test accuracy (or the epoch at which
it diverged: the kit stops a run whose loss or weights become non-finite):

- `recipe`: the `released` recipe as it is (peak learning rate 0.01,
  batch-norm decay 0.9);
- `bn0.99`: batch-norm decay 0.99 (Sonnet's default, the recipe's earlier
  value);
- `lr0.1`: peak learning rate 0.1 (Zhang et al.'s CIFAR rate);
- `lr0.1+bn0.99`: both.

Data: the 4 000 / 1 000 embedded MNIST digits (28x28x1), and the same
digits made CIFAR-shaped (32x32x3: padded by 2, each image tinted by a
random colour on a random dark background, so the channels differ).
Nothing is downloaded.
"""

import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top
from heldout_tf.collection import runs as runs_lib
from heldout_tf.data import mnist
from heldout_tf.training import steps
from heldout_tf.training import workflow
# pylint: enable=g-import-not-at-top

VARIANTS = {
    "recipe": {},
    "bn0.99": {"model_options": (("bn_decay", 0.99),)},
    "lr0.1": {"learning_rate": 0.1},
    "lr0.1+bn0.99": {"learning_rate": 0.1,
                     "model_options": (("bn_decay", 0.99),)},
}


def cifar_shaped(path: str, limit: int = 0):
  """The embedded digits as 32x32x3 colour images, written to `path`."""
  digits = mnist.load("digits")
  rng = np.random.default_rng(0)
  arrays = {}
  for split in ("train", "test"):
    images = getattr(digits, f"{split}_images")
    labels = getattr(digits, f"{split}_labels")
    if limit:
      images, labels = images[:limit], labels[:limit]
    grey = np.pad(images[..., 0], ((0, 0), (2, 2), (2, 2))).astype(np.float32)
    grey = grey[..., None] / 255.0
    colour = rng.uniform(0.4, 1.0, size=(len(labels), 1, 1, 3))
    ground = rng.uniform(0.0, 0.3, size=(len(labels), 1, 1, 3))
    rgb = ground * (1 - grey) + colour * grey
    arrays[f"x_{split}"] = np.round(rgb * 255).astype(np.uint8)
    arrays[f"y_{split}"] = labels.astype(np.int64)
  np.savez(path, **arrays)


def train_one(dataset: str, variant: str, epochs: int, root: str,
              sizes) -> str:
  """Test accuracy of one run, or where it diverged."""
  options = workflow.Options(
      dataset=dataset, model="small_inception", recipe="released",
      epochs=epochs, ratios=(0.7,), num_runs=(1,), root=root,
      experiment=f"e-{variant}".replace("+", "-"), precision="float32",
      trainer="group", save_checkpoints=False, progress=False,
      train_size=sizes[0], test_size=sizes[1], **VARIANTS[variant])
  start = time.perf_counter()
  try:
    workflow.make(options, say=lambda *_: None)
  except steps.DivergedError as e:
    return f"diverged ({str(e).splitlines()[0][:90]})"
  seconds = time.perf_counter() - start
  run = os.path.join(root, options.experiment, "0.7", "0")
  aux = runs_lib.read_aux(run)
  return (f"test accuracy {aux['correctness_test'].mean():.3f}, train "
          f"{aux['correctness_train'].mean():.3f} ({seconds:.0f} s)")


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--epochs", type=int, default=4)
  parser.add_argument("--variants", default=",".join(VARIANTS))
  parser.add_argument("--quick", action="store_true",
                      help="400 / 200 examples, 1 epoch.")
  args = parser.parse_args()
  variants = args.variants.split(",")
  for v in variants:
    if v not in VARIANTS:
      raise SystemExit(f"--variants: unknown {v!r} (known: "
                       f"{', '.join(VARIANTS)})")
  epochs = 1 if args.quick else args.epochs
  sizes = (400, 200) if args.quick else (0, 0)
  with tempfile.TemporaryDirectory() as tmp:
    rgb = os.path.join(tmp, "cifar_shaped.npz")
    cifar_shaped(rgb)
    for name, dataset in (("digits 28x28x1", "digits"),
                          ("CIFAR-shaped digits 32x32x3", "npz:" + rgb)):
      print(f"{name}, small_inception, released recipe, {epochs} epochs, "
            "ratio 0.7, float32:", flush=True)
      for variant in variants:
        root = os.path.join(tmp, "runs-" + dataset[:6].replace(":", ""))
        print(f"  {variant:14s} "
              f"{train_one(dataset, variant, epochs, root, sizes)}",
              flush=True)


if __name__ == "__main__":
  main()
