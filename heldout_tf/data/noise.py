"""Seeded noise for a training set, recorded with the indices it touched.

Data-quality experiments (`heldout_tf.cli.quality`, `mnist_example.quality`)
make a training set with known noise, train a collection on it and measure
how well each score finds the noisy examples. Kinds (each applied to a
fraction of the training set, chosen by the seed):

  label            the label replaced by a uniformly chosen other class
                   (`flip_labels`; `--noise label:0.1` of every
                   command).
  label_pair       class c relabelled as the fixed class (c + 1) mod classes.
  input_gaussian   image mixed with Gaussian noise: clip((1 - s) x + s z,
                   0, 1), z ~ N(0.5, 0.5^2) per pixel, s the intensity
                   (x in [0, 1]; uint8 images as x = uint8 / 255, rounded
                   back to uint8).
  input_uniform    the same with z ~ U[0, 1].

Specs are strings `kind:fraction[@intensity]`, e.g. `label:0.1` or
`input_gaussian:0.1@0.5` (intensity in (0, 1], default 0.5, input kinds
only); several combine (a list, or comma-separated) and touch disjoint
examples. Fractions are of the whole training set and must sum below 1.
"""

import dataclasses
from typing import Dict, List, Sequence, Union

import numpy as np

from heldout_tf.core import errors
from heldout_tf.core import seeds

KINDS = ("label", "label_pair", "input_gaussian", "input_uniform")
INPUT_KINDS = ("input_gaussian", "input_uniform")
DEFAULT_INTENSITY = 0.5
# Each kind draws from its own stream of the seed (`heldout_tf.core.seeds`:
# label noise from `label_noise_rng`, the stream the MNIST reproduction's
# label noise has always used; the other kinds from
# `noise_rng(seed, KINDS.index(kind))`), so adding a kind never changes
# which examples another kind picks.


class NoiseSpecError(errors.UsageError):
  """A `--noise` spec is malformed (names the spec)."""


@dataclasses.dataclass(frozen=True)
class NoiseSpec:
  kind: str
  fraction: float
  intensity: float = 0.0  # Input kinds only.

  def __str__(self):
    if self.kind in INPUT_KINDS:
      return f"{self.kind}:{self.fraction:g}@{self.intensity:g}"
    return f"{self.kind}:{self.fraction:g}"


def _parse_one(text: str) -> NoiseSpec:
  where = f"--noise {text!r}"
  kind, sep, rest = text.strip().partition(":")
  if not sep:
    raise NoiseSpecError(f"{where}: expected kind:fraction[@intensity], "
                         "e.g. label:0.1 or input_gaussian:0.1@0.5")
  if kind not in KINDS:
    raise NoiseSpecError(f"{where}: unknown kind {kind!r}; choose from "
                         f"{', '.join(KINDS)}")
  fraction_text, at, intensity_text = rest.partition("@")
  if at and kind not in INPUT_KINDS:
    raise NoiseSpecError(f"{where}: only {' and '.join(INPUT_KINDS)} take "
                         "an @intensity")
  try:
    fraction = float(fraction_text)
    intensity = float(intensity_text) if at else (
        DEFAULT_INTENSITY if kind in INPUT_KINDS else 0.0)
  except ValueError:
    raise NoiseSpecError(f"{where}: fraction and intensity must be "
                         "numbers") from None
  if not 0.0 <= fraction < 1.0:
    raise NoiseSpecError(f"{where}: fraction must be in [0, 1), got "
                         f"{fraction_text}")
  if kind in INPUT_KINDS and not 0.0 < intensity <= 1.0:
    raise NoiseSpecError(f"{where}: intensity must be in (0, 1], got "
                         f"{intensity_text}")
  return NoiseSpec(kind, fraction, intensity)


def parse(specs: Union[str, Sequence[str]]) -> List[NoiseSpec]:
  """`'label:0.1,input_uniform:0.05@1'` or a list of such strings -> specs.

  Raises:
    NoiseSpecError: unknown kind, bad numbers, a kind given twice, or
      fractions summing to 1 or more.
  """
  if isinstance(specs, str):
    specs = [specs]
  parts = [p for s in specs for p in s.split(",") if p.strip()]
  parsed = [_parse_one(p) for p in parts]
  kinds = [s.kind for s in parsed]
  twice = sorted({k for k in kinds if kinds.count(k) > 1})
  if twice:
    raise NoiseSpecError(f"--noise: kind(s) {twice} given more than once")
  if sum(s.fraction for s in parsed) >= 1.0:
    raise NoiseSpecError(f"--noise {','.join(parts)!r}: fractions must sum "
                         "below 1")
  return parsed


def describe(specs: Sequence[NoiseSpec]) -> str:
  """The canonical spec string ('' for none)."""
  return ",".join(str(s) for s in specs)


@dataclasses.dataclass
class NoisyTrainSet:
  """A training set with noise applied, and what was changed."""
  images: np.ndarray        # [n, ...], the dtype given.
  labels: np.ndarray        # int64 [n]: the labels to train with.
  clean_labels: np.ndarray  # int64 [n]
  noisy_idx: np.ndarray     # int64 sorted: every touched example.
  by_kind: Dict[str, np.ndarray]  # kind -> its sorted indices.


