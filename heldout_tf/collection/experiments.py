"""The one registry of experiments: the three released and the kit's own.

  exp = experiments.get("cifar10-inception")
  exp.arch, exp.num_classes, exp.input_shape   # 'small_inception', 10, (32, 32, 3)
  exp.dataset, exp.dataset_name                # 'cifar10:3.0.2', 'cifar10'
  exp.archive, exp.md5                         # released runs only

An experiment is a collection of runs of one model on one dataset, stored as
`<root>/<experiment>/<ratio>/<run>/`. The archive stage (downloads),
`exports` (the model an export holds) and `published` (which dataset a
score file belongs to) all read this table; `download_instructions` is
what a command prints when released runs are not on disk. Imports no
TensorFlow.
"""

import dataclasses
import shlex
from typing import Dict, Optional, Sequence, Tuple

from heldout_tf.collection import layout
from heldout_tf.core import errors

GS_PREFIX = "gs://gresearch/heldout-training-checkpoints"
HTTPS_PREFIX = ("https://storage.googleapis.com/gresearch/"
                "heldout-training-checkpoints")

CIFAR_PREPROCESSING = ("uint8 RGB image / 255.0, values in [0, 1]; no "
                       "mean/std normalisation")
IMAGENET_PREPROCESSING = (
    "decode RGB, centre crop of side 224/256 * min(height, width), bicubic "
    "resize to 224x224, / 255.0, then (x - mean) / std with mean "
    "[0.485, 0.456, 0.406], std [0.229, 0.224, 0.225]")
MNIST_PREPROCESSING = ("uint8 28x28 grey image / 255.0, values in [0, 1], "
                       "flattened row-major to 784")


@dataclasses.dataclass(frozen=True)
class Experiment:
  """One collection of subset-trained models of one architecture.

  Attributes:
    name: the `<experiment>` directory name.
    arch: the model's name (`heldout_tf.models.build_model`).
    num_classes: classes of the dataset (logits per example).
    dataset: tfds `name:version`, 'imagenet' (user-built TFRecords) or
      'synthetic' (offline stand-ins).
    input_shape: per-example input of the model, (H, W, C).
    preprocessing: how an image becomes the model's input, in words.
    md5: MD5 (hex) of the released archive; None for the kit's own.
    approx_size: size of the released archive, e.g. '239 GB'; None for the
      kit's own.
  """
  name: str
  arch: str
  num_classes: int
  dataset: str
  input_shape: Tuple[int, ...] = (32, 32, 3)
  preprocessing: str = CIFAR_PREPROCESSING
  md5: Optional[str] = None
  approx_size: Optional[str] = None

  @property
  def released(self) -> bool:
    """Whether the runs come from a released archive."""
    return self.md5 is not None

  @property
  def dataset_name(self) -> str:
    """The dataset without its version: 'cifar10', 'imagenet', 'mnist'."""
    return self.dataset.split(":")[0]

  @property
  def archive(self) -> str:
    return f"{self.name}.tar.gz"

  @property
  def gs_url(self) -> str:
    return f"{GS_PREFIX}/{self.archive}"

  @property
  def https_url(self) -> str:
    return f"{HTTPS_PREFIX}/{self.archive}"


EXPERIMENTS: Dict[str, Experiment] = {
    e.name: e for e in [
        Experiment("cifar10-inception", "small_inception", 10, "cifar10:3.0.2",
                   md5="bc3b75203381709f8224810946be14b1",
                   approx_size="239 GB"),
        Experiment("cifar100-inception", "small_inception", 100, "cifar100:3.0.2",
                   md5="f87218368528afa6e2407c8410f1ffa1",
                   approx_size="244 GB"),
        Experiment("imagenet-resnet50", "resnet50", 1000, "imagenet",
                   input_shape=(224, 224, 3),
                   preprocessing=IMAGENET_PREPROCESSING,
                   md5="64c39ef7702462b83959af9de622b4b8",
                   approx_size="367 GB"),
        # The kit's own: `python -m mnist_example.train` makes it.
        Experiment("mnist-mlp", "mlp", 10, "mnist", input_shape=(28, 28, 1),
                   preprocessing=MNIST_PREPROCESSING),
    ]
}

RELEASED: Dict[str, Experiment] = {
    name: e for name, e in EXPERIMENTS.items() if e.released}


def get(name: str, released_only: bool = False,
        flag: str = "--experiment") -> Experiment:
  """The experiment called `name`; a `UsageError` naming `flag` and the
  known names otherwise (only released ones with `released_only`)."""
  table = RELEASED if released_only else EXPERIMENTS
  try:
    return table[name]
  except KeyError:
    raise errors.UsageError(f"{flag} {name!r} is unknown; known: "
                            f"{', '.join(sorted(table))}") from None


def download_instructions(experiment: str, root: str, ratio=0.7,
                          run_ids: Optional[Sequence[int]] = (0,)) -> str:
  """Human-readable commands that fetch `experiment` into `root`.

  The first fetches the runs `run_ids` (None: all) at `ratio` with the kit;
  every line can be pasted as printed, also when `root` does not exist yet.
  """
  e = get(experiment, released_only=True)
  quoted = shlex.quote(root)
  runs = "" if run_ids is None else " --runs " + ",".join(
      str(r) for r in run_ids)
  return "\n".join([
      f"The {e.name} runs come in one archive ({e.archive}, ~{e.approx_size}).",
      "Fetch only what you need with the kit (streams, verifies MD5, resumes):",
      f"  python -m heldout_tf.cli.download --experiment {e.name} --root {quoted} "
      f"--ratios {layout.format_ratio(ratio)}{runs}",
      "(`heldout download` is the same; --only aux or --only checkpoints "
      "fetch one part of each run)",
      "or download the whole archive and extract it yourself:",
      f"  gsutil cp {e.gs_url} .",
      f"  curl -C - -O {e.https_url}",
      f"  echo '{e.md5}  {e.archive}' | md5sum -c",
      f"  mkdir -p {quoted} && tar xzf {e.archive} -C {quoted}",
  ])
