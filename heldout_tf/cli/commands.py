"""`heldout`: the kit's commands under one name (the console entry point).

  heldout download --experiment cifar10-inception --root DIR --runs 0
  heldout evaluate --experiment cifar10-inception --root DIR
  heldout estimate --root DIR --experiment cifar10-inception --out e.npz
  heldout <command> --help

`heldout X` runs the same as `python -m <module of X>` (see `COMMANDS`);
the module is imported only when its command runs, so `heldout --help` is
instant and a command whose module is missing fails alone, saying so.
"""

import sys
from typing import Optional, Sequence

from heldout_tf import cli

PROG = "heldout"
# Command -> (module, what it does). Each module has `build_parser()` and
# `main(argv)`.
COMMANDS = {
    "download": ("heldout_tf.cli.download",
                 "stream a released archive, verify it, extract runs"),
    "evaluate": ("heldout_tf.cli.evaluate",
                 "re-evaluate runs and cross-check aux_arrays.npz"),
    "estimate": ("heldout_tf.cli.estimate",
                 "memorization, influence and C-scores of a collection"),
    "datamodels": ("heldout_tf.cli.datamodels",
                   "linear datamodels of a collection's margins"),
    "lds": ("heldout_tf.cli.lds",
            "judge attributions: the linear datamodeling score"),
    "export": ("heldout_tf.cli.export",
               "a run's model as ONNX, safetensors or npz"),
    "train": ("heldout_tf.cli.train",
              "make a collection of subset-trained runs"),
    "quality": ("heldout_tf.cli.quality",
                "data-quality scores from a collection"),
    "report": ("heldout_tf.cli.report", "a browsable report of a collection"),
}


def usage() -> str:
  """`heldout --help`: the commands and their modules."""
  width = max(map(len, COMMANDS))
  lines = [f"usage: {PROG} <command> [flags]   ({PROG} <command> --help "
           "for its flags)", "", "commands:"]
  lines += [f"  {name:<{width}}  {what}\n  {'':<{width}}  (python -m "
            f"{module})" for name, (module, what) in COMMANDS.items()]
  return "\n".join(lines)


def load(command: str):
  """The module of `command`; a `UsageError` for an unknown command or a
  command whose module is not installed."""
  from heldout_tf.core import errors  # pylint: disable=g-import-not-at-top
  if command not in COMMANDS:
    raise errors.UsageError(f"unknown command {command!r}; commands: "
                            f"{', '.join(COMMANDS)}")
  module = COMMANDS[command][0]
  try:
    return cli.command_module(module)
  except ModuleNotFoundError as e:
    if e.name is None or not module.startswith(e.name):
      raise  # A missing dependency inside the module: a real error.
    raise errors.UsageError(
        f"command {command!r} is not available: its module {module} is not "
        "in this installation") from None


def main(argv: Optional[Sequence[str]] = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  if not argv or argv[0] in ("-h", "--help"):
    print(usage(), file=sys.stdout if argv else sys.stderr)
    return 0 if argv else cli.USAGE_EXIT
  module = load(argv[0])
  return module.main(argv[1:])


def entry_point():
  """The `heldout` console script (setup.py)."""
  cli.run(main)


if __name__ == "__main__":
  entry_point()
