"""Registry of the publicly released held-out training experiments."""

import dataclasses
import shlex

from heldout_tf import errors

GS_PREFIX = "gs://gresearch/heldout-training-checkpoints"
HTTPS_PREFIX = "https://storage.googleapis.com/gresearch/heldout-training-checkpoints"


@dataclasses.dataclass(frozen=True)
class Experiment:
  """One released collection of subset-trained models."""
  name: str
  arch: str
  num_classes: int
  dataset: str  # tfds name:version, or 'imagenet' (user-built TFRecords).
  md5: str
  approx_size: str

  @property
  def archive(self) -> str:
    return f"{self.name}.tar.gz"

  @property
  def gs_url(self) -> str:
    return f"{GS_PREFIX}/{self.archive}"

  @property
  def https_url(self) -> str:
    return f"{HTTPS_PREFIX}/{self.archive}"


EXPERIMENTS = {
    e.name: e for e in [
        Experiment("cifar10-inception", "inception", 10, "cifar10:3.0.2",
                   "bc3b75203381709f8224810946be14b1", "239 GB"),
        Experiment("cifar100-inception", "inception", 100, "cifar100:3.0.2",
                   "f87218368528afa6e2407c8410f1ffa1", "244 GB"),
        Experiment("imagenet-resnet50", "resnet50", 1000, "imagenet",
                   "64c39ef7702462b83959af9de622b4b8", "367 GB"),
    ]
}


def get(name: str) -> Experiment:
  """Returns the experiment called `name`, or raises a UsageError (a
  ValueError) listing them."""
  try:
    return EXPERIMENTS[name]
  except KeyError:
    raise errors.UsageError(f"Unknown experiment {name!r}; known: "
                            f"{', '.join(sorted(EXPERIMENTS))}") from None


def download_instructions(experiment: str, dest: str) -> str:
  """Human-readable commands that fetch `experiment` into `dest`.

  Every command works as printed, also when `dest` does not exist yet.
  """
  e = get(experiment)
  quoted = shlex.quote(dest)
  return "\n".join([
      f"The {e.name} runs come in one archive ({e.archive}, ~{e.approx_size}).",
      "Fetch only what you need with the kit (streams, verifies MD5, resumes):",
      f"  python -m heldout_tf.download --experiment {e.name} --dest {quoted}"
      " [--ratios 0.7 --runs 0 --only all|aux|checkpoints]",
      "or download the whole archive and extract it yourself:",
      f"  gsutil cp {e.gs_url} .",
      f"  curl -C - -O {e.https_url}",
      f"  echo '{e.md5}  {e.archive}' | md5sum -c",
      f"  mkdir -p {quoted} && tar xzf {e.archive} -C {quoted}",
  ])
