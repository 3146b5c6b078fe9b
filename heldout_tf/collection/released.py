"""The publicly released held-out training experiments and their archives.

The experiments themselves are in the one registry, `heldout_tf.collection.experiments`
(`EXPERIMENTS` here is its released part). `download_instructions` is what a
command prints when runs are not on disk.
"""

import shlex
from typing import Optional, Sequence

from heldout_tf.collection import experiments
from heldout_tf.collection import layout

Experiment = experiments.Experiment
GS_PREFIX = experiments.GS_PREFIX
HTTPS_PREFIX = experiments.HTTPS_PREFIX
EXPERIMENTS = experiments.RELEASED


def get(name: str) -> Experiment:
  """The released experiment called `name`; a UsageError (a ValueError)
  listing them otherwise."""
  return experiments.get(name, released_only=True)


def download_instructions(experiment: str, root: str, ratio=0.7,
                          run_ids: Optional[Sequence[int]] = (0,)) -> str:
  """Human-readable commands that fetch `experiment` into `root`.

  The first fetches the runs `run_ids` (None: all) at `ratio` with the kit;
  every line can be pasted as printed, also when `root` does not exist yet.
  """
  e = get(experiment)
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