def flip_labels(labels, fraction: float, seed: int, num_classes: int):
  """`(noisy_labels, noisy_idx)`: a seeded `round(fraction * n)` of the
  labels (int64 `[n]`) replaced by a uniformly chosen *other* class;
  `noisy_idx` sorted int64."""
  labels = np.asarray(labels, np.int64)
  rng = seeds.label_noise_rng(seed)
  count = int(round(fraction * len(labels)))
  noisy_idx = np.sort(rng.choice(len(labels), count, replace=False))
  noisy = labels.copy()
  noisy[noisy_idx] = (labels[noisy_idx] +
                      rng.integers(1, num_classes, count)) % num_classes
  return noisy, noisy_idx.astype(np.int64)


def _mix(images, idx, spec, rng):
  """The images at `idx` mixed with noise, in `images`' dtype (float in
  [0, 1], or uint8 as uint8 / 255 rounded back)."""
  x = images[idx]
  scale = 255.0 if images.dtype == np.uint8 else 1.0
  if spec.kind == "input_gaussian":
    z = rng.normal(0.5, 0.5, size=x.shape)
  else:
    z = rng.uniform(0.0, 1.0, size=x.shape)
  mixed = (1.0 - spec.intensity) * (x / scale) + spec.intensity * z
  mixed = np.clip(mixed, 0.0, 1.0) * scale
  if scale != 1.0:
    mixed = np.round(mixed)
  return mixed.astype(images.dtype)


def counts(specs: Sequence[NoiseSpec], n: int) -> Dict[str, int]:
  """Examples each kind touches among `n`: kind -> count, summing to <= n.

  `label` takes `round(fraction * n)`, as `flip_labels` does. The
  other kinds share what they jointly ask for, `round(sum of fractions *
  n)` (at most what `label` left): each gets the floor of its quota, and
  the examples left over go to the largest fractional parts (ties in
  `KINDS` order). Rounding each kind on its own could ask for more
  examples than exist.
  """
  count = {s.kind: 0 for s in specs}
  rest = [s for s in specs if s.kind != "label"]
  if "label" in count:
    label = next(s for s in specs if s.kind == "label")
    count["label"] = int(round(label.fraction * n))
  quotas = np.array([s.fraction * n for s in rest], np.float64)
  total = min(n - count.get("label", 0), int(round(quotas.sum())))
  floors = np.floor(quotas).astype(np.int64)
  order = sorted(range(len(rest)),
                 key=lambda i: (-(quotas[i] - floors[i]),
                                KINDS.index(rest[i].kind)))
  for i in order[:max(0, total - int(floors.sum()))]:
    floors[i] += 1
  for spec, c in zip(rest, floors):
    count[spec.kind] = int(c)
  return count


def apply(images, labels, specs: Sequence[NoiseSpec], seed: int,
          num_classes: int = 10) -> NoisyTrainSet:
  """Applies `specs` to copies of `images` and `labels`.

  Args:
    images: `[n, ...]`, float in [0, 1] or uint8.
    labels: int `[n]`, the clean labels in [0, num_classes).
    specs: what to apply (`parse`).
    seed: the noise's seed (the collection's).
    num_classes: label range of the `label` and `label_pair` kinds.

  `label` noise (if any) comes first, from `flip_labels(labels, fraction,
  seed, num_classes)`; every other kind draws `counts(specs, n)[kind]`
  examples, from its own seeded stream, among those not yet touched.
  """
  images = np.array(images, copy=True)
  clean = np.asarray(labels, np.int64)
  noisy_labels = clean.copy()
  n = len(clean)
  touched = np.zeros(n, bool)
  by_kind = {}
  count_of = counts(specs, n)
  for spec in sorted(specs, key=lambda s: KINDS.index(s.kind)):
    if spec.kind == "label":
      noisy_labels, idx = flip_labels(clean, spec.fraction, seed,
                                      num_classes)
    else:
      rng = seeds.noise_rng(seed, KINDS.index(spec.kind))
      free = np.flatnonzero(~touched)
      idx = np.sort(rng.choice(free, count_of[spec.kind], replace=False))
      if spec.kind == "label_pair":
        noisy_labels[idx] = (clean[idx] + 1) % num_classes
      else:
        images[idx] = _mix(images, idx, spec, rng)
    touched[idx] = True
    by_kind[spec.kind] = np.asarray(idx, np.int64)
  return NoisyTrainSet(images=images, labels=noisy_labels,
                       clean_labels=clean,
                       noisy_idx=np.flatnonzero(touched).astype(np.int64),
                       by_kind=by_kind)


def apply_to_images(data, specs: Sequence[NoiseSpec], seed: int):
  """`(noisy data, NoisyTrainSet)` for a `heldout_tf.data.image_data.ImageData`
  (or a copy with float32 images): its training images and labels with
  `specs` applied (uint8 images stay uint8, float32 float32); the
  `NoisyTrainSet` holds the clean labels and touched indices."""
  noisy = apply(data.train_images, data.train_labels, specs, seed,
                data.num_classes)
  text = describe(specs)
  data = dataclasses.replace(
      data, train_images=noisy.images, train_labels=noisy.labels,
      description=data.description + (f", noise {text}" if text else ""))
  return data, noisy
